"""A real `torchrun` launch of the CLI on CPU (gloo, 2 processes): the environment-variable path of
the process group, rank-0-only outputs, and --resume under torchrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _torchrun(cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    from modan_pacs.paths import config_path

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "modan_pacs.cli.main",
        "pretrain",
        "--config",
        str(config_path("pretrain_tiny.yaml")),
        "--data",
        str(cache),
        "--out",
        str(out),
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_two_processes_then_resume(tmp_path, distributed_cache):
    cache = distributed_cache
    out = tmp_path / "run"
    done = _torchrun(cache, out, "train.epochs=2", "train.batch_size=8", "data.size=16")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "seeds.json").read_text())["world_size"] == 2
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    epochs = sorted({int(r["epoch"]) for r in rows})
    assert epochs == [1, 2]
    steps = [int(r["step"]) for r in rows] if rows and "step" in rows[0] else []
    assert len(steps) == len(set(steps)), "metrics written by more than one rank"
    from modan_pacs.models import load_encoder

    load_encoder(out / "encoder.pt")
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")["epoch"] == 2

    resumed = _torchrun(cache, out, "train.epochs=3", "train.batch_size=8", "data.size=16", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({int(r["epoch"]) for r in rows}) == [1, 2, 3]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")["epoch"] == 3
