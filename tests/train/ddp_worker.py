"""Worker of the 2-process gloo test (spawned; must be importable by file name)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 8))


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = 8
    labels = torch.zeros(n, 6)
    labels[torch.arange(n), torch.randint(0, 2, (n,), generator=g)] = 1
    labels[torch.arange(n), 2 + torch.randint(0, 4, (n,), generator=g)] = 1
    return {
        "view1": torch.rand(n, 1, 8, 8, generator=g),
        "view2": torch.rand(n, 1, 8, 8, generator=g),
        "labels": labels,
        "index": torch.arange(n),
    }


def loss_and_grads(
    model: nn.Module, batch: dict[str, torch.Tensor], loss_name: str
) -> tuple[float, list[torch.Tensor]]:
    from modan_pacs.losses import build_loss
    from modan_pacs.train import batch_loss

    contrastive = loss_name != "cross_entropy"
    loss_fn = build_loss(loss_name)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]) % 8 if not contrastive else None
    loss = batch_loss(model, loss_fn, batch, device=torch.device("cpu"), contrastive=contrastive, targets=targets)
    loss.backward()
    params = model.module.parameters() if hasattr(model, "module") else model.parameters()
    grads = [p.grad.detach().clone() for p in params]
    model.zero_grad(set_to_none=True)
    return float(loss.item()), grads


def run(rank: int, world_size: int, tmp: str, cache: str | None) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        batch = global_batch()
        per_rank = batch["view1"].shape[0] // world_size
        local = {k: v[rank * per_rank : (rank + 1) * per_rank] for k, v in batch.items()}
        model = nn.parallel.DistributedDataParallel(tiny_model())
        results = {name: loss_and_grads(model, local, name) for name in ("mulsupcon", "ntxent", "cross_entropy")}
        torch.save(results, Path(tmp) / f"rank{rank}.pt")
        if cache is not None:
            from modan_pacs.paths import config_path
            from modan_pacs.train import load_config, pretrain

            cfg = load_config(
                config_path("pretrain_tiny.yaml"),
                [
                    "model.stem=authors",
                    "data.size=16",
                    "train.epochs=1",
                    "train.batch_size=8",
                    "schedule.warmup_epochs=0",
                ],
            )
            result = pretrain(cfg, cache, Path(tmp) / "run")
            torch.save({"loss": result.history[0]["loss"]}, Path(tmp) / f"pretrain{rank}.pt")
    finally:
        dist.destroy_process_group()
