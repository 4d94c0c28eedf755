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


# below this many views the single product is faster than three blocks (fewer operations to launch)
_SPLIT_MIN_VIEWS = 256


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

    # sum_p w_ap log p_ap = sum_p w_ap s_ap - lse_a sum_p w_ap with s = z z^T / T, lse_a the log-sum-exp
    # of s_ak over k != a, p != a. s is symmetric: it is computed as three blocks (images split in two
    # halves, the lower-left block is the transpose of the upper-right one), 3/4 of the matrix product.
    split = n_images // 2 if n_images > 1 and n >= _SPLIT_MIN_VIEWS else n_images
    halves = [slice(0, split), slice(split, n_images)] if split < n_images else [slice(0, n_images)]
    diagonal_blocks, off = _similarity_blocks(z, split * n_views, temperature)
    row_sum, row_lse = [], []
    for half, rows in enumerate(halves):
        block = diagonal_blocks[half]  # (rows*V, rows*V)
        n_rows = rows.stop - rows.start
        eye = torch.eye(block.shape[0], dtype=torch.bool, device=z.device)
        lse = torch.logsumexp(block.masked_fill(eye, float("-inf")), dim=1)
        # per image: sum over the V views of image j, weighted by w_{i(a) j}; minus the anchor's own s_aa
        per_image = _sum_views(block.view(n_rows, n_views, n_rows, n_views), dim=3)  # (rows, V, rows)
        total = (per_image * weights[rows, rows][:, None, :]).sum(dim=2).reshape(-1) - block.diagonal()
        if off is not None:  # the other half's views; the lower half reads the upper-right block transposed (a view)
            cols = halves[1 - half]
            across = off if half == 0 else off.T  # (rows*V, cols*V)
            lse = torch.logaddexp(lse, torch.logsumexp(across, dim=1))
            per_other = _sum_views(
                across.view(n_rows, n_views, cols.stop - cols.start, n_views), dim=3
            )  # (rows, V, cols)
            total = total + (per_other * weights[rows, cols][:, None, :]).sum(dim=2).reshape(-1)
        row_sum.append(total)
        row_lse.append(lse)
    weighted_logits, lse = torch.cat(row_sum), torch.cat(row_lse)
    # |P(a)| = V * (number of positive images, own image included) - 1 (the anchor itself); the
    # weights' sum over p != a is V * sum_j w_ij - 1 (own image weight 1)
    n_positives = (positives.sum(dim=1) * n_views - 1).repeat_interleave(n_views)
    weight_sum = (weights.sum(dim=1) * n_views - 1).repeat_interleave(n_views)
    weighted = weighted_logits - lse * weight_sum
    per_anchor = -weighted / n_positives.clamp(min=1)
    has_positive = n_positives > 0
    if not bool(has_positive.any()):
        return z.sum() * 0.0
    return per_anchor[has_positive].mean()


def _similarity_blocks(
    z: torch.Tensor, split: int, temperature: float
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Blocks of the symmetric similarity matrix ``s = z z^T / T``, rows of ``z`` split at ``split``:
    ``([s_11, s_22], s_12)`` (the lower-left block is ``s_12`` transposed), or ``([s], None)`` when
    ``split`` covers every row."""
    first, second = z[:split], z[split:]
    if second.shape[0] == 0:
        return [(first @ first.T).div_(temperature)], None
    return [(first @ first.T).div_(temperature), (second @ second.T).div_(temperature)], (first @ second.T).div_(
        temperature
    )


def _sum_views(blocks: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over a (small) view dimension as ``V - 1`` additions of slices: a reduction over a size-2
    innermost dimension is about 10x slower on CPU than adding its two strided slices."""
    total = blocks.select(dim, 0)
    for view in range(1, blocks.shape[dim]):
        total = total + blocks.select(dim, view)
    return total
