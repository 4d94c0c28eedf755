"""MONAI transforms for pretraining (two augmented views) and downstream inputs.

Images are channel-first single-channel arrays ``(1, H, W)`` float32 in ``[0, 1]``; ``uint8``
input (e.g. a cache row) is read as ``x / 255``. The random resized crop converts only the cropped
pixels, so a cached ``uint8`` row gives exactly the views of its float32 ``x / 255`` with less work.

Pretraining (paper, Sec. "Implementation"; SimCLR-style ``TwoCropTransform``): each image gives
two views, each drawn independently from

1. random resized crop, scale ``[0.2, 1.0]`` (paper; the authors' code used torchvision's default
   0.08), aspect ratio ``[3/4, 4/3]``, resized to ``size`` x ``size`` (bilinear, antialiased);
2. horizontal flip with probability 0.5;
3. intensity jitter with probability 0.8: brightness and contrast factors in ``[0.6, 1.4]``
   applied in random order (torchvision ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` as in the SupCon
   reference code; saturation and hue are no-ops on one channel, and so is ``RandomGrayscale``).

Every random choice is drawn in ``randomize()`` from the transform's own ``self.R``
(``numpy.random.RandomState``), so ``set_random_state(seed)`` makes a whole pipeline repeatable.
Each custom transform exists as an array version and a ``d``-suffixed dictionary version.

Example::

    >>> t = two_view_transform(96)
    >>> t.set_random_state(seed=0)  # doctest: +ELLIPSIS
    <...>
    >>> out = t({"image": np.random.rand(1, 128, 128).astype("float32")})
    >>> out["view1"].shape, out["view2"].shape
    (torch.Size([1, 96, 96]), torch.Size([1, 96, 96]))
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    Randomizable,
    RandomizableTransform,
    Transform,
)
from monai.utils import MAX_SEED

from modan_pacs.errors import InputError, ModanPacsError
from modan_pacs.fileio import load_gray

__all__ = [
    "LoadGrayImage",
    "LoadGrayImaged",
    "RandIntensityJitter",
    "RandIntensityJitterd",
    "RandHorizontalFlip",
    "RandHorizontalFlipd",
    "RandResizedCrop",
    "RandResizedCropd",
    "ResizeImage",
    "ResizeImaged",
    "QuantizeUint8d",
    "TwoViewd",
    "quantize_uint8",
    "VIEW_DTYPES",
    "downstream_transform",
    "two_view_transform",
    "views_to_float",
]


def _as_chw_tensor(img: Any, name: str = "image", *, to_float: bool = True) -> torch.Tensor:
    """``img`` as a torch tensor ``(C, H, W)``; raises InputError on another rank.

    With ``to_float`` the result is float32, ``uint8`` scaled to ``[0, 1]`` (``x / 255``); without,
    the tensor keeps its dtype (no copy), for :func:`_to_float` after cropping.
    """
    t = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
    t = t.as_tensor() if hasattr(t, "as_tensor") else t  # MetaTensor -> plain tensor
    if t.ndim != 3:
        raise InputError(f"{name} must be channel-first (C, H, W); got shape {tuple(t.shape)}")
    return _to_float(t) if to_float else t


def _to_float(t: torch.Tensor) -> torch.Tensor:
    """float32 view of ``t``: ``uint8`` becomes ``x / 255`` (the same values as numpy's float32 ``x / 255.0``)."""
    if t.dtype == torch.float32:
        return t  # (no Tensor.to call: a few microseconds each, several per view)
    if t.dtype == torch.uint8:
        return t.to(torch.float32).div_(255.0)
    return t.to(torch.float32)


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(C, H, W)`` to ``(C, *size)``, antialiased when shrinking.

    (When enlarging, antialiasing changes nothing but costs a slower kernel, so it is skipped.)
    """
    if tuple(t.shape[-2:]) == tuple(size):
        return t.clone()
    shrink = t.shape[-2] > size[0] or t.shape[-1] > size[1]
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]


class RandResizedCrop(Randomizable, Transform):
    """Random crop of random area and aspect ratio, resized to ``size`` (torchvision's algorithm).

    The crop area is ``scale[0]..scale[1]`` of the image area and its aspect ratio is
    log-uniform in ``ratio``; after 10 failed attempts the largest centred crop within ``ratio``
    is used (as ``torchvision.transforms.RandomResizedCrop.get_params``).

    Args:
        size: output side (int) or ``(height, width)``.
        scale: bounds of the crop's fraction of the image area, ``0 < lo <= hi <= 1``.
        ratio: bounds of the crop's width / height.

    Input ``(C, H, W)`` float (or ``uint8``, read as ``x / 255``: only the crop is converted); output
    ``(C, size, size)`` float32 torch tensor. The crop is a view of the input (no copy) handed
    straight to one ``torch.nn.functional.interpolate`` call: crop and resize in one op. With
    ``levels=True`` the output is in grey levels (float32 in ``[0, 255]``): a ``uint8`` input is
    resized as it is (no division), a ``[0, 1]`` float input is scaled by 255; the uint8-view
    pipeline works in grey levels from crop to quantisation.

    Raises:
        ValueError: bad ``size``, ``scale`` or ``ratio``.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        levels: bool = False,
    ) -> None:
        self.levels = bool(levels)
        self.size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be a positive int or (height, width); got {size!r}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1; got {scale!r}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < lo <= hi; got {ratio!r}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self._box: tuple[int, int, int, int] = (0, 0, 1, 1)

    def randomize(self, spatial: tuple[int, int]) -> None:
        """Draw the crop box ``(top, left, height, width)`` for an image of ``spatial = (H, W)``."""
        height, width = spatial
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        draw = self.R.random_sample  # scalar U[0, 1) draws: ~7x cheaper per call than R.uniform / R.randint
        for _ in range(10):
            target_area = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * draw())
            aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draw())
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = min(int(draw() * (height - h + 1)), height - h)  # uniform integer in [0, height - h]
                left = min(int(draw() * (width - w + 1)), width - w)
                self._box = (top, left, h, w)
                return
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        self._box = ((height - h) // 2, (width - w) // 2, h, w)

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        t = _as_chw_tensor(img, to_float=False)
        if randomize:
            self.randomize((int(t.shape[-2]), int(t.shape[-1])))
        top, left, h, w = self._box
        crop = t[:, top : top + h, left : left + w]
        if self.levels:  # grey levels: uint8 as it is, [0, 1] floats scaled by 255
            crop = crop.to(torch.float32) if crop.dtype == torch.uint8 else crop.to(torch.float32) * 255.0
        else:
            crop = _to_float(crop)
        return _resize(crop, self.size)


class RandResizedCropd(Randomizable, MapTransform):
    """Dictionary version of :class:`RandResizedCrop`; one box is drawn and used for all ``keys``."""

    def __init__(
        self,
        keys: KeysCollection,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        allow_missing_keys: bool = False,
        levels: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = RandResizedCrop(size, scale, ratio, levels=levels)
        self.cropper.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandResizedCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(state=self.R)
        return self

    def randomize(self, spatial: tuple[int, int]) -> None:
        self.cropper.randomize(spatial)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = True
        for key in self.key_iterator(d):
            t = _as_chw_tensor(d[key], str(key), to_float=False)
            if first:
                self.randomize((int(t.shape[-2]), int(t.shape[-1])))
                first = False
            d[key] = self.cropper(t, randomize=False)
        return d


class RandIntensityJitter(RandomizableTransform):
    """With probability ``prob``, scale brightness and contrast by random factors, in random order.

    Brightness: ``x * b``; contrast: ``c * x + (1 - c) * mean(x)``; ``b`` uniform in
    ``[1 - brightness, 1 + brightness]``, ``c`` in ``[1 - contrast, 1 + contrast]``; the result is
    clipped to ``[0, 1]`` after each step (torchvision ``ColorJitter`` on a grey image); with
    ``max_value=255`` to ``[0, 255]``, for float images in grey levels (the uint8-view pipeline).

    Raises:
        ValueError: ``prob`` outside [0, 1] or a negative strength.
    """

    def __init__(
        self, prob: float = 0.8, brightness: float = 0.4, contrast: float = 0.4, max_value: float = 1.0
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1]; got {prob}")
        if brightness < 0 or contrast < 0:
            raise ValueError(f"brightness and contrast must be >= 0; got {brightness}, {contrast}")
        RandomizableTransform.__init__(self, prob)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.max_value = float(
            max_value
        )  # the clipping range is [0, max_value]: 1 for [0, 1] images, 255 for grey levels
        self._factors = (1.0, 1.0)
        self._order = (0, 1)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)  # draws self._do_transform with probability prob
        if not self._do_transform:
            return
        b = 1 - self.brightness + 2 * self.brightness * self.R.random_sample()  # U[1 - brightness, 1 + brightness]
        c = 1 - self.contrast + 2 * self.contrast * self.R.random_sample()
        self._factors = (float(b), float(c))
        self._order = (1, 0) if self.R.random_sample() < 0.5 else (0, 1)  # a random order of the two steps

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        t = _as_chw_tensor(img)
        if randomize:
            self.randomize()
        if not self._do_transform:
            return t.clone()
        b, c = self._factors
        out = None  # the first step writes a new tensor (the input is never modified), the second works in place
        for op in self._order:
            src = t if out is None else out
            if op == 0:
                out = torch.mul(src, b, out=out).clamp_(0.0, self.max_value)
            else:  # c * x + (1 - c) * mean(x) = lerp(mean, x, c): one pass
                out = torch.lerp(src.mean(), src, c, out=out).clamp_(0.0, self.max_value)
        return out


class RandIntensityJitterd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandIntensityJitter`; the same draw is used for all ``keys``."""

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        allow_missing_keys: bool = False,
        max_value: float = 1.0,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.jitter = RandIntensityJitter(prob, brightness, contrast, max_value)
        self.jitter.set_random_state(state=self.R)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandIntensityJitterd:
        super().set_random_state(seed, state)
        self.jitter.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self.jitter.randomize()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.jitter(d[key], randomize=False)
        return d


class RandHorizontalFlip(RandomizableTransform):
    """Flip ``(C, H, W)`` left-right (last axis) with probability ``prob``.

    Same result and the same random draw as MONAI ``RandFlip(prob, spatial_axis=1)`` (a test
    checks both), kept because it is the one transform called twice per image: on a ``(1, 96, 96)``
    tensor, one CPU thread, MONAI 1.6.1, ``RandFlip`` takes about 1 ms per call with MetaTensor
    tracking and 79 us with ``monai.data.set_track_meta(False)`` (a process-wide switch), this 8 us.
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1]; got {prob}")
        RandomizableTransform.__init__(self, prob)

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        t = _as_chw_tensor(img)
        if randomize:
            self.randomize(None)
        return torch.flip(t, dims=[-1]) if self._do_transform else t


class RandHorizontalFlipd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandHorizontalFlip`; one draw for all ``keys``."""

    def __init__(self, keys: KeysCollection, prob: float = 0.5, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.flipper = RandHorizontalFlip(prob)
        self.flipper.set_random_state(state=self.R)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandHorizontalFlipd:
        super().set_random_state(seed, state)
        self.flipper.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self.flipper.randomize(None)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.flipper(d[key], randomize=False)
        return d


class TwoViewd(Randomizable, MapTransform):
    """Apply a random view transform twice to ``keys`` (one key), storing the views in ``view_keys``.

    Args:
        keys: the source image key (default ``"image"``), ``(1, S, S)`` float32 in ``[0, 1]``.
        view_transform: a dictionary transform acting on ``{"image": ...}``; it is called twice,
            so its random draws differ between the two views.
        view_keys: names of the two outputs.
        drop_source: remove the source key from the output (saves memory in a DataLoader).

    ``set_random_state`` gives the view transform's randomizable parts this transform's one
    ``RandomState`` (a single stream, drawn in a fixed order), so both views are reproducible and
    re-seeding per sample costs one generator, not one per sub-transform.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        view_transform: Any = None,
        view_keys: tuple[str, str] = ("view1", "view2"),
        drop_source: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 1:
            raise ValueError(f"TwoViewd takes one source key; got {self.keys}")
        if view_transform is None:
            raise ValueError("TwoViewd needs a view_transform (see two_view_transform)")
        if len(view_keys) != 2:
            raise ValueError(f"view_keys must name two outputs; got {view_keys!r}")
        self.view_transform = view_transform
        self.view_keys = tuple(view_keys)
        self.drop_source = drop_source

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TwoViewd:
        children = [
            c for c in getattr(self.view_transform, "transforms", [self.view_transform]) if isinstance(c, Randomizable)
        ]
        own = getattr(self, "_own_state", None)
        if (
            state is None
            and isinstance(seed, (int, np.integer))
            and own is not None
            and self.R is own
            and all(child.R is own for child in children)
        ):
            # re-seed the generator we created in place: the same stream as MONAI's
            # ``np.random.RandomState(seed % MAX_SEED)``, without building a new one per sample (~0.1 ms)
            own.seed(int(np.int64(seed) % MAX_SEED))
            return self
        super().set_random_state(seed, state)
        self._own_state = self.R if seed is not None and state is None else None  # never re-seed a caller's state
        for child in children:
            child.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        """The views' randomness is drawn by the view transform's own ``randomize()``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        (key,) = self.keys
        if key not in d:
            raise InputError(f"TwoViewd: record has no {key!r} key (keys: {sorted(map(str, d))})")
        for view_key in self.view_keys:
            d[view_key] = self.view_transform({"image": d[key]})["image"]
        if self.drop_source:
            del d[key]
        return d


class _Compose(Compose):
    """``Compose`` that re-raises our own errors (``InputError`` ...) instead of MONAI's RuntimeError wrapper."""

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as exc:
            cause = exc.__cause__
            while cause is not None and not isinstance(cause, ModanPacsError):
                cause = cause.__cause__
            if cause is not None:
                raise cause from None
            raise


class _ViewPipeline(_Compose):
    """The per-view ``Compose``: on a dictionary it calls its (eager, non-lazy) transforms in order.

    That is what MONAI's ``execute_compose`` does for a dictionary with ``lazy=False``, without its
    per-transform lazy-resampling bookkeeping (about 0.1 ms per view, a quarter of a view's cost; MONAI 1.6.1).
    Anything else (lists, lazy mode, ``start``/``end``) goes through MONAI's ``Compose``.
    """

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if args or kwargs or not isinstance(input_, Mapping) or self.lazy:
            return super().__call__(input_, *args, **kwargs)
        data = input_
        for transform in self.transforms:
            data = transform(data)
        return data


class QuantizeUint8d(MapTransform):
    """``[0, 1]`` float images to ``uint8`` ``round(255 x)`` (clipped): 4x fewer bytes to move.

    Used at the end of the view pipeline with ``view_dtype="uint8"``: DataLoader workers hand the
    main process uint8 views and :func:`views_to_float` turns them into ``x / 255`` float32 on the
    training device. The views differ from the float32 ones by at most half a grey level
    (``0.5 / 255``), the quantisation torchvision's PIL pipeline applies after every step anyway.
    """

    def __init__(self, keys: KeysCollection, max_value: float = 1.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_value = float(max_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = quantize_uint8(_as_chw_tensor(d[key], str(key), to_float=False), self.max_value)
        return d


def quantize_uint8(t: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """``[0, max_value]`` floats to ``uint8`` ``round(255 x / max_value)``, clipped (``uint8`` input is
    returned as is); ``max_value=255`` for images already in grey levels (no scaling pass).

    The float -> uint8 cast goes through NumPy: ``Tensor.to(torch.uint8)`` is about 7x slower on
    CPU for a 224 x 224 view (35 vs 5 microseconds), and the values are whole numbers in [0, 255]
    by then, so the two casts agree.
    """
    if t.dtype == torch.uint8:
        return t
    scaled = t if t.dtype == torch.float32 else t.to(torch.float32)
    scaled = scaled.round() if max_value == 255.0 else scaled.mul(255.0 / max_value).round_()
    scaled.clamp_(0.0, 255.0)
    if scaled.device.type != "cpu":
        return scaled.to(torch.uint8)
    return torch.from_numpy(scaled.numpy().astype(np.uint8))


VIEW_DTYPES = ("float32", "uint8")


def views_to_float(
    views: torch.Tensor, device: torch.device | str | None = None, *, channels_last: bool = False
) -> torch.Tensor:
    """A batch of views as float32 in ``[0, 1]`` on ``device``: ``uint8`` is moved first (4x fewer
    bytes over PCIe), then read as ``x / 255``; float views are only moved."""
    if device is not None:
        views = views.to(device, non_blocking=True)
    views = views.to(torch.float32).div_(255.0) if views.dtype == torch.uint8 else views.to(torch.float32)
    return views.contiguous(memory_format=torch.channels_last) if channels_last else views


def _view_pipeline(
    size: int, scale: tuple[float, float], flip_prob: float, jitter_prob: float, view_dtype: str = "float32"
) -> Compose:
    if view_dtype not in VIEW_DTYPES:
        raise ValueError(f"view_dtype must be one of {', '.join(VIEW_DTYPES)}; got {view_dtype!r}")
    if view_dtype == "uint8":  # grey levels 0..255 (float32) from the crop on, rounded to uint8 at the end
        return _ViewPipeline(
            [
                RandResizedCropd("image", size=size, scale=scale, levels=True),
                RandHorizontalFlipd("image", prob=flip_prob),
                RandIntensityJitterd("image", prob=jitter_prob, max_value=255.0),
                QuantizeUint8d("image", max_value=255.0),
            ]
        )
    return _ViewPipeline(
        [
            RandResizedCropd("image", size=size, scale=scale),
            RandHorizontalFlipd("image", prob=flip_prob),
            RandIntensityJitterd("image", prob=jitter_prob),
            EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


def two_view_transform(
    size: int,
    scale: tuple[float, float] = (0.2, 1.0),
    flip_prob: float = 0.5,
    jitter_prob: float = 0.8,
    *,
    drop_source: bool = False,
    view_dtype: str = "float32",
) -> TwoViewd:
    """The paper's pretraining augmentation as a MONAI dictionary transform.

    ``{"image": (1, S, S) float32 in [0, 1]}`` -> adds ``"view1"``, ``"view2"``: ``(1, size, size)``
    float32 torch tensors in ``[0, 1]``, each from an independent random resized crop (``scale``),
    horizontal flip (``flip_prob``) and intensity jitter (``jitter_prob``). With
    ``view_dtype="uint8"`` the views are quantised to ``uint8`` (``round(255 x)``) at the end, for
    cheap transport out of DataLoader workers (see :func:`views_to_float`). Call
    ``set_random_state(seed=...)`` for repeatable draws.

    Raises:
        ValueError: ``size`` < 1, bad ``scale``, probabilities outside [0, 1] or an unknown ``view_dtype``.
    """
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1]; got {flip_prob}")
    return TwoViewd("image", _view_pipeline(size, scale, flip_prob, jitter_prob, view_dtype), drop_source=drop_source)


def _read_gray(path: Path) -> np.ndarray:
    try:
        arr = load_gray(path).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
    return arr[None] / 255.0


class LoadGrayImage(Transform):
    """Read a PNG/JPG/... file as ``(1, H, W)`` float32 in ``[0, 1]`` (colour -> luminance, PIL ``L``).

    Rows stay rows (no MONAI reader transposition). Raises InputError for a missing/unreadable file.
    """

    def __call__(self, path: str | Path) -> np.ndarray:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        return _read_gray(path)


class LoadGrayImaged(MapTransform):
    """Dictionary version of :class:`LoadGrayImage`: replaces a path under ``keys`` with its pixels.

    Values that are already arrays/tensors are passed through unchanged.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadGrayImage()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)):
                d[key] = self.loader(d[key])
        return d


class ResizeImage(Transform):
    """Resize ``(C, H, W)`` to ``(C, size, size)`` (bilinear, antialiased), float32 torch tensor."""

    def __init__(self, size: int) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        self.size = (int(size), int(size))

    def __call__(self, img: Any) -> torch.Tensor:
        return _resize(_as_chw_tensor(img), self.size)


class ResizeImaged(MapTransform):
    """Dictionary version of :class:`ResizeImage`."""

    def __init__(self, keys: KeysCollection, size: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = ResizeImage(size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer(d[key])
        return d


class _DownstreamTransform(_Compose):
    """Compose that also accepts a bare path (str/Path) and wraps it as ``{"image": path}``."""

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(input_, (str, Path)):
            input_ = {"image": input_}
        return super().__call__(input_, *args, **kwargs)


def downstream_transform(size: int = 224) -> Compose:
    """Downstream input transform (paper: inputs resized to 224): deterministic, no augmentation.

    Accepts ``{"image": (1, H, W) float32 in [0, 1]}``, ``{"image": "path/to/file.png"}`` or a bare
    path of a PNG/JPG; returns the dictionary with ``"image"`` as a ``(1, size, size)`` float32
    torch tensor.

    Raises:
        InputError: a path that does not exist or cannot be decoded.
    """
    return _DownstreamTransform(
        [
            LoadGrayImaged("image"),
            ResizeImaged("image", size=size),
            EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )
