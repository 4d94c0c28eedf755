"""2-process gloo DDP equals 1 process with the doubled batch (loss and gradients), and pretrain() runs under it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_process_gloo_matches_one_process_with_double_batch(tmp_path, distributed_cache):
    cache = distributed_cache
    mp.spawn(ddp_worker.run, args=(2, str(tmp_path), str(cache)), nprocs=2, join=True)

    batch = ddp_worker.global_batch()
    for name in ("mulsupcon", "ntxent", "cross_entropy"):
        single_loss, single_grads = ddp_worker.loss_and_grads(ddp_worker.tiny_model(), batch, name)
        for rank in (0, 1):
            loss, grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)[name]
            assert loss == pytest.approx(single_loss, rel=1e-6), (name, rank)
            for g, s in zip(grads, single_grads):
                torch.testing.assert_close(g, s, rtol=1e-5, atol=1e-7)

    # the full trainer under 2 processes: one run folder, the same global loss seen on both ranks
    losses = [torch.load(tmp_path / f"pretrain{rank}.pt", weights_only=True)["loss"] for rank in (0, 1)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    import json

    assert json.loads((tmp_path / "run" / "seeds.json").read_text())["world_size"] == 2
    assert (tmp_path / "run" / "encoder.pt").is_file()
