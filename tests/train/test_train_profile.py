"""`pretrain --profile N`: the library's timings add up, steps run across epochs, the CLI prints and writes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cache_factory import generated_cache  # noqa: E402

from modan_pacs.errors import InputError  # noqa: E402
from modan_pacs.paths import config_path  # noqa: E402
from modan_pacs.train import load_config, profile_pretrain  # noqa: E402
from modan_pacs.train.profile import PHASES  # noqa: E402

TINY = ["model.stem=authors", "data.size=16", "schedule.warmup_epochs=0", "train.batch_size=8"]


@pytest.fixture(scope="module")
def cache16(tmp_path_factory) -> Path:
    return generated_cache(tmp_path_factory.mktemp("profile") / "cache", n=16, size=16)


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_profile_timings_add_up_across_epochs(cache16, augment_on):
    cfg = load_config(config_path("pretrain_tiny.yaml"), [*TINY, f"data.augment_on={augment_on}"])
    result = profile_pretrain(cfg, cache16, steps=3)  # 2 steps per epoch: the timed steps cross an epoch
    assert (result.steps, result.warmup_steps, result.steps_per_epoch, result.n_images, result.global_batch) == (
        3,
        1,
        2,
        16,
        8,
    )
    assert set(result.phase_s) == set(PHASES) and all(v >= 0 for v in result.phase_s.values())
    assert result.step_s == pytest.approx(sum(result.phase_s.values()))
    assert sum(result.shares.values()) == pytest.approx(1.0)
    assert result.images_per_s == pytest.approx(8 / result.step_s)
    assert result.epoch_s == pytest.approx(2 * result.step_s)
    assert result.phase_s["forward"] > 0 and result.phase_s["backward_step"] > 0
    assert result.peak_memory_kind == "process peak RSS" and result.peak_memory_bytes > 10 * 2**20
    assert result.environment["augment_on"] == augment_on and result.environment["device"] == "cpu"


def test_profile_rejects_no_steps(cache16):
    with pytest.raises(InputError, match="at least 1 timed step"):
        profile_pretrain(load_config(config_path("pretrain_tiny.yaml"), TINY), cache16, steps=0)


def test_cli_profile_prints_a_table_and_writes_nothing(cache16, tmp_path, capsys):
    from modan_pacs.cli.main import main

    out = tmp_path / "run"
    code = main(
        [
            "pretrain",
            "--config",
            str(config_path("pretrain_tiny.yaml")),
            "--data",
            str(cache16),
            "--out",
            str(out),
            "--profile",
            "2",
            *TINY,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    for text in (
        "images/s",
        "data",
        "forward",
        "loss",
        "backward + step",
        "peak memory",
        "epoch of 16 images = 2 steps",
    ):
        assert text in printed, text
    assert not out.exists()
    code = main(["pretrain", "--data", str(cache16), "--out", str(out), "--profile", "2", "--resume"])
    assert code == 2 and "leave out --resume" in capsys.readouterr().err.replace("\n", " ")
