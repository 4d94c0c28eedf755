"""The pretraining two-view augmentation, batched on the training device (``data.augment_on=device``).

The CPU path (:func:`~modan_pacs.data.transforms.two_view_transform`) augments one sample at a
time in the DataLoader workers: about 0.7 ms per sample at 64 px on one core, growing with the
square of the view size, so at 224 px a fast GPU trains faster than a few cores can augment. Here
the workers hand over the cached ``uint8`` images and the same three steps run on the whole batch
on the device:

1. random resized crop: the crop boxes are drawn with torchvision's algorithm (area fraction
   uniform in ``scale``, aspect ratio log-uniform in ``ratio``, 10 attempts, then the largest
   centred crop within ``ratio``), exactly as :class:`~modan_pacs.data.transforms.RandResizedCrop`;
   the pixels are resampled with ``torchvision.ops.roi_align`` (``aligned=True``: the same sample
   positions as ``F.interpolate(..., align_corners=False)`` on the crop; when shrinking it averages
   ``ceil(crop / size)`` bilinear samples per output pixel, a box filter where the CPU path uses
   ``antialias=True``'s triangle filter);
2. horizontal flip with probability ``flip_prob``;
3. with probability ``jitter_prob``, brightness ``x * b`` and contrast ``c x + (1 - c) mean(x)``
   with ``b, c`` uniform in ``[1 - 0.4, 1 + 0.4]`` applied in random order, clipped to ``[0, 1]``
   after each step.

Randomness: every number is drawn on the CPU from a ``torch.Generator`` seeded with
:func:`~modan_pacs.data.datasets.sample_seed` ``(seed, epoch, row)``: a fixed block of
:data:`DRAWS_PER_VIEW` uniforms per view, drawn in the DataLoader workers (:class:`ViewUniformsd`)
and turned into boxes and factors for the whole batch in the main process, so a sample's two
views depend only on those three numbers (not on the batch it lands in, the rank, the number of
workers, or the device). The draws
are a different stream from the CPU path's ``numpy`` ``RandomState`` (the two paths give different
views of the same sample) but follow the same distributions (tested with two-sample KS tests).
Only the ``(B, 2, ...)`` parameters and the ``uint8`` images cross to the device.

Example::

    >>> aug = BatchTwoViewAugment(size=32, seed=0)
    >>> batch = {"image": torch.zeros(4, 1, 64, 64, dtype=torch.uint8), "index": torch.arange(4),
    ...          "epoch": torch.zeros(4, dtype=torch.int64), "labels": torch.zeros(4, 3)}
    >>> out = aug(batch, torch.device("cpu"))
    >>> out["view1"].shape, out["view1"].dtype, "image" in out
    (torch.Size([4, 1, 32, 32]), torch.float32, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from modan_pacs.errors import InputError

__all__ = [
    "DRAWS_PER_VIEW",
    "BatchTwoViewAugment",
    "ViewParams",
    "ViewUniformsd",
    "apply_view_params",
    "draw_view_params",
    "params_from_uniforms",
    "view_uniforms",
]

ATTEMPTS = 10
"""Crop attempts before the centred fallback (torchvision's ``RandomResizedCrop.get_params``)."""
# layout of one view's uniforms: [area x10, log-ratio x10, top, left, flip, jitter?, b, c, order]
_AREA, _RATIO = slice(0, ATTEMPTS), slice(ATTEMPTS, 2 * ATTEMPTS)
_TOP, _LEFT, _FLIP, _JITTER, _B, _C, _ORDER = range(2 * ATTEMPTS, 2 * ATTEMPTS + 7)
DRAWS_PER_VIEW = 2 * ATTEMPTS + 7


@dataclass
class ViewParams:
    """The random choices of ``V`` views of ``B`` samples (all ``(B, V)``, boxes ``(B, V, 4)``)."""

    boxes: torch.Tensor
    """``(top, left, height, width)`` in pixels of the source image, int64."""
    flip: torch.Tensor
    """Horizontal flip, bool."""
    jitter: torch.Tensor
    """Intensity jitter applied, bool."""
    brightness: torch.Tensor
    """Brightness factor ``b`` (used where ``jitter``), float32."""
    contrast: torch.Tensor
    """Contrast factor ``c`` (used where ``jitter``), float32."""
    contrast_first: torch.Tensor
    """Order of the two jitter steps: contrast before brightness, bool."""

    def to(self, device: torch.device | str) -> ViewParams:
        return ViewParams(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


def _check(
    scale: Sequence[float],
    ratio: Sequence[float],
    flip_prob: float,
    jitter_prob: float,
    brightness: float,
    contrast: float,
) -> None:
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1; got {tuple(scale)!r}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must satisfy 0 < lo <= hi; got {tuple(ratio)!r}")
    for name, p in (("flip_prob", flip_prob), ("jitter_prob", jitter_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {p}")
    if brightness < 0 or contrast < 0:
        raise ValueError(f"brightness and contrast must be >= 0; got {brightness}, {contrast}")


def _fallback_box(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """The largest centred crop within ``ratio`` (torchvision's fallback after 10 failed attempts)."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def view_uniforms(seed: int, views: int = 2) -> torch.Tensor:
    """The ``(views, DRAWS_PER_VIEW)`` float64 uniforms of one sample: ``torch.Generator().manual_seed(seed)``."""
    return torch.rand((views, DRAWS_PER_VIEW), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


def draw_view_params(seeds: Sequence[int], spatial: tuple[int, int], *, views: int = 2, **options: Any) -> ViewParams:
    """Draw the augmentation of ``views`` views for each seed (one sample per seed), on the CPU.

    ``seeds``: one 32-bit seed per sample (:func:`~modan_pacs.data.datasets.sample_seed`);
    ``options``: the keyword arguments of :func:`params_from_uniforms`.
    """
    return params_from_uniforms(torch.stack([view_uniforms(s, views) for s in seeds]), spatial, **options)


def params_from_uniforms(
    u: torch.Tensor,
    spatial: tuple[int, int],
    *,
    scale: Sequence[float] = (0.2, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
    jitter_prob: float = 0.8,
    brightness: float = 0.4,
    contrast: float = 0.4,
) -> ViewParams:
    """Turn ``(B, V, DRAWS_PER_VIEW)`` uniforms (:func:`view_uniforms`) into view parameters, vectorised.

    Args:
        u: float64 uniforms in ``[0, 1)``.
        spatial: ``(H, W)`` of the source images.

    Raises:
        ValueError: bad ``scale``, ``ratio``, probabilities or strengths, or ``u`` of another shape.
    """
    _check(scale, ratio, flip_prob, jitter_prob, brightness, contrast)
    if u.ndim != 3 or u.shape[-1] != DRAWS_PER_VIEW:
        raise ValueError(f"uniforms must be (B, V, {DRAWS_PER_VIEW}); got {tuple(u.shape)}")
    u = u.to(torch.float64)
    height, width = int(spatial[0]), int(spatial[1])
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., _AREA])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., _RATIO])
    w_try = torch.round(torch.sqrt(target_area * aspect)).long()  # round half to even, as Python's round
    h_try = torch.round(torch.sqrt(target_area / aspect)).long()
    fits = (w_try > 0) & (w_try <= width) & (h_try > 0) & (h_try <= height)  # (B, V, ATTEMPTS)
    first = fits.to(torch.uint8).argmax(
        dim=-1, keepdim=True
    )  # first fitting attempt (argmax returns the first maximum)
    h = h_try.gather(-1, first)[..., 0]
    w = w_try.gather(-1, first)[..., 0]
    top = torch.minimum((u[..., _TOP] * (height - h + 1)).long(), height - h)  # uniform integer in [0, H - h]
    left = torch.minimum((u[..., _LEFT] * (width - w + 1)).long(), width - w)
    boxes = torch.stack([top, left, h, w], dim=-1)
    found = fits.any(dim=-1)
    if not bool(found.all()):
        boxes = torch.where(
            found[..., None], boxes, torch.tensor(_fallback_box(height, width, ratio), dtype=torch.long)
        )
    return ViewParams(
        boxes=boxes,
        flip=u[..., _FLIP] < flip_prob,
        jitter=u[..., _JITTER] < jitter_prob,
        brightness=(1 - brightness + 2 * brightness * u[..., _B]).float(),
        contrast=(1 - contrast + 2 * contrast * u[..., _C]).float(),
        contrast_first=u[..., _ORDER] < 0.5,
    )


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


def apply_view_params(images: torch.Tensor, params: ViewParams, size: int) -> torch.Tensor:
    """Crop, resize, flip and jitter a batch: ``(B, C, H, W)`` -> ``(B, V, C, size, size)`` float32 in ``[0, 1]``.

    ``images`` is ``uint8`` (read as ``x / 255``) or float in ``[0, 1]``, on the device where the
    work should run; ``params`` must be on the same device.

    Raises:
        InputError: ``images`` is not 4-D or its batch differs from ``params``.
    """
    from torchvision.ops import roi_align

    if images.ndim != 4:
        raise InputError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    n, views = params.flip.shape
    if images.shape[0] != n:
        raise InputError(f"images has batch {images.shape[0]} but the view parameters have {n}")
    x = _as_float(images)
    boxes = params.boxes.reshape(n * views, 4).to(torch.float32)
    top, left, h, w = boxes.unbind(-1)
    sample = torch.arange(n, device=x.device, dtype=torch.float32).repeat_interleave(views)
    rois = torch.stack([sample, left, top, left + w, top + h], dim=-1)  # (B*V, 5): batch index, x1, y1, x2, y2
    out = roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    out = out.reshape(n, views, *out.shape[1:])  # (B, V, C, size, size)

    def per_view(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(n, views, 1, 1, 1)

    out = torch.where(per_view(params.flip), out.flip(-1), out)
    b, c = per_view(params.brightness), per_view(params.contrast)

    def bright(t: torch.Tensor) -> torch.Tensor:
        return (t * b).clamp_(0.0, 1.0)

    def contrast(t: torch.Tensor) -> torch.Tensor:  # c * x + (1 - c) * mean(x), the mean over (C, H, W) of each view
        return torch.lerp(t.mean(dim=(-3, -2, -1), keepdim=True).expand_as(t), t, c).clamp_(0.0, 1.0)

    jittered = torch.where(per_view(params.contrast_first), bright(contrast(out)), contrast(bright(out)))
    return torch.where(per_view(params.jitter), jittered, out)


class ViewUniformsd:
    """Record transform of the DataLoader workers (``augment_on=device``): adds ``"uniforms"``, the
    ``(2, DRAWS_PER_VIEW)`` float64 random numbers of the sample's two views.

    :class:`~modan_pacs.data.datasets.CacheRecordDataset` calls ``set_random_state(seed=...)`` with
    ``sample_seed(seed, epoch, row)`` before each sample, so the numbers are exactly those
    :meth:`BatchTwoViewAugment.params` would draw for that row and epoch, and the main process
    only turns them into boxes and factors (vectorised) instead of seeding a generator per sample.

    Raises:
        ValueError: called before ``set_random_state(seed=...)``.
    """

    def __init__(self, views: int = 2) -> None:
        self.views = int(views)
        self._seed: int | None = None

    def set_random_state(self, seed: int | None = None, state: Any = None) -> ViewUniformsd:
        if seed is None:
            raise ValueError("ViewUniformsd is seeded per sample: set_random_state(seed=sample_seed(seed, epoch, row))")
        self._seed = int(seed)
        return self

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if self._seed is None:
            raise ValueError("ViewUniformsd needs set_random_state(seed=...) before each sample")
        return {**record, "uniforms": view_uniforms(self._seed, self.views)}


class BatchTwoViewAugment:
    """The two-view augmentation of a batch of cached images, on the training device.

    Args:
        size: side of the square views.
        seed: base seed; sample ``row`` of epoch ``epoch`` is seeded with ``sample_seed(seed, epoch, row)``.
        scale, ratio, flip_prob, jitter_prob, brightness, contrast: as the CPU path
            (:func:`~modan_pacs.data.transforms.two_view_transform`).

    Raises:
        ValueError: bad ``size`` or augmentation parameters.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
    ) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        _check(scale, ratio, flip_prob, jitter_prob, brightness, contrast)
        self.size = int(size)
        self.seed = int(seed)
        self.options = {
            "scale": tuple(map(float, scale)),
            "ratio": tuple(map(float, ratio)),
            "flip_prob": float(flip_prob),
            "jitter_prob": float(jitter_prob),
            "brightness": float(brightness),
            "contrast": float(contrast),
        }

    def params(self, rows: Sequence[int], epochs: Sequence[int], spatial: tuple[int, int]) -> ViewParams:
        """The two views' parameters of cache ``rows`` drawn at ``epochs`` (CPU tensors)."""
        from modan_pacs.data.datasets import sample_seed

        seeds = [sample_seed(self.seed, e, r) for e, r in zip(epochs, rows)]
        return draw_view_params(seeds, spatial, views=2, **self.options)

    def __call__(self, batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
        """``{"image": (B, 1, S, S) uint8, "uniforms": (B, 2, DRAWS_PER_VIEW), ...}`` (the loader's
        batches; or ``"index"`` and ``"epoch"`` instead of ``"uniforms"``, to draw them here) -> the
        same batch with ``"view1"``, ``"view2"`` ``(B, 1, size, size)`` float32 in ``[0, 1]`` on
        ``device`` instead of ``"image"`` and ``"uniforms"``.

        Raises:
            InputError: the batch lacks ``image``, or both ``uniforms`` and ``index`` / ``epoch``
                (a loader built with ``augment_on="device"`` provides them).
        """
        need = ("image", "uniforms") if "uniforms" in batch else ("image", "index", "epoch")
        missing = [k for k in need if k not in batch]
        if missing:
            raise InputError(
                f"device augmentation needs batch keys {missing} (build the loader with augment_on='device')"
            )
        images = batch["image"]
        spatial = (int(images.shape[-2]), int(images.shape[-1]))
        if "uniforms" in batch:
            params = params_from_uniforms(batch["uniforms"], spatial, **self.options)
        else:
            params = self.params(batch["index"].tolist(), batch["epoch"].tolist(), spatial)
        views = apply_view_params(images.to(device, non_blocking=True), params.to(device), self.size)
        out = {k: v for k, v in batch.items() if k not in ("image", "uniforms")}
        out["view1"], out["view2"] = views[:, 0], views[:, 1]
        return out
