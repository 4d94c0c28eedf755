"""Decode DICOM pixels to display-ready grey images in ``[0, 1]``.

Per image, in this order (DICOM PS3.3 C.7.6.3, C.11.1, C.11.2):

1. decode the stored frames with pydicom and its pixel plugins (native, RLE, JPEG baseline /
   extended / lossless, JPEG-LS, JPEG 2000 via pylibjpeg-libjpeg / -openjpeg / -rle); YBR is
   converted to RGB by pydicom; ``PALETTE COLOR`` goes through its colour LUT;
2. colour (RGB, e.g. ultrasound) -> grey with ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``;
   grey images get the modality LUT / rescale slope and intercept (CT: Hounsfield units);
3. display mapping to ``[0, 1]``, first that applies:
   an explicit window ``(center, width)`` (CT: per anatomy, :mod:`modan_pacs.pixels.windows`);
   the header's VOI LUT Sequence; the header's first Window Center / Width (VOI LUT Function
   LINEAR, LINEAR_EXACT or SIGMOID); for images of at most 8 stored bits without rescale (and
   for colour) the full stored range ``x / (2**BitsStored - 1)``; else the frame's min..max;
4. ``MONOCHROME1`` is inverted (``1 - x``) so that bright always means high signal.

Series volumes (single-frame CT/MR/PT/NM instances of one series) are ordered by their position
along the slice normal and assembled with SimpleITK's ``ImageSeriesReader``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modan_pacs.errors import InputError

__all__ = [
    "DecodedFrames",
    "apply_window",
    "display_frames",
    "fit_square",
    "order_series",
    "read_dicom_frames",
    "read_series_slices",
    "rgb_to_gray",
    "select_slices",
    "parse_slice_policy",
]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion


@dataclass
class DecodedFrames:
    """Decoded frames of one DICOM object (or a series), before display mapping.

    Attributes:
        frames: ``(F, H, W)`` float64: modality values (grey) or luma (colour).
        frame_indices: the frame (or slice position) index of each frame.
        headers: one pydicom Dataset per frame (without pixel data), for VOI and photometric tags.
        is_color: the stored pixels were colour (no modality LUT, range = stored bit depth).
    """

    frames: np.ndarray
    frame_indices: list[int]
    headers: list
    is_color: bool


def parse_slice_policy(policy: str) -> tuple[str, int]:
    """``"middle"`` -> ("middle", 1); ``"even:N"`` -> ("even", N); ``"all"`` -> ("all", 0).

    Raises:
        InputError: any other text.
    """
    text = str(policy).strip().lower()
    if text in ("middle", "all"):
        return text, 1 if text == "middle" else 0
    if text.startswith("even:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            n = 0
        if n >= 1:
            return "even", n
    raise InputError(f"slice policy {policy!r} is not one of: middle, even:N (N >= 1), all")


def select_slices(n_frames: int, policy: str) -> list[int]:
    """Indices of the frames kept from ``n_frames`` by ``policy``.

    ``middle``: ``n // 2``; ``even:N``: the centres of N equal bins, ``floor((i + 0.5) n / N)``
    (all frames when ``N >= n``), which avoids the often empty first and last slices; ``all``.
    """
    kind, n = parse_slice_policy(policy)
    if n_frames < 1:
        return []
    if kind == "middle":
        return [n_frames // 2]
    if kind == "all" or n >= n_frames:
        return list(range(n_frames))
    return [int(math.floor((i + 0.5) * n_frames / n)) for i in range(n)]


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB -> ``(...)`` float64 luma (BT.601 weights)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * LUMA_WEIGHTS[0] + rgb[..., 1] * LUMA_WEIGHTS[1] + rgb[..., 2] * LUMA_WEIGHTS[2]


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window ``values`` to ``[0, 1]`` (DICOM PS3.3 C.11.2.1.2-3, output range normalised).

    LINEAR: 0 where ``x <= c - 0.5 - (w - 1) / 2``, 1 where ``x > c - 0.5 + (w - 1) / 2``, else
    ``((x - (c - 0.5)) / (w - 1) + 0.5)``. LINEAR_EXACT: ``(x - c) / w + 0.5`` clipped.
    SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``.

    Raises:
        InputError: width below 1 (LINEAR) or not positive.
    """
    x = np.asarray(values, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise InputError(f"window width must be > 0; got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise InputError(f"window width must be > 0; got {width}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise InputError(f"window width must be >= 1 for a LINEAR window; got {width}")
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value) -> float:
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)


def _display_one(frame: np.ndarray, ds, window: tuple[float, float] | None, is_color: bool, raw: np.ndarray | None) -> np.ndarray:
    """Map one frame of modality values to ``[0, 1]`` (see module docstring, step 3-4)."""
    bits = int(ds.get("BitsStored", 8) or 8)
    if window is not None:
        out = apply_window(frame, window[0], window[1])
    elif not is_color and "VOILUTSequence" in ds and raw is not None:
        from pydicom.pixels import apply_voi_lut

        item = ds.VOILUTSequence[0]
        lut_bits = int(item.LUTDescriptor[2])
        out = np.asarray(apply_voi_lut(raw, ds, index=0, prefer_lut=True), dtype=np.float64) / (2**lut_bits - 1)
        out = np.clip(out, 0.0, 1.0)
    elif not is_color and ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        out = apply_window(frame, _first(ds.WindowCenter), _first(ds.WindowWidth), str(ds.get("VOILUTFunction", "LINEAR")))
    elif is_color or (bits <= 8 and "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds):
        out = np.clip(frame / (2**bits - 1), 0.0, 1.0)
    else:
        lo, hi = float(frame.min()), float(frame.max())
        out = (frame - lo) / (hi - lo) if hi > lo else np.zeros_like(frame, dtype=np.float64)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 1.0 - out
    return out


def display_frames(decoded: DecodedFrames, window: tuple[float, float] | None = None, raw: list | None = None) -> np.ndarray:
    """``(F, H, W)`` float64 in ``[0, 1]`` from :func:`read_dicom_frames` output.

    Args:
        decoded: frames with their headers.
        window: explicit ``(center, width)`` overriding the header's VOI (CT window per anatomy).
        raw: the stored values per frame (needed only for a VOI LUT Sequence).
    """
    out = np.empty(decoded.frames.shape, dtype=np.float64)
    for i, (frame, ds) in enumerate(zip(decoded.frames, decoded.headers, strict=True)):
        out[i] = _display_one(frame, ds, window, decoded.is_color, None if raw is None else raw[i])
    return out


def read_dicom_frames(path: str | Path, frames: Sequence[int] | str | None = None) -> tuple[DecodedFrames, list[np.ndarray]]:
    """Decode chosen frames of one DICOM file to modality values (grey) or luma (colour).

    Args:
        path: the DICOM file.
        frames: frame indices, a slice policy (``"middle"``, ``"even:N"``, ``"all"``) or None (all).

    Returns:
        ``(decoded, raw)``: :class:`DecodedFrames` and the stored (pre-LUT) arrays per frame.

    Raises:
        InputError: not DICOM, no pixel data, undecodable pixel data (message names file and cause).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, iter_pixels

    path = Path(path)
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({' '.join(str(exc).split())[:200]})") from None
    if "Rows" not in header or "Columns" not in header:
        raise InputError(f"{path}: no image (Rows/Columns absent; SOP class {header.get('SOPClassUID', '?')})")
    n_frames = int(header.get("NumberOfFrames", 1) or 1)
    if frames is None:
        indices = list(range(n_frames))
    elif isinstance(frames, str):
        indices = select_slices(n_frames, frames)
    else:
        indices = [int(i) for i in frames]
        bad = [i for i in indices if not 0 <= i < n_frames]
        if bad:
            raise InputError(f"{path}: frames {bad} out of range (file has {n_frames})")
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    try:
        arrays = list(iter_pixels(path, indices=indices if n_frames > 1 else None))
    except Exception as exc:  # pydicom raises many types for bad or unsupported pixel data
        cause = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if samples != 1:
            raise InputError(f"{path}: cannot decode pixel data ({cause})") from None
        # GDCM (inside SimpleITK) tolerates some malformed JPEG streams every pydicom plugin refuses,
        # e.g. 12-bit extended JPEG with bad SOS parameters, common in older CT/MR archives
        arrays = _stored_values_with_simpleitk(path, header, n_frames, indices, cause)
    if n_frames == 1 and indices != [0]:
        raise InputError(f"{path}: frames {indices} out of range (file has 1)")
    is_color = samples == 3 or photometric == "PALETTE COLOR"
    out, raw = [], []
    for arr in arrays:
        raw.append(arr)
        if photometric == "PALETTE COLOR":
            out.append(rgb_to_gray(apply_color_lut(arr, header)))
        elif samples == 3:
            out.append(rgb_to_gray(arr))
        else:
            out.append(np.asarray(apply_modality_lut(arr, header), dtype=np.float64))
    stacked = np.stack(out).astype(np.float64)
    if photometric == "PALETTE COLOR":
        # the LUT entries' bit depth sets the range of the looked-up colours
        header = header.copy()
        header.BitsStored = int(header.RedPaletteColorLookupTableDescriptor[2])
    return DecodedFrames(stacked, indices, [header] * len(indices), is_color), raw


def _stored_values_with_simpleitk(path: Path, header, n_frames: int, indices: list[int], cause: str) -> list[np.ndarray]:
    """Stored (pre-modality-LUT) values of a grey image decoded by GDCM through SimpleITK.

    GDCM applies RescaleSlope / RescaleIntercept; they are undone here so the caller applies the
    modality LUT once, as for pydicom's arrays. Raises InputError naming both decoders' errors.
    """
    import SimpleITK as sitk

    try:
        values = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise InputError(
            f"{path}: cannot decode pixel data (pydicom: {cause}; SimpleITK/GDCM: {' '.join(str(exc).split())[:120]})"
        ) from None
    rows, columns = int(header.Rows), int(header.Columns)
    if values.size != n_frames * rows * columns:
        raise InputError(f"{path}: cannot decode pixel data (pydicom: {cause}; SimpleITK/GDCM gave {values.shape})")
    values = values.reshape(n_frames, rows, columns)
    slope = float(header.get("RescaleSlope", 1) or 1)
    intercept = float(header.get("RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        values = np.rint((values.astype(np.float64) - intercept) / slope)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(1, int(header.get('BitsAllocated', 16) or 16) // 8)}")
    values = values.astype(dtype)
    return [values[i] for i in indices] if n_frames > 1 else [values[0]]


def _slice_position(ds) -> float | None:
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float)
    return float(np.dot(np.cross(row, col), np.asarray(ipp, dtype=float)))


def order_series(paths: Sequence[str | Path]) -> tuple[list[Path], list]:
    """Order a series' files along the slice normal (ImagePositionPatient . normal).

    Files without position/orientation are ordered by InstanceNumber. Returns ordered paths and
    their headers (read without pixel data).

    Raises:
        InputError: a file cannot be read.
    """
    import pydicom

    headers = []
    for p in paths:
        try:
            headers.append(pydicom.dcmread(p, stop_before_pixels=True))
        except Exception as exc:
            raise InputError(f"{p}: not a readable DICOM file ({type(exc).__name__})") from None
    positions = [_slice_position(ds) for ds in headers]
    if all(pos is not None for pos in positions):
        keys = [(pos, int(ds.get("InstanceNumber", 0) or 0)) for pos, ds in zip(positions, headers, strict=True)]
    else:
        keys = [(float(ds.get("InstanceNumber", 0) or 0), 0) for ds in headers]
    order = sorted(range(len(paths)), key=lambda i: keys[i])
    return [Path(paths[i]) for i in order], [headers[i] for i in order]


def read_series_slices(paths: Sequence[str | Path], policy: str) -> tuple[DecodedFrames, list[Path]]:
    """Assemble chosen slices of a series volume with SimpleITK (modality values, e.g. HU).

    The files are ordered by :func:`order_series`, the slices chosen by ``policy``
    (:func:`select_slices`), and those files read as one volume by ``SimpleITK.ImageSeriesReader``
    (which applies rescale slope/intercept). All slices must share Rows x Columns.

    Returns:
        ``(decoded, chosen_paths)``; ``decoded.frame_indices`` are positions in the ordered series.

    Raises:
        InputError: unreadable files, mixed slice sizes, or SimpleITK cannot read them.
    """
    import SimpleITK as sitk

    ordered, headers = order_series(paths)
    shapes = {(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for ds in headers}
    if len(shapes) != 1:
        raise InputError(f"series of {paths[0]}: slices have different sizes {sorted(shapes)}")
    chosen = select_slices(len(ordered), policy)
    files = [str(ordered[i]) for i in chosen]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        volume = sitk.GetArrayFromImage(reader.Execute())  # (k, H, W)
    except RuntimeError as exc:
        raise InputError(f"series of {files[0]}: SimpleITK cannot read it ({' '.join(str(exc).split())[:200]})") from None
    if volume.ndim == 2:
        volume = volume[None]
    return DecodedFrames(volume.astype(np.float64), chosen, [headers[i] for i in chosen], False), [Path(f) for f in files]


def fit_square(image: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """Resize a ``(H, W)`` image in ``[0, 1]`` to ``(size, size)`` float32.

    ``pad``: scale so the longer side is ``size`` (aspect kept; PIL bilinear, antialiased) and
    centre on black; ``stretch``: resize both sides to ``size``.

    Raises:
        InputError: unknown mode or an empty image.
    """
    from PIL import Image

    if mode not in ("pad", "stretch"):
        raise InputError(f"resize mode {mode!r} is not one of: pad, stretch")
    h, w = image.shape
    if h < 1 or w < 1:
        raise InputError(f"cannot resize an empty image of shape {image.shape}")
    if mode == "stretch":
        new_h, new_w = size, size
    else:
        scale = size / max(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    pil = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    resized = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return np.clip(out, 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[0, 1]`` float -> uint8 (rounded)."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
