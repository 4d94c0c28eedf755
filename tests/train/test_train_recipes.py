"""One recipe for every pretraining method: the shipped configs differ only in the loss and its target."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cache_factory import generated_cache, write_test_cache  # noqa: E402

from modan_pacs.paths import config_path  # noqa: E402
from modan_pacs.train import load_config, pretrain  # noqa: E402

METHODS = ("pretrain_modan.yaml", "pretrain_simclr.yaml", "pretrain_supervised.yaml")
#: the only keys allowed to differ between methods: the loss and what it is told to predict
ALLOWED = ("loss.", "supervised.")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_method_configs_differ_only_in_loss_and_target():
    configs = {name: _flat(load_config(config_path(name)).to_dict()) for name in METHODS}
    keys = set().union(*configs.values())
    differing = {k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1}
    assert differing, "the methods must differ somewhere (their losses)"
    assert all(k.startswith(ALLOWED) for k in differing), sorted(k for k in differing if not k.startswith(ALLOWED))
    assert {"loss.name"} <= differing
    modan = configs["pretrain_modan.yaml"]
    # the shared recipe is the paper's (Table 2) with the signed 1000-d embedding and the paper's stem
    assert (modan["optimizer.name"], modan["optimizer.lr"], modan["train.epochs"], modan["train.batch_size"]) == (
        "sgd",
        0.05,
        1000,
        256,
    )
    assert (
        modan["model.head"] == "linear"
        and modan["model.stem"] == "paper"
        and modan["labels.unknown_anatomy"] == "distinct"
    )
    assert configs["pretrain_supervised.yaml"]["supervised.label_group"] == "modality+anatomy"


def test_paper_stem_keeps_the_maxpool_and_the_old_one_is_named():
    from torch import nn

    from modan_pacs.models import build_encoder

    paper, old = build_encoder("paper"), build_encoder("paper-nopool")
    assert isinstance(paper.maxpool, nn.MaxPool2d) and isinstance(old.maxpool, nn.Identity)
    assert paper.conv1.kernel_size == (3, 3) and paper.conv1.stride == (1, 1)
    x = torch.randn(1, 1, 32, 32)
    assert paper.layer1(paper.maxpool(paper.relu(paper.bn1(paper.conv1(x))))).shape[-1] == 16
    assert old.layer1(old.maxpool(old.relu(old.bn1(old.conv1(x))))).shape[-1] == 32


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["distinct", "match", "drop"])
def test_pretraining_runs_under_each_unknown_anatomy_policy(tmp_path, policy):
    """One short epoch of MulSupCon per policy on a cache where a third of the images have no anatomy,
    plus the full-label supervised baseline (n_classes = combinations present)."""
    base = generated_cache(tmp_path / "g", n=24, size=16)
    from modan_pacs.pixels import load_cache

    cache = load_cache(base)
    anatomy = [None if i % 3 == 0 else a for i, a in enumerate(cache.manifest["anatomy_label"])]
    path = write_test_cache(tmp_path / "c", np.asarray(cache.images), list(cache.manifest["modality_label"]), anatomy)
    fast = [
        "model.stem=authors",
        "data.size=16",
        "schedule.warmup_epochs=0",
        "train.epochs=1",
        "train.batch_size=8",
        "data.workers=0",
        "train.device=cpu",
        "train.log_every=1",
        f"labels.unknown_anatomy={policy}",
    ]
    result = pretrain(load_config(config_path("pretrain_modan.yaml"), fast), path, tmp_path / "run")
    assert np.isfinite(result.history[0]["loss"])
    steps = int(result.history[0]["step"])
    assert steps == (16 // 8 if policy == "drop" else 24 // 8)  # drop leaves 16 images of known anatomy
    sup = pretrain(load_config(config_path("pretrain_supervised.yaml"), fast), path, tmp_path / "sup")
    ckpt = torch.load(tmp_path / "sup" / "checkpoints" / "last.pt", weights_only=True)
    assert np.isfinite(sup.history[0]["loss"])
    # generated kinds: CT/brain, CT/lung, MR/brain, US/thyroid (+ */unknown classes under "match")
    assert ckpt["arch"]["n_classes"] == (4 + 3 if policy == "match" else 4)
