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

PET and NM (Modality PT / NM): the header's window is written for the units of the scanner's own
display and the stored values are activity (Bq/ml, counts), so by default these frames are mapped
by a robust window over the frame's own values: its 0.5th to 99.5th percentile
(:data:`PET_NM_PERCENTILES`), ahead of any header VOI; ``modality_window="header"`` restores the
header-first order above; ``modality_window="suv"`` maps PET frames whose header allows it to
body-weight SUV and windows them to :data:`SUV_WINDOW` (the same window for every patient), other
PT / NM frames by percentile (:func:`suv_factor`).

Siemens ``MOSAIC`` images (Image Type contains MOSAIC: fMRI, DTI) hold one volume as a grid of
tiles in one frame; :func:`read_dicom_frames` splits the grid into its slices, reading the number
of images from the CSA image header (``NumberOfImagesInMosaic``, parsed with
``nibabel.nicom.csareader``) or, without it, the tile size from Acquisition Matrix; the slice
policy then chooses among those slices (``frame_indices`` are slice indices).

Series volumes (single-frame CT/MR/PT/NM instances of one series) are ordered by their position
along the slice normal and assembled with SimpleITK's ``ImageSeriesReader``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modan_pacs.errors import InputError
from modan_pacs.slice_policy import parse_slice_policy, select_slices

__all__ = [
    "PET_NM_PERCENTILES",
    "SUV_WINDOW",
    "suv_factor",
    "DecodedFrames",
    "PixelDecodeError",
    "SeriesSlices",
    "mosaic_layout",
    "read_series",
    "split_mosaic",
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
PET_NM_PERCENTILES = (0.5, 99.5)  # robust display window of PT / NM frames (percent of the frame's values)
SUV_WINDOW = (0.0, 7.0)  # body-weight SUV shown from black to white with modality_window="suv"
MODALITY_WINDOWS = ("percentile", "header", "suv")


class PixelDecodeError(InputError):
    """A file of a unit could not be decoded; ``path`` names that file (not the unit's first)."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)


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


def percentile_window(frame: np.ndarray, percentiles: tuple[float, float] = PET_NM_PERCENTILES) -> np.ndarray:
    """``frame`` mapped linearly to ``[0, 1]`` between two of its percentiles (min..max if they meet)."""
    lo, hi = (float(v) for v in np.percentile(frame, percentiles))
    if hi <= lo:
        lo, hi = float(frame.min()), float(frame.max())
    if hi <= lo:
        return np.zeros_like(frame, dtype=np.float64)
    return np.clip((frame - lo) / (hi - lo), 0.0, 1.0)


def _seconds_of_day(value) -> float | None:
    """DICOM TM ``HHMMSS.FFFFFF`` (or shorter) -> seconds since midnight; None if unparsable."""
    text = str(value or "").strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hours, minutes = int(text[:2]), int(text[2:4] or 0)
        seconds = float(text[4:] or 0)
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


def suv_factor(ds) -> float | None:
    """Body-weight SUV per unit of the frame's values (Bq/ml), or None when the header does not allow it.

    ``SUVbw = value * weight [g] / dose at scan start [Bq]``, the dose decayed from the
    Radiopharmaceutical Start Time to the Series Time (the reference of Decay Correction START):
    ``dose * 2 ** (-(series time - start time) / half life)`` (a scan past midnight adds a day).
    Needs Modality PT, Units BQML, Decay Correction START, Patient Weight and the first Radiopharmaceutical
    Information item's Radionuclide Total Dose, Radionuclide Half Life and Radiopharmaceutical Start Time.
    """
    if str(ds.get("Modality", "")).strip().upper() != "PT" or str(ds.get("Units", "")).strip().upper() != "BQML":
        return None
    if str(ds.get("DecayCorrection", "")).strip().upper() != "START":
        return None
    info = ds.get("RadiopharmaceuticalInformationSequence")
    try:
        weight_kg = float(ds.get("PatientWeight") or 0)
        item = info[0]
        dose, half_life = float(item.RadionuclideTotalDose), float(item.RadionuclideHalfLife)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    start, scan = _seconds_of_day(item.get("RadiopharmaceuticalStartTime")), _seconds_of_day(ds.get("SeriesTime"))
    if weight_kg <= 0 or dose <= 0 or half_life <= 0 or start is None or scan is None:
        return None
    elapsed = scan - start if scan >= start else scan + 86400 - start
    return weight_kg * 1000.0 / (dose * 2.0 ** (-elapsed / half_life))


def _display_one(
    frame: np.ndarray,
    ds,
    window: tuple[float, float] | None,
    is_color: bool,
    raw: np.ndarray | None,
    modality_window: str = "percentile",
) -> np.ndarray:
    """Map one frame of modality values to ``[0, 1]`` (see module docstring, step 3-4)."""
    bits = int(ds.get("BitsStored", 8) or 8)
    if window is not None:
        out = apply_window(frame, window[0], window[1])
    elif not is_color and modality_window == "suv" and (factor := suv_factor(ds)) is not None:
        out = np.clip((frame * factor - SUV_WINDOW[0]) / (SUV_WINDOW[1] - SUV_WINDOW[0]), 0.0, 1.0)
    elif not is_color and modality_window != "header" and str(ds.get("Modality", "")).strip().upper() in ("PT", "NM"):
        out = percentile_window(frame)
    elif not is_color and "VOILUTSequence" in ds and raw is not None:
        from pydicom.pixels import apply_voi_lut

        item = ds.VOILUTSequence[0]
        lut_bits = int(item.LUTDescriptor[2])
        out = np.asarray(apply_voi_lut(raw, ds, index=0, prefer_lut=True), dtype=np.float64) / (2**lut_bits - 1)
        out = np.clip(out, 0.0, 1.0)
    elif not is_color and ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        out = apply_window(
            frame, _first(ds.WindowCenter), _first(ds.WindowWidth), str(ds.get("VOILUTFunction", "LINEAR"))
        )
    elif is_color or (bits <= 8 and "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds):
        out = np.clip(frame / (2**bits - 1), 0.0, 1.0)
    else:
        lo, hi = float(frame.min()), float(frame.max())
        out = (frame - lo) / (hi - lo) if hi > lo else np.zeros_like(frame, dtype=np.float64)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 1.0 - out
    return out


def display_frames(
    decoded: DecodedFrames,
    window: tuple[float, float] | None = None,
    raw: list | None = None,
    modality_window: str = "percentile",
) -> np.ndarray:
    """``(F, H, W)`` float64 in ``[0, 1]`` from :func:`read_dicom_frames` output.

    Args:
        decoded: frames with their headers.
        window: explicit ``(center, width)`` overriding the header's VOI (CT window per anatomy).
        raw: the stored values per frame (needed only for a VOI LUT Sequence).
        modality_window: ``percentile`` (PT / NM by :func:`percentile_window`), ``header``, or ``suv``
            (PET in SUV, window :data:`SUV_WINDOW`, where :func:`suv_factor` allows; else percentile).

    Raises:
        InputError: unknown ``modality_window``.
    """
    if modality_window not in MODALITY_WINDOWS:
        raise InputError(f"PET/NM window {modality_window!r} is not one of: {', '.join(MODALITY_WINDOWS)}")
    out = np.empty(decoded.frames.shape, dtype=np.float64)
    for i, (frame, ds) in enumerate(zip(decoded.frames, decoded.headers, strict=True)):
        out[i] = _display_one(frame, ds, window, decoded.is_color, None if raw is None else raw[i], modality_window)
    return out


def read_dicom_frames(
    path: str | Path, frames: Sequence[int] | str | None = None, *, screen: Callable | None = None
) -> tuple[DecodedFrames, list[np.ndarray]]:
    """Decode chosen frames of one DICOM file to modality values (grey) or luma (colour).

    Args:
        path: the DICOM file.
        frames: frame indices, a slice policy (:mod:`modan_pacs.slice_policy`) or None (all).
            For a Siemens MOSAIC they choose among the mosaic's slices.
        screen: called with the header (read without pixels) before any pixel is decoded; a
            ``(code, reason)`` it returns raises :class:`~modan_pacs.pixels.screen.ImageExcluded`.

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
    if screen is not None:
        verdict = screen(header)
        if verdict is not None:
            from modan_pacs.pixels.screen import ImageExcluded

            raise ImageExcluded(str(path), *verdict)
    if "Rows" not in header or "Columns" not in header:
        raise InputError(f"{path}: no image (Rows/Columns absent; SOP class {header.get('SOPClassUID', '?')})")
    n_frames = int(header.get("NumberOfFrames", 1) or 1)
    mosaic = mosaic_layout(header) if n_frames == 1 else None
    indices = list(range(n_frames)) if mosaic is not None else _chosen(frames, n_frames, f"{path}: frames", "file has")
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
    if mosaic is not None:
        n_slices, tile_rows, tile_columns, from_csa = mosaic
        tiles = split_mosaic(arrays[0], n_slices, tile_rows, tile_columns, drop_empty_tail=not from_csa)
        indices = _chosen(frames, len(tiles), f"{path}: slices", "mosaic of")
        arrays = [tiles[i] for i in indices]
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


def _chosen(frames: Sequence[int] | str | None, n: int, what: str, has: str) -> list[int]:
    """Indices chosen from ``n`` frames (or slices) by ``frames``: None = all, a policy, or indices.

    Raises:
        InputError: an index out of range (``"{what} [...] out of range ({has} n)"``).
    """
    if frames is None:
        return list(range(n))
    if isinstance(frames, str):
        return select_slices(n, frames)
    indices = [int(i) for i in frames]
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise InputError(f"{what} {bad} out of range ({has} {n})")
    return indices


def _csa_number_of_images(ds) -> int | None:
    """NumberOfImagesInMosaic from the Siemens CSA image header (nibabel's parser), or None."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that its DICOM *readers* are experimental
            from nibabel.nicom import csareader
    except ImportError:
        return None
    try:
        csa = csareader.get_csa_header(ds, "image")
        n = csareader.get_n_mosaic(csa) if csa else None
    except Exception:  # a malformed CSA header: fall back to the acquisition matrix
        return None
    return int(n) if n else None


def mosaic_layout(ds) -> tuple[int, int, int, bool] | None:
    """``(n_slices, tile_rows, tile_columns, from_csa)`` of a Siemens MOSAIC header, else None.

    The number of slices comes from the CSA header (tiles fill a square grid of
    ``ceil(sqrt(n))`` per side, as Siemens writes them); without it, the tile size is read from
    Acquisition Matrix ``[freq rows, freq cols, phase rows, phase cols]`` and every tile of the grid
    counts (empty trailing tiles are dropped by :func:`split_mosaic`).

    Raises:
        InputError: MOSAIC in Image Type but neither source gives a grid that fits Rows x Columns.
    """
    image_type = ds.get("ImageType")
    if image_type is None or "MOSAIC" not in [
        str(v).strip().upper() for v in ([image_type] if isinstance(image_type, str) else image_type)
    ]:
        return None
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n = _csa_number_of_images(ds)
    if n:
        per_side = math.ceil(math.sqrt(n))
        if rows % per_side == 0 and columns % per_side == 0:
            return n, rows // per_side, columns // per_side, True
    matrix = [int(v) for v in (ds.get("AcquisitionMatrix") or [])]
    if len(matrix) == 4:
        tile_rows, tile_columns = matrix[0] + matrix[2], matrix[1] + matrix[3]
        if tile_rows and tile_columns and rows % tile_rows == 0 and columns % tile_columns == 0:
            return (rows // tile_rows) * (columns // tile_columns), tile_rows, tile_columns, False
    raise InputError(
        f"MOSAIC image of {rows}x{columns} without a usable CSA NumberOfImagesInMosaic "
        f"or Acquisition Matrix {matrix or 'absent'}"
    )


def split_mosaic(
    frame: np.ndarray, n_slices: int, tile_rows: int, tile_columns: int, *, drop_empty_tail: bool = True
) -> np.ndarray:
    """``(n, tile_rows, tile_columns)`` slices of a mosaic ``frame``, tiles read row by row.

    Slice ``k`` is the tile in grid row ``k // per_row``, column ``k % per_row``
    (``per_row = columns // tile_columns``). With ``drop_empty_tail`` all-zero tiles at the end
    (a grid larger than the volume) are dropped.
    """
    per_row = frame.shape[1] // tile_columns
    grid = frame.reshape(frame.shape[0] // tile_rows, tile_rows, per_row, tile_columns).swapaxes(1, 2)
    tiles = grid.reshape(-1, tile_rows, tile_columns)[:n_slices]
    if drop_empty_tail:
        nonzero = np.flatnonzero(tiles.reshape(len(tiles), -1).any(axis=1))
        tiles = tiles[: (int(nonzero[-1]) + 1 if len(nonzero) else 1)]
    return tiles


def _stored_values_with_simpleitk(
    path: Path, header, n_frames: int, indices: list[int], cause: str
) -> list[np.ndarray]:
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
        PixelDecodeError: a file cannot be read (names that file).
    """
    headers, gaps = _read_headers(paths)
    if gaps:
        raise PixelDecodeError(*gaps[0])
    return _order(list(paths), headers)


def _read_headers(paths: Sequence[str | Path]) -> tuple[list, list[tuple[str, str]]]:
    """Headers of the readable files (None for the others) and ``(path, reason)`` of the others."""
    import pydicom

    headers, gaps = [], []
    for p in paths:
        try:
            headers.append(pydicom.dcmread(p, stop_before_pixels=True))
        except Exception as exc:  # any parser failure of one file is that file's error
            headers.append(None)
            gaps.append(
                (str(p), f"not a readable DICOM file ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
            )
    return headers, gaps


def _order(paths: list, headers: list) -> tuple[list[Path], list]:
    positions = [_slice_position(ds) for ds in headers]
    if all(pos is not None for pos in positions):
        keys = [(pos, int(ds.get("InstanceNumber", 0) or 0)) for pos, ds in zip(positions, headers, strict=True)]
    else:
        keys = [(float(ds.get("InstanceNumber", 0) or 0), 0) for ds in headers]
    order = sorted(range(len(paths)), key=lambda i: keys[i])
    return [Path(paths[i]) for i in order], [headers[i] for i in order]


@dataclass
class SeriesSlices:
    """Chosen slices of a series, read from what decodes.

    Attributes:
        decoded: the slices (modality values) with their headers; ``frame_indices`` are positions in
            the ordered series of usable instances (or slice indices of one MOSAIC instance).
        chosen: the file of each slice.
        gaps: ``(path, reason)`` of every instance left out (unreadable header, other slice size,
            undecodable pixels).
        excluded: ``(path, code, reason)`` of instances the ``screen`` excluded.
    """

    decoded: DecodedFrames
    chosen: list[Path]
    gaps: list[tuple[str, str]]
    excluded: list[tuple[str, str, str]]


def read_series(paths: Sequence[str | Path], policy: str, *, screen: Callable | None = None) -> SeriesSlices:
    """Chosen slices of a series volume, built from the instances that read and decode.

    The readable instances (``screen`` returning None for their headers, when given; it returns
    ``(code, reason)`` to exclude one) of the series' most common Rows x Columns are ordered by
    position (:func:`order_series`), ``policy`` chooses among them (:func:`select_slices`) and
    SimpleITK's ``ImageSeriesReader`` reads the chosen files as one volume (rescale applied). When
    that fails (a corrupt instance), each chosen file is decoded alone with pydicom; one that does
    not decode is a gap and is replaced by the nearest unchosen instance that does. A series of
    Siemens MOSAIC instances (each one a volume) gives the slices of its middle instance.

    Raises:
        PixelDecodeError: no instance of the series is usable (names the first file's problem).
    """
    headers, gaps = _read_headers(paths)
    excluded: list[tuple[str, str, str]] = []
    usable = []
    for p, ds in zip(paths, headers, strict=True):
        if ds is None:
            continue
        verdict = screen(ds) if screen is not None else None
        if verdict is not None:
            excluded.append((str(p), *verdict))
        else:
            usable.append((p, ds))
    sizes = [(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for _, ds in usable]
    if sizes:
        common = max(set(sizes), key=lambda s: (sizes.count(s), s))
        gaps += [
            (str(p), f"slice size {size} differs from the series' {common}")
            for (p, _), size in zip(usable, sizes, strict=True)
            if size != common
        ]
        usable = [item for item, size in zip(usable, sizes, strict=True) if size == common]
    if not usable:
        if excluded and not gaps:
            return SeriesSlices(DecodedFrames(np.zeros((0, 1, 1)), [], [], False), [], gaps, excluded)
        first = gaps[0] if gaps else (str(paths[0]), "series has no instance")
        raise PixelDecodeError(first[0], f"no usable instance in its series ({first[1]})")
    ordered, ordered_headers = _order([p for p, _ in usable], [ds for _, ds in usable])
    middle = len(ordered) // 2
    if mosaic_layout(ordered_headers[middle]) is not None:
        decoded, _ = read_dicom_frames(ordered[middle], policy)
        return SeriesSlices(decoded, [ordered[middle]] * len(decoded.frame_indices), gaps, excluded)
    chosen = select_slices(len(ordered), policy)
    try:
        volume = _read_volume([str(ordered[i]) for i in chosen])
        decoded = DecodedFrames(volume, chosen, [ordered_headers[i] for i in chosen], False)
        return SeriesSlices(decoded, [ordered[i] for i in chosen], gaps, excluded)
    except InputError:
        pass  # a chosen instance does not decode: read them one by one below
    frames, indices = [], []
    failed: set[int] = set()
    for i in chosen:
        j = _decode_nearest(ordered, i, set(indices) | (set(chosen) - {i}), failed, frames, gaps)
        if j is not None:
            indices.append(j)
    if not frames:
        raise PixelDecodeError(gaps[-1][0], f"no instance of its series decodes ({gaps[-1][1]})")
    order = np.argsort(indices, kind="stable")
    decoded = DecodedFrames(
        np.stack([frames[k] for k in order]),
        [indices[k] for k in order],
        [ordered_headers[indices[k]] for k in order],
        False,
    )
    return SeriesSlices(decoded, [ordered[indices[k]] for k in order], gaps, excluded)


def _decode_nearest(
    ordered: list[Path], i: int, taken: set[int], failed: set[int], frames: list, gaps: list
) -> int | None:
    """Decode instance ``i`` or else its nearest untaken neighbour; append the frame, return its index."""
    for j in sorted(range(len(ordered)), key=lambda k: (abs(k - i), k)):
        if j in failed or j in taken:
            continue
        try:
            decoded, _ = read_dicom_frames(ordered[j], [0])
        except Exception as exc:  # any failure of one instance is that instance's gap, never the series'
            failed.add(j)
            reason = (
                str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
            )
            gaps.append((str(ordered[j]), reason.removeprefix(f"{ordered[j]}: ")))
            continue
        frames.append(decoded.frames[0])
        return j
    return None


def _read_volume(files: list[str]) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        volume = sitk.GetArrayFromImage(reader.Execute())  # (k, H, W)
    except RuntimeError as exc:
        raise InputError(
            f"series of {files[0]}: SimpleITK cannot read it ({' '.join(str(exc).split())[:200]})"
        ) from None
    if volume.ndim == 2:
        volume = volume[None]
    return volume.astype(np.float64)


def read_series_slices(paths: Sequence[str | Path], policy: str) -> tuple[DecodedFrames, list[Path]]:
    """Chosen slices of a series whose every instance must be usable (:func:`read_series`).

    Returns:
        ``(decoded, chosen_paths)``; ``decoded.frame_indices`` are positions in the ordered series.

    Raises:
        InputError: an unreadable file, mixed slice sizes, or a chosen file that does not decode.
    """
    result = read_series(paths, policy)
    if result.gaps:
        raise PixelDecodeError(*result.gaps[0])
    return result.decoded, result.chosen


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
