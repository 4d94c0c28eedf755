"""Cross-entropy over one label group: the supervised pretraining baseline (e.g. miniRIN165)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: target value of a row without a class (its group is empty); such rows do not count
IGNORE_INDEX = -100


def group_targets(labels: torch.Tensor, group: slice) -> torch.Tensor:
    """Class index within one label group of multi-hot rows: ``(N, K) -> (N,)`` int64.

    The class is the argmax of ``labels[:, group]``; a row whose group is all zero gets
    :data:`IGNORE_INDEX`.
    """
    block = labels[:, group]
    targets = block.argmax(dim=1)
    return torch.where(block.amax(dim=1) > 0, targets, torch.full_like(targets, IGNORE_INDEX))


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy over rows that have a class (rows with target :data:`IGNORE_INDEX` are dropped).

    Unlike ``nn.CrossEntropyLoss``, a batch in which no row has a class gives 0 (attached to the
    graph), not NaN.
    """

    needs_labels = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1) (0 = plain cross-entropy), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``logits (N, C)``, ``targets (N,)`` int64 -> scalar (float32)."""
        if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0]:
            raise ValueError(
                f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        valid = targets != IGNORE_INDEX
        if not bool(valid.any()):
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits[valid].float(), targets[valid], label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
