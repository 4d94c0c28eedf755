"""Supervised contrastive loss (SupCon, Eq. 2; Khosla et al. 2020) and NT-Xent / SimCLR (Eq. 1).

Both are :func:`~modan_pacs.losses.contrastive.weighted_contrastive_loss` with weight 1 and another
positive mask: SupCon's positives are views of images with identical labels, NT-Xent's only the
other views of the anchor's own image.
"""

from __future__ import annotations

import torch
from torch import nn

from .contrastive import check_features, weighted_contrastive_loss
from .multilabel_supcon import check_temperature


def same_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` bool: images ``i`` and ``j`` have identical labels.

    ``labels`` is ``(N,)`` integer classes (negative = unlabelled) or ``(N, K)`` multi-hot rows
    (an all-zero row = unlabelled). An unlabelled image is identical to nothing but itself.
    """
    if labels.ndim == 1:
        labelled = labels >= 0
        same = labels[:, None] == labels[None, :]
    elif labels.ndim == 2:
        labelled = (labels != 0).any(dim=1)
        same = (labels[:, None, :] == labels[None, :, :]).all(dim=2)
    else:
        raise ValueError(f"labels must be (N,) classes or (N, K) multi-hot, got shape {tuple(labels.shape)}")
    return same & labelled[:, None] & labelled[None, :]


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SupCon (Eq. 2): positives are the views of images whose labels are identical, weight 1.

    Args:
        features: ``(N, V, D)``; L2-normalised inside.
        labels: ``(N,)`` classes or ``(N, K)`` multi-hot rows.
        temperature: ``T > 0``.

    Returns:
        Scalar (float32); anchors without a positive are left out of the mean (see
        :func:`~modan_pacs.losses.contrastive.weighted_contrastive_loss`).
    """
    check_features(features)
    check_temperature(temperature)
    if not isinstance(labels, torch.Tensor) or labels.shape[0] != features.shape[0]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels {shape} must have the batch of features {tuple(features.shape)}")
    positives = same_label_mask(labels.to(features.device))
    return weighted_contrastive_loss(features, positives.float(), positives, temperature)


def nt_xent_loss(features: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent / SimCLR (Eq. 1): the only positives are the other views of the anchor's image.

    With ``V = 2`` this is SimCLR's loss: cross-entropy of each view against its partner among the
    other ``2N - 1`` views.
    """
    check_features(features)
    check_temperature(temperature)
    n = features.shape[0]
    none = torch.zeros(n, n, dtype=torch.bool, device=features.device)
    return weighted_contrastive_loss(features, none.float(), none, temperature)


class SupConLoss(nn.Module):
    """``nn.Module`` form of :func:`supcon_loss`."""

    needs_labels = True

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = float(temperature)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``features (N, V, D)``, ``labels (N,)`` or ``(N, K)`` -> scalar."""
        return supcon_loss(features, labels, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NTXentLoss(nn.Module):
    """``nn.Module`` form of :func:`nt_xent_loss` (SimCLR; paper baseline T = 0.1). Labels are ignored."""

    needs_labels = False

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = float(temperature)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``features (N, V, D)`` -> scalar; ``labels`` is accepted for a uniform call and ignored."""
        return nt_xent_loss(features, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
