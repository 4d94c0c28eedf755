"""The CLI's edge: every command, given a bad flag, a bad value or a missing path, answers with one
line and no traceback; usage errors exit 2, an unexpected error exits 1 and names a log file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from modan_pacs.cli.main import app, main
from typer.testing import CliRunner

# Per command: (a bad value for a typed option, a missing input path); the other required
# parameters are given so that the bad part is what fails.
CASES: dict[str, tuple[list[str], list[str]]] = {
    "benchmark": (
        ["--dataset", "breast", "--init", "scratch", "--repeats", "abc"],
        ["--dataset", "breast", "--init", "scratch", "--data-dir", "{missing}", "--out", "{tmp}/o"],
    ),
    "cache": (["--out", "{tmp}/o", "--size", "abc"], ["--out", "{tmp}/o", "--index", "{missing}"]),
    "demo": (["--epochs", "abc"], ["--out", "{file}/sub"]),  # demo reads no input: an OUT that cannot exist
    "export": (["{tmp}", "--out"], ["{missing}", "--out", "{tmp}/o"]),  # a value-taking option without its value
    "index": (["--workers", "abc", "{tmp}"], ["{missing}", "--out", "{tmp}/o"]),
    "labels": (["{tmp}", "--vocab"], ["{missing}"]),  # no typed option: a value-taking option without its value
    "minirin": (["{tmp}", "--out", "{tmp}/o", "--per-class", "abc"], ["{missing}", "--out", "{tmp}/o"]),
    "pretrain": (["--out", "{tmp}/o", "--config"], ["--data", "{missing}", "--out", "{tmp}/o"]),
    "proxy-study": (["--epochs", "abc"], ["--data-dir", "{missing}", "--out", "{tmp}/o", "--quick"]),
    "pull": (
        ["--index", "{tmp}", "--out", "{tmp}/o", "--workers", "abc"],
        ["--index", "{missing}", "--out", "{tmp}/o"],
    ),
    "share": (
        ["--index", "{tmp}", "--cache", "{tmp}", "--out"],  # a value-taking option without its value
        ["--index", "{missing}", "--cache", "{tmp}", "--out", "{tmp}/o"],
    ),
    "report": (["{tmp}", "--reference", "x", "--umap-max-images", "abc"], ["{missing}", "--reference", "x"]),
}


def _commands() -> set[str]:
    return set(typer.main.get_command(app).commands)


def _run(args: list[str], tmp_path: Path) -> tuple[int, str]:
    """``main(args)`` with stdout and stderr captured by typer's CliRunner (no process needed)."""
    (tmp_path / "file").touch()
    filled = [a.format(tmp=tmp_path, missing=tmp_path / "missing", file=tmp_path / "file") for a in args]
    with CliRunner().isolation() as (_, _, output):
        code = main(filled)
        text = output.getvalue().decode()
    return code, text


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MODAN_PACS_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MODAN_PACS_SALT_FILE", str(tmp_path / "salt"))
    return tmp_path / "logs"


def test_every_command_is_covered():
    assert set(CASES) == _commands(), "add the new command to CASES"


@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_flag_one_line_exit_2(command, tmp_path):
    code, text = _run([command, "--no-such-flag"], tmp_path)
    assert code == 2, text
    assert "Traceback" not in text
    assert _error_lines(text) == [text.strip()] and "--no-such-flag" in text, text


@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_value_one_line_exit_2(command, tmp_path):
    code, text = _run([command, *CASES[command][0]], tmp_path)
    assert code == 2, text
    assert "Traceback" not in text
    assert _error_lines(text) == [text.strip()], text
    flag = next(a for a in reversed(CASES[command][0]) if a.startswith("--"))
    assert flag in text, text


@pytest.mark.parametrize("command", sorted(CASES))
def test_missing_path_one_line_nonzero(command, tmp_path, log_dir):
    code, text = _run([command, *CASES[command][1]], tmp_path)
    assert code != 0, text
    assert "Traceback" not in text
    lines = _error_lines(text)
    assert len(lines) == 1 and text.rstrip().endswith(lines[0]), text
    if code == 1:  # an unexpected error: the line names the log holding the traceback
        logs = list(log_dir.glob("crash-*.log"))
        assert len(logs) == 1 and str(logs[0]) in lines[0] and "Traceback" in logs[0].read_text()
    else:
        assert "missing" in lines[0] or "sub" in lines[0], lines


def test_unexpected_error_is_one_line_and_a_log(tmp_path, log_dir, monkeypatch):
    from modan_pacs.ingest import build as build_module

    def boom(*args, **kwargs):
        raise ZeroDivisionError("an internal bug")

    monkeypatch.setattr(build_module, "build_index", boom)
    monkeypatch.setattr("modan_pacs.ingest.build_index", boom, raising=False)
    code, text = _run(["index", "{tmp}", "--out", "{tmp}/o"], tmp_path)
    assert code == 1 and "Traceback" not in text
    (log,) = log_dir.glob("crash-*.log")
    assert _error_lines(text) == [f"error: unexpected ZeroDivisionError: an internal bug (traceback in {log})"]
    assert "Traceback" in log.read_text() and "an internal bug" in log.read_text()


def test_real_process_usage_error_and_help(tmp_path):
    """The installed entry point, in a real process: a usage error is one line on stderr, exit 2."""
    env = {**os.environ, "MODAN_PACS_LOG_DIR": str(tmp_path / "logs")}
    script = Path(sys.executable).parent / "modan-pacs"  # the console script pip installed
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "modan_pacs.cli.main"]
    proc = subprocess.run(
        [*cmd, "index", "--workers", "abc", str(tmp_path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()
        == [
            "error: Invalid value for '--workers' / '-w': Input should be a valid integer, unable to parse string as "
            "an integer (see 'modan-pacs index --help')"
        ]
        or len(proc.stderr.strip().splitlines()) == 1
    ), proc.stderr
    listing = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert listing.returncode == 0 and all(name in listing.stdout for name in CASES)
