"""The one contrastive computation behind MulSupCon (Eq. 3), SupCon (Eq. 2) and NT-Xent (Eq. 1).

All three losses of Takaya & Inamori (ModAn-MulSupCon) are

    L = mean_a  -1/|P(a)| * sum_{p in P(a)} w_ap * log( exp(z_a.z_p / T) / sum_{k in A(a)} exp(z_a.z_k / T) )

over the ``M = N * V`` views of ``N`` images, with ``A(a)`` every view except ``a`` itself. They
differ only in who is a positive (``P(a)``) and with which weight (``w_ap``); callers give both as
``N x N`` matrices over *images* and this module expands them to views. The other views of the
anchor's own image are always positives with weight 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_features(features: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``features`` is a floating ``(N, V, D)`` tensor with ``N, V, D >= 1``."""
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"features must be a torch.Tensor of shape (N, V, D), got {type(features).__name__}")
    if features.ndim != 3:
        raise ValueError(
            f"features must have shape (N images, V views, D dims), got {tuple(features.shape)}; "
            "stack the views with torch.stack([z1, z2], dim=1)"
        )
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    if min(features.shape) < 1:
        raise ValueError(f"features has an empty dimension: {tuple(features.shape)}")


def weighted_contrastive_loss(
    features: torch.Tensor,
    pair_weights: torch.Tensor,
    positive_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Weighted multi-positive InfoNCE over all views (the common core of Eqs. 1-3).

    Args:
        features: ``(N, V, D)``: ``V`` views of ``N`` images; L2-normalised here (any scale is accepted).
        pair_weights: ``(N, N)`` weight ``w_ij`` of a positive pair of views of images ``i`` and ``j``.
        positive_mask: ``(N, N)`` bool, ``True`` where views of image ``j`` are positives of anchors of image ``i``.
            The diagonal (the anchor's own image) is forced to positive with weight 1.
        temperature: ``T > 0``.

    Returns:
        Scalar: the mean over anchors that have at least one positive. An anchor with no positive
        (possible only with ``V = 1``) is excluded from the mean; if no anchor has a positive the
        loss is ``0`` (still attached to the graph, so ``backward()`` works and gives zero gradients).
        Computed in float32 whatever the input dtype (safe under autocast).
    """
    n_images, n_views, _ = features.shape
    n = n_images * n_views
    # views are laid out image-major: view row r = (image r // V, view r % V)
    z = F.normalize(features.float().reshape(n, -1), dim=1)

    # image-level (N, N) positive weights; the anchor's own image is a positive with weight 1. They are
    # never expanded to (M, M): the per-view sums below are reduced over views first, then weighted.
    same_image = torch.eye(n_images, dtype=torch.bool, device=features.device)
    positives = positive_mask.to(torch.bool) | same_image
    weights = torch.where(positives, pair_weights.float(), torch.zeros((), device=features.device))
    weights = weights.masked_fill(same_image, 1.0)

    logits = (z @ z.T).div_(temperature)  # (M, M) similarities z_a.z_k / T: the one big product
    # the anchor itself is in neither sum: its diagonal entry is -inf for the stable log-sum-exp of the
    # denominator sum_{k != a} exp(.) (in place, no (M, M) copy), and 0 in log_prob, out of the numerator
    logits.diagonal().fill_(float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob.diagonal().fill_(0.0)

    # sum_p w_ap log_prob_ap over p in P(a): the V views of each image j summed, weighted by w_{i(a) j}
    # (the views of the anchor's own image with weight 1)
    per_image = log_prob.view(n_images, n_views, n_images, n_views).sum(dim=3)  # (N, V, N)
    weighted = (per_image * weights[:, None, :]).sum(dim=2).reshape(n)
    # |P(a)| = V * (number of positive images, own image included) - 1 (the anchor itself)
    n_positives = (positives.sum(dim=1) * n_views - 1).repeat_interleave(n_views)
    per_anchor = -weighted / n_positives.clamp(min=1)
    has_positive = n_positives > 0
    if not bool(has_positive.any()):
        return z.sum() * 0.0  # (logits holds -inf on its diagonal)
    return per_anchor[has_positive].mean()
