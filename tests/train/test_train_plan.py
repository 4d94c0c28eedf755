"""Plans before work: `pretrain --dry-run`, shipped configs by bare name, overrides blamed, line progress."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from cache_factory import generated_cache  # noqa: E402
from modan_pacs.cli.main import main  # noqa: E402

from modan_pacs.errors import ConfigError  # noqa: E402
from modan_pacs.paths import config_path  # noqa: E402
from modan_pacs.progress import LineProgress, format_eta, make_progress  # noqa: E402
from modan_pacs.train import load_config, pretrain  # noqa: E402
from modan_pacs.train.plan import plan_pretrain  # noqa: E402


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working folder outside the checkout holding a 40-image cache."""
    monkeypatch.chdir(tmp_path)
    generated_cache(tmp_path / "cache", n=40, size=32)
    return tmp_path


def test_shipped_config_by_bare_name_from_any_folder(elsewhere):
    assert load_config("pretrain_tiny").model_dump() == load_config(config_path("pretrain_tiny.yaml")).model_dump()
    assert load_config("pretrain_simclr.yaml").loss.name == "ntxent"
    with pytest.raises(ConfigError, match="shipped: pretrain_modan, pretrain_simclr"):
        load_config("pretrain_tyni")


def test_plan_reports_sources_data_and_steps(elsewhere):
    (elsewhere / "mine.yaml").write_text("train:\n  batch_size: 8\n  epochs: 4\n")
    plan = plan_pretrain("mine.yaml", ["train.epochs=6", "loss.temperature=0.2"], "cache", "runs/x")
    assert plan.sources["train.epochs"] == "override" and plan.values["train.epochs"] == 6
    assert plan.sources["train.batch_size"] == "file" and plan.sources["optimizer.lr"] == "default"
    assert plan.sources["loss.temperature"] == "override" and plan.sources["loss.name"] == "default"
    assert (plan.n_images, plan.image_side, plan.steps_per_epoch, plan.total_steps) == (40, 32, 5, 30)
    assert plan.label_counts == {
        "modality:CT": 20,
        "modality:MR": 10,
        "modality:US": 10,
        "anatomy:lung": 10,
        "anatomy:brain": 20,
        "anatomy:thyroid": 10,
    }


def test_dry_run_prints_the_plan_and_writes_nothing(elsewhere, capsys):
    assert (
        main(
            [
                "pretrain",
                "--config",
                "pretrain_tiny",
                "--data",
                "cache",
                "--out",
                "runs/x",
                "--dry-run",
                "train.epochs=5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "train.epochs" in out and "override" in out and "pretrain_tiny.yaml" in out
    assert "2 per epoch" in out and "= 10 steps" in out and "40 images" in out
    assert not (elsewhere / "runs").exists()


@pytest.mark.parametrize(
    ("overrides", "blamed"),
    [
        (["train.epochs=abc"], "override 'train.epochs=abc': train.epochs"),
        (["loss.temprature=0.1"], "override 'loss.temprature=0.1'"),
        (["train.epochs=[1"], "override 'train.epochs=[1': value is not a YAML"),
    ],
)
def test_bad_override_is_blamed_on_the_override_not_the_file(overrides, blamed):
    with pytest.raises(ConfigError) as info:
        load_config("pretrain_tiny", overrides)
    assert str(info.value).startswith(blamed)
    assert "pretrain_tiny.yaml" not in str(info.value)


def test_bad_file_value_is_still_blamed_on_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs"):
        load_config(tmp_path / "bad.yaml", ["loss.temperature=0.1"])


def test_line_progress_prints_one_line_per_unit_with_an_eta():
    lines, now = [], [0.0]
    progress = LineProgress(lines.append, clock=lambda: now[0])
    task = progress.add_task("folds", total=4)
    for k in range(1, 5):
        progress.update(task, description=f"fold {k}")
        now[0] += 30.0
        progress.advance(task)
    assert lines == [
        "[1/4] fold 1  30s elapsed, ETA 1m30s",
        "[2/4] fold 2  1m00s elapsed, ETA 1m00s",
        "[3/4] fold 3  1m30s elapsed, ETA 30s",
        "[4/4] fold 4  2m00s elapsed, ETA 0s",
    ]
    many = progress.add_task("images", total=1000)
    for _ in range(1000):
        progress.advance(many)
    assert len(lines) == 4 + 10  # a task of many small units prints every tenth
    assert format_eta(3 * 3600 + 7 * 60) == "3h07m"


def test_make_progress_is_live_on_a_terminal_and_lines_elsewhere():
    buffer = io.StringIO()
    plain = make_progress(Console(file=buffer), lambda: "live")
    assert isinstance(plain, LineProgress)
    task = plain.add_task("folds", total=2)
    plain.advance(task)
    assert buffer.getvalue().startswith("[1/2] folds")
    assert make_progress(Console(file=io.StringIO(), force_terminal=True), lambda: "live") == "live"


def test_pretrain_logs_one_line_per_epoch_with_an_eta(elsewhere, caplog):
    cfg = load_config(
        "pretrain_tiny", ["model.stem=authors", "train.epochs=2", "train.batch_size=20", "schedule.warmup_epochs=0"]
    )
    with caplog.at_level(logging.INFO, logger="modan_pacs.train.pretrain"):
        pretrain(cfg, "cache", "runs/eta")
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 2 and all(", ETA " in line for line in epochs) and epochs[-1].endswith("ETA 0s")
