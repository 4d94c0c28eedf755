"""1,000 mutants of the real pydicom / pydicom-data files (tests/ingest/fuzz_corpus.py), plus a FIFO
and a symbolic link loop, indexed and cached through the CLI: exit 0, every regular file in exactly
one of the index and the errors, no traceback, no identifying value of the sources in any output
byte (the files written and what reached the terminal)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from fuzz_corpus import KINDS, write_fuzz_corpus
from modan_pacs.cli.main import main
from typer.testing import CliRunner

N_MUTANTS = 1000


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    corpus = write_fuzz_corpus(root / "corpus", n=N_MUTANTS, seed=0)
    salt = root / "salt"
    os.environ["MODAN_PACS_SALT_FILE"] = str(salt)  # module scope: monkeypatch is function-scoped
    try:
        with CliRunner().isolation() as (_, _, output):
            code = main(
                ["index", str(root / "corpus"), "--out", str(root / "idx"), "--workers", "2", "--file-timeout", "20"]
            )
            text = output.getvalue().decode(errors="replace")
    finally:
        os.environ.pop("MODAN_PACS_SALT_FILE", None)
    return {"root": root, "corpus": corpus, "code": code, "text": text}


def _regular_files(root: Path) -> set[str]:
    out = set()
    for folder, _dirs, names in os.walk(root):  # does not follow folder links
        out |= {os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))}
    return out


def _leaks(paths: list[Path], text: str, needles: set[str]) -> list[tuple[str, str]]:
    found = [("terminal", n) for n in needles if n in text]
    for path in paths:
        blob = path.read_bytes()
        found += [(str(path), n) for n in needles if n.encode() in blob]
    return found


def test_fuzz_corpus_is_what_it_claims(fuzz):
    files = fuzz["corpus"]["files"]
    assert len(files) >= 1000 and len(fuzz["corpus"]["sources"]) >= 100
    corpus = Path(files[0]).parents[2] if Path(files[0]).name != "DICOMDIR" else Path(files[0]).parents[3]
    assert {Path(f).relative_to(corpus).parts[0] for f in files} == set(KINDS)
    assert sum(Path(f).name == "DICOMDIR" for f in files) >= 20
    assert len(fuzz["corpus"]["identifying"]) >= 20  # the check below has something to catch
    blobs = b"".join(Path(f).read_bytes() for f in files)
    assert sum(n.encode() in blobs for n in fuzz["corpus"]["identifying"]) >= 10


def test_fuzz_index_every_file_once_no_traceback_no_phi(fuzz):
    root = fuzz["root"]
    assert fuzz["code"] == 0, fuzz["text"][-2000:]
    assert "Traceback" not in fuzz["text"]
    index = pd.read_parquet(root / "idx" / "index.parquet")
    errors = pd.read_parquet(root / "idx" / "errors.parquet")
    regular = _regular_files(root / "corpus")
    assert len(regular) == N_MUTANTS
    referenced = errors["reason"] == "missing_referenced_file"  # files a mutated DICOMDIR names
    assert not any(os.path.lexists(p) for p in errors.loc[referenced, "path"])
    not_files = errors[~errors["path"].isin(regular) & ~referenced]
    assert dict(zip(not_files["path"].map(lambda p: Path(p).name), not_files["reason"])) == {
        "fifo.dcm": "special_file",
        "loop_a": "unreadable",
        "loop_b": "unreadable",
    }
    file_errors = errors[errors["path"].isin(regular)]
    assert index["path"].is_unique and file_errors["path"].is_unique
    assert set(index["path"]).isdisjoint(file_errors["path"])
    assert set(index["path"]) | set(file_errors["path"]) == regular
    assert len(index) >= 50  # mutants that stay readable images are kept
    written = [p for p in (root / "idx").rglob("*") if p.is_file()]
    assert _leaks(written, fuzz["text"], fuzz["corpus"]["identifying"]) == []


def test_fuzz_cache_no_traceback_no_phi(fuzz):
    root = fuzz["root"]
    with CliRunner().isolation() as (_, _, output):
        code = main(
            ["cache", "--index", str(root / "idx"), "--out", str(root / "cache"), "--workers", "2", "--size", "32"]
        )
        text = output.getvalue().decode(errors="replace")
    assert code == 0, text[-2000:]
    assert "Traceback" not in text
    manifest = pd.read_parquet(root / "cache" / "manifest.parquet")
    assert len(manifest) > 0
    written = [p for p in (root / "cache").rglob("*") if p.is_file()]
    assert _leaks(written, text, fuzz["corpus"]["identifying"]) == []
