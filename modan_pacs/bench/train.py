"""One fold of the downstream recipe: fine-tuning and linear probing (paper, Table 3).

Recipe: Adam (lr 1e-4), StepLR(step 5, gamma 0.1) stepped per epoch, 10 epochs, batch 32,
cross-entropy over two classes, score = softmax(logits)[:, 1]. After every epoch the validation
loss is measured; the model of the best epoch is kept as a **deep copy** of its state (the
authors' code kept a reference, so their "best" model was the last one: ``best_epoch="last"``).

Linear probing freezes the encoder **in eval mode** (BatchNorm uses its stored statistics), so its
features are a fixed function of the image: they are computed once and only the linear head is
trained on them (:func:`linear_probe_on_features`). :func:`linear_probe_epochwise` runs the frozen
encoder on every batch of every epoch instead (what the authors' code did, optionally with its
BatchNorm left in train mode); with eval-mode BatchNorm both paths give the same model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modan_pacs.errors import InputError

FEATURE_DIM = 512


@dataclass
class FitSettings:
    """The optimisation part of the recipe."""

    lr: float = 1e-4
    epochs: int = 10
    batch_size: int = 32
    step_size: int = 5
    gamma: float = 0.1
    best_epoch: str = "deep-copy"  # or "last"
    eval_batch_size: int = 128


@dataclass
class FitResult:
    """Per-epoch ``history`` (``epoch, train_loss, val_loss, lr``) and the epoch kept (1-based)."""

    history: list[dict] = field(default_factory=list)
    kept_epoch: int = 0


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches of one epoch (``torch.randperm`` with ``generator``). A last batch of
    one image is dropped: BatchNorm in train mode cannot normalise a single sample."""
    order = torch.randperm(n, generator=generator)
    out = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out.pop()
    return out


@torch.no_grad()
def evaluate_logits(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device, batch_size: int
) -> torch.Tensor:
    """``forward`` over ``x`` in chunks without gradients; logits on CPU."""
    return torch.cat([forward(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def fit(
    *,
    module: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    train_mode: Callable[[], None],
    eval_mode: Callable[[], None],
    params: list[nn.Parameter],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    settings: FitSettings,
    generator: torch.Generator,
    device,
) -> FitResult:
    """Train ``params`` with Adam + StepLR, choose the epoch by validation loss, restore it.

    Args:
        module: the module whose ``state_dict`` is the model (deep-copied at the best epoch).
        forward: images or features ``(B, ...)`` on ``device`` -> logits ``(B, C)``.
        train_mode / eval_mode: put the modules in their training / evaluation modes.
        generator: the batch order's random generator.

    Raises:
        InputError: empty training or validation part.
    """
    if len(x_train) < 2 or len(x_val) < 1:
        raise InputError(
            f"a fold needs at least 2 training and 1 validation images (got {len(x_train)} and {len(x_val)})"
        )
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_size, gamma=settings.gamma)
    result = FitResult()
    best_loss, best_state = float("inf"), None
    for epoch in range(1, settings.epochs + 1):
        train_mode()
        total, seen = 0.0, 0
        for index in batches(len(x_train), settings.batch_size, generator):
            xb, yb = x_train[index].to(device), y_train[index].to(device)
            loss = F.cross_entropy(forward(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        eval_mode()
        val_loss = float(F.cross_entropy(evaluate_logits(forward, x_val, device, settings.eval_batch_size), y_val))
        result.history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss, "lr": lr})
        if val_loss < best_loss:
            best_loss, result.kept_epoch = val_loss, epoch
            best_state = copy.deepcopy(module.state_dict())  # a copy, not a reference (bug 2)
    if settings.best_epoch == "deep-copy" and best_state is not None:
        module.load_state_dict(best_state)
    else:
        result.kept_epoch = settings.epochs
    eval_mode()
    return result


def positive_scores(forward, x: torch.Tensor, device, batch_size: int) -> np.ndarray:
    """softmax(logits)[:, 1] of every row of ``x`` (the paper's ``preds``)."""
    return torch.softmax(evaluate_logits(forward, x, device, batch_size), dim=1)[:, 1].numpy()


def make_head(kind: str = "linear") -> nn.Module:
    """``linear``: a real 512 -> 2 classifier; ``identity``: the authors' bug 1 (the 512 features
    themselves are the logits of a 512-way cross-entropy; only indices 0 and 1 are targets)."""
    if kind == "linear":
        return nn.Linear(FEATURE_DIM, 2)
    if kind == "identity":
        return nn.Identity()
    raise InputError(f"head must be 'linear' or 'identity'; got {kind!r}")


def finetune(
    encoder: nn.Module,
    head: nn.Module,
    *,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    x_test: torch.Tensor,
    settings: FitSettings,
    generator: torch.Generator,
    device,
) -> tuple[np.ndarray, FitResult]:
    """Fine-tune every layer of ``encoder`` + ``head``; returns test scores and the fit record."""
    model = nn.Sequential(encoder, head).to(device)
    model.requires_grad_(True)
    result = fit(
        module=model,
        forward=model,
        train_mode=model.train,
        eval_mode=model.eval,
        params=list(model.parameters()),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        settings=settings,
        generator=generator,
        device=device,
    )
    return positive_scores(model, x_test, device, settings.eval_batch_size), result


def linear_probe_on_features(
    features: torch.Tensor,
    *,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    labels: torch.Tensor,
    settings: FitSettings,
    generator: torch.Generator,
    device,
) -> tuple[np.ndarray, FitResult]:
    """Fast path: train a 512 -> 2 head on precomputed frozen features (row masks select the parts)."""
    head = nn.Linear(FEATURE_DIM, 2).to(device)
    result = fit(
        module=head,
        forward=head,
        train_mode=head.train,
        eval_mode=head.eval,
        params=list(head.parameters()),
        x_train=features[train],
        y_train=labels[train],
        x_val=features[val],
        y_val=labels[val],
        settings=settings,
        generator=generator,
        device=device,
    )
    return positive_scores(head, features[test], device, settings.eval_batch_size), result


def linear_probe_epochwise(
    encoder: nn.Module,
    *,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    x_test: torch.Tensor,
    settings: FitSettings,
    generator: torch.Generator,
    device,
    bn_mode: str = "eval",
) -> tuple[np.ndarray, FitResult]:
    """Slow path: a frozen encoder run on every batch of every epoch, only the head trained.

    ``bn_mode="train"`` reproduces the authors' bug 3: BatchNorm of the "frozen" encoder in train
    mode while training the head (batch statistics, running statistics drifting).
    """
    head = nn.Linear(FEATURE_DIM, 2)
    model = nn.Sequential(encoder, head).to(device)
    encoder.requires_grad_(False)

    def train_mode() -> None:
        head.train()
        encoder.train(bn_mode == "train")

    def forward(xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = encoder(xb)
        return head(features)

    result = fit(
        module=model,
        forward=forward,
        train_mode=train_mode,
        eval_mode=model.eval,
        params=list(head.parameters()),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        settings=settings,
        generator=generator,
        device=device,
    )
    return positive_scores(forward, x_test, device, settings.eval_batch_size), result
