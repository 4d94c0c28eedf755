"""Multi-label supervised contrastive loss (MulSupCon), Eq. 3 of Takaya & Inamori (ModAn-MulSupCon)."""

from __future__ import annotations

import torch
from torch import nn

from .contrastive import check_features, weighted_contrastive_loss


def check_labels(labels: torch.Tensor, features: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``labels`` is ``(N, K)`` with values in [0, 1] and the batch of ``features``."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor of shape (N, K), got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (N, K) (multi-hot or soft), got {tuple(labels.shape)}")
    if labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels has batch {labels.shape[0]} but features has batch {features.shape[0]} "
            f"(features {tuple(features.shape)}, labels {tuple(labels.shape)})"
        )
    if labels.numel() and (bool((labels < 0).any()) or bool((labels > 1).any())):
        raise ValueError("labels must lie in [0, 1] (multi-hot or soft labels)")


def jaccard_similarity(labels: torch.Tensor) -> torch.Tensor:
    """Pairwise Jaccard similarity ``|S(i) & S(j)| / |S(i) | S(j)|`` of label rows, ``(N, K) -> (N, N)``.

    Binary labels use one matrix product: ``J = L L^T / (|L_i| + |L_j| - L L^T)``. Soft labels in
    [0, 1] use the weighted (Ruzicka) form ``sum_k min(l_ik, l_jk) / sum_k max(l_ik, l_jk)``, which
    equals the binary one on {0, 1}. A pair whose union is empty (two all-zero rows) gets 0, not NaN.
    """
    labels = labels.float()
    if bool(((labels == 0) | (labels == 1)).all()):
        intersection = labels @ labels.T
        sizes = labels.sum(dim=1)
        union = sizes[:, None] + sizes[None, :] - intersection
    else:
        # (N, 1, K) against (1, N, K): i = anchor image, j = other image, k = label
        intersection = torch.minimum(labels[:, None, :], labels[None, :, :]).sum(dim=2)
        union = torch.maximum(labels[:, None, :], labels[None, :, :]).sum(dim=2)
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


def multilabel_supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.07,
    threshold: float = 0.3,
) -> torch.Tensor:
    """Jaccard-weighted multi-label supervised contrastive loss (Eq. 3).

    ``L = mean_a -1/|P_tau(a)| sum_{p in P_tau(a)} w_ap log(exp(z_a.z_p/T) / sum_{k != a} exp(z_a.z_k/T))``
    with ``w_ap = Jaccard(y_a, y_p)`` and ``P_tau(a) = {p != a : w_ap >= tau}``.

    Args:
        features: ``(N, V, D)`` embeddings of ``V`` views of ``N`` images; L2-normalised inside.
        labels: ``(N, K)`` multi-hot (modality (+) anatomy) or soft labels in [0, 1].
        temperature: ``T > 0`` (paper 0.07).
        threshold: ``tau`` in [0, 1] (paper 0.3): pairs with Jaccard >= tau are positives.

    Edge cases: the other views of the anchor's own image are positives with weight 1 whatever its
    label (so an all-zero label row still has its other view); a pair with an empty label union has
    Jaccard 0; an anchor with no positive (only when ``V = 1``) is left out of the mean; never NaN.

    Returns:
        The scalar loss (float32).

    Raises:
        ValueError: bad shapes, labels outside [0, 1], or hyper-parameters out of range.
    """
    check_features(features)
    check_labels(labels, features)
    check_temperature(temperature)
    check_threshold(threshold)
    weights = jaccard_similarity(labels.to(features.device))
    return weighted_contrastive_loss(features, weights, weights >= threshold, temperature)


def check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(
            f"temperature must be a positive number (paper: 0.07 for MulSupCon, 0.1 for SimCLR), got {temperature!r}"
        )


def check_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold (tau) must be a Jaccard value in [0, 1] (paper: 0.3), got {threshold!r}")


class MultiLabelSupConLoss(nn.Module):
    """``nn.Module`` form of :func:`multilabel_supcon_loss`; hyper-parameters checked here.

    Example:
        >>> loss = MultiLabelSupConLoss(temperature=0.07, threshold=0.3)
        >>> value = loss(torch.randn(8, 2, 128), torch.eye(4)[torch.randint(0, 4, (8,))])
    """

    needs_labels = True

    def __init__(self, temperature: float = 0.07, threshold: float = 0.3) -> None:
        super().__init__()
        check_temperature(temperature)
        check_threshold(threshold)
        self.temperature = float(temperature)
        self.threshold = float(threshold)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``features (N, V, D)``, ``labels (N, K)`` -> scalar."""
        return multilabel_supcon_loss(features, labels, self.temperature, self.threshold)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, threshold={self.threshold}"
