"""Build an image cache: decode every unit once, in worker processes, resumably.

A *unit* is what one worker decodes: a DICOM file (its frames chosen by the slice policy), a
series volume (single-frame CT/MR/PT/NM instances of one series, slices chosen by the policy,
assembled with SimpleITK) or a PNG/JPG image. Each planned slice owns a row of a pre-allocated
memory map in ``CACHE/.partial/images.npy``; a unit that yields more rows than planned (a Siemens
MOSAIC split into slices) keeps them in ``CACHE/.partial/extra/UNIT.npy``. Finished units are
appended to ``CACHE/.partial/done.jsonl``, so an interrupted build continues where it stopped when
re-run with the same settings. At the end the kept rows are copied into ``images.npy`` and the
manifest, labels, vocabulary, errors and ``summary.json`` are written (docs/ARCHITECTURE.md,
"cache"); ``.partial`` is removed.

Isolation: whatever decoding one unit raises becomes an ``errors.parquet`` row naming the file that
caused it, and the build goes on; a worker process that dies (a crash inside a C decoder) is
replaced, the units it may have held are decoded again one per process, and the one that kills its
process alone is recorded (``worker_died``); a unit that runs past ``unit_timeout`` (a hang) is
stopped the same way and recorded (``timeout``). With one worker, decoding runs in this process,
without these two guards. Series units keep the instances that decode
(:func:`~modan_pacs.pixels.decode.read_series`); each left-out instance is a ``missing_instance``
row. Screening (:mod:`modan_pacs.pixels.screen`) adds ``status = excluded`` rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

from modan_pacs.errors import DataNotFoundError, InputError
from modan_pacs.fileio import IMAGE_SUFFIXES, is_missing, load_gray
from modan_pacs.pixels.cache import write_cache
from modan_pacs.pixels.decode import (
    MODALITY_WINDOWS,
    PixelDecodeError,
    display_frames,
    fit_square,
    parse_slice_policy,
    read_dicom_frames,
    read_series,
    select_slices,
    suv_factor,
    to_uint8,
)
from modan_pacs.pixels.screen import (
    SECONDARY_CAPTURE_POLICIES,
    ImageExcluded,
    is_near_constant,
    non_image_reason,
    screen_header,
    ultrasound_crop_box,
)
from modan_pacs.pixels.windows import DEFAULT_CT_WINDOWS, CtWindows, load_ct_windows

__all__ = [
    "CacheSettings",
    "CacheBuildResult",
    "build_cache",
    "build_cache_from_index",
    "plan_index_units",
    "plan_record_units",
]

VOLUME_MODALITIES = ("CT", "MR", "PT", "NM")


class CacheSettings(BaseModel):
    """How pixels become cache rows: the one way into the cache stage (``modan-pacs cache`` builds it
    from its flags). Unknown keys are refused; values are checked when the model is built or a field
    is assigned (:class:`~modan_pacs.errors.InputError` naming the CLI flag).

    :meth:`outputs` (everything but ``unit_timeout``) is recorded in ``.partial/settings.json`` to
    check a resume.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    size: int = 224
    """Side of the square cached images (pixels), >= 8."""
    slices: str = "middle"
    """Multi-frame files and series volumes: :mod:`modan_pacs.slice_policy` grammar."""
    resize: str = "pad"
    """``pad`` (keep aspect, black borders) or ``stretch``."""
    ct_window: str = "anatomy"
    """``anatomy`` (window per anatomy, :mod:`modan_pacs.pixels.windows`) or ``header`` (the header's VOI)."""
    ct_windows: dict[str, list[float]] = {}
    """Window table ``{anatomy: [center, width]}``; empty: ``windows.DEFAULT_CT_WINDOWS``."""
    series_volumes: bool = True
    """Treat single-frame CT/MR/PT/NM series as volumes (slices chosen by ``slices``)."""
    # screening (modan_pacs.pixels.screen) and PET/NM display
    keep_non_image: bool = False
    secondary_capture: str = "original-primary"
    """``original-primary`` | ``primary`` | ``all``."""
    keep_burned_in: bool = False
    crop_ultrasound: bool = True
    min_std: float = 0.02
    """Near-constant: std of the [0, 1] display values below this (0 = off)."""
    pet_nm_window: str = "percentile"
    """``percentile`` | ``header`` | ``suv``."""
    unit_timeout: float = 300.0
    """Seconds one unit may take in a worker before it is stopped (0 = no limit)."""

    @model_validator(mode="after")
    def _check(self) -> CacheSettings:
        # InputError (not ValueError) passes through pydantic unchanged: the CLI prints it as one line
        if self.size < 8:
            raise InputError(f"--size must be >= 8; got {self.size}")
        parse_slice_policy(self.slices)
        if self.resize not in ("pad", "stretch"):
            raise InputError(f"--resize must be pad or stretch; got {self.resize!r}")
        if self.ct_window not in ("anatomy", "header"):
            raise InputError(f"--ct-window must be anatomy or header; got {self.ct_window!r}")
        if self.secondary_capture not in SECONDARY_CAPTURE_POLICIES:
            raise InputError(
                f"--secondary-capture must be one of {', '.join(SECONDARY_CAPTURE_POLICIES)}; "
                f"got {self.secondary_capture!r}"
            )
        if not 0.0 <= self.min_std < 0.5:
            raise InputError(
                f"--min-std must be in [0, 0.5) (std of [0, 1] display values; 0 = off); got {self.min_std}"
            )
        if self.unit_timeout < 0:
            raise InputError(f"--unit-timeout must be >= 0 seconds (0 = no limit); got {self.unit_timeout}")
        if self.pet_nm_window not in MODALITY_WINDOWS:
            raise InputError(
                f"--pet-nm-window must be one of {', '.join(MODALITY_WINDOWS)}; got {self.pet_nm_window!r}"
            )
        return self

    def outputs(self) -> dict[str, Any]:
        """The settings that shape the rows (a resumed build must agree on them)."""
        return {k: v for k, v in self.model_dump().items() if k != "unit_timeout"}

    def with_windows(self, window_config: str | Path | None, anatomies: list[str] | None) -> CacheSettings:
        """A copy whose ``ct_windows`` is read from ``window_config`` (None: the shipped defaults),
        checked against ``anatomies`` (:func:`~modan_pacs.pixels.windows.load_ct_windows`)."""
        windows = load_ct_windows(window_config, anatomies=anatomies)
        return self.model_copy(update={"ct_windows": windows.as_dict()})


@dataclass
class CacheBuildResult:
    """What a build did. ``n_errors`` counts error rows, ``n_excluded`` screening rows;
    ``summary`` is what ``summary.json`` holds (counts by code, notes such as ``us_without_regions``)."""

    path: Path
    n_rows: int
    n_errors: int
    n_units: int
    n_resumed: int
    already_complete: bool = False
    n_excluded: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


def _row_count(n_frames: Any, policy: str) -> int:
    try:
        n = int(n_frames)
    except (TypeError, ValueError):
        n = 1
    return len(select_slices(max(n, 1), policy))


def _clean(value: Any) -> Any:
    if is_missing(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def error_row(
    path: str, code: str, reason: str, *, status: str = "error", slice_index: int | None = None
) -> dict[str, Any]:
    """One ``errors.parquet`` row (``status`` error or excluded; columns in
    :data:`~modan_pacs.pixels.cache.ERROR_COLUMNS`)."""
    return {"path": str(path), "reason": reason, "status": status, "code": code, "slice_index": slice_index}


def plan_index_units(frame: pd.DataFrame, settings: CacheSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Units of an index frame (one row per instance) and the rows that are not decoded: no local
    file (an error), or a SOP class that holds no image (excluded, unless ``keep_non_image``).

    Single-frame instances of a CT/MR/PT/NM series with more than one instance of one Rows x
    Columns form one series unit when ``settings.series_volumes`` (a series that mixes sizes gives
    one unit per size); every other instance is a file unit.
    """
    units: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    frame = frame.reset_index(drop=True)
    has_path = frame["path"].notna() & (frame["path"].astype("string").fillna("") != "")
    for i in np.flatnonzero(~has_path.to_numpy()):
        loc = frame.at[i, "location"] if "location" in frame.columns else None
        where = str(_clean(loc) or frame.at[i, "sop_instance_uid"])
        errors.append(error_row(where, "no_local_file", "no local file (PACS index: retrieve the series first)"))
    keep = has_path.to_numpy().copy()
    if not settings.keep_non_image and "sop_class_uid" in frame.columns:
        # screening from the index's own column: these files are never opened
        for i in np.flatnonzero(keep):
            reason = non_image_reason(_clean(frame.at[i, "sop_class_uid"]))
            if reason:
                keep[i] = False
                errors.append(error_row(str(frame.at[i, "path"]), "not_an_image", reason, status="excluded"))
    local = frame[keep]
    n_frames = pd.to_numeric(local["number_of_frames"], errors="coerce").fillna(1).astype(int)
    in_volume = pd.Series(False, index=local.index)
    # one volume per series and slice size: a series mixing sizes (scouts, reformats) gives one each
    volume_keys = ["series_instance_uid"] + [c for c in ("rows", "columns") if c in local.columns]
    if settings.series_volumes:
        candidate = local["modality"].astype("string").str.upper().isin(VOLUME_MODALITIES) & (n_frames <= 1)
        sizes = local[candidate].groupby(volume_keys, dropna=False)["sop_instance_uid"].transform("size")
        in_volume.loc[sizes.index] = sizes > 1
    for (series_uid, *_), group in local[in_volume].groupby(volume_keys, sort=False, dropna=False):
        first = group.index[0]
        units.append(
            {
                "kind": "series",
                "paths": [str(p) for p in group["path"]],
                "sources": [str(s) for s in group["sop_instance_uid"]],
                "index_rows": [int(r) for r in group.index],
                "planned": len(select_slices(len(group), settings.slices)),
                "label_row": int(first),
                "modality_label": _clean(frame.at[first, "modality_label"]),
                "anatomy_label": _clean(frame.at[first, "anatomy_label"]),
                "modality": _clean(frame.at[first, "modality"]),
                "extra": {"series_instance_uid": str(series_uid)},
            }
        )
    for i in local.index[~in_volume.to_numpy()]:
        units.append(
            {
                "kind": "file",
                "paths": [str(frame.at[i, "path"])],
                "sources": [str(frame.at[i, "sop_instance_uid"])],
                "index_rows": [int(i)],
                "planned": _row_count(n_frames.loc[i], settings.slices),
                "label_row": int(i),
                "modality_label": _clean(frame.at[i, "modality_label"]),
                "anatomy_label": _clean(frame.at[i, "anatomy_label"]),
                "modality": _clean(frame.at[i, "modality"]),
                "extra": {"series_instance_uid": _clean(frame.at[i, "series_instance_uid"])},
            }
        )
    return units, errors


def plan_record_units(
    records: pd.DataFrame, settings: CacheSettings, extra_columns: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Units of generic records (``path, modality_label, anatomy_label`` + ``extra_columns``).

    PNG/JPG/... paths are image units; anything else is read as DICOM (a file unit).
    """
    units = []
    for i, row in enumerate(records.itertuples(index=False)):
        rec = row._asdict()
        path = str(rec["path"])
        is_image = Path(path).suffix.lower() in IMAGE_SUFFIXES
        units.append(
            {
                "kind": "image" if is_image else "file",
                "paths": [path],
                "sources": [path],
                "index_rows": [i],
                "planned": 1 if is_image else -1,  # DICOM frame count is known after reading
                "label_row": i,
                "modality_label": _clean(rec.get("modality_label")),
                "anatomy_label": _clean(rec.get("anatomy_label")),
                "modality": _clean(rec.get("modality", rec.get("modality_label"))),
                "extra": {c: _clean(rec.get(c)) for c in extra_columns},
            }
        )
    return units


def _window_for(unit: dict[str, Any], settings: CacheSettings) -> tuple[float, float] | None:
    if str(unit.get("modality") or "").upper() != "CT" or settings.ct_window != "anatomy":
        return None
    table = {k: tuple(v) for k, v in settings.ct_windows.items()} or DEFAULT_CT_WINDOWS  # empty: the built-in table
    return CtWindows(table).window(unit.get("anatomy_label"))


def _screen(settings: CacheSettings) -> Callable[[Any], tuple[str, str] | None]:
    return lambda ds: screen_header(ds, settings)


def _crop_ultrasound(frame: np.ndarray, header: Any, settings: CacheSettings, notes: Counter) -> np.ndarray:
    if header is None or not settings.crop_ultrasound or str(header.get("Modality", "")).strip().upper() != "US":
        return frame
    box = ultrasound_crop_box(header, frame.shape)
    if box is None:
        notes["us_without_regions"] += 1
        return frame
    notes["us_cropped"] += 1
    top, bottom, left, right = box
    return frame[top:bottom, left:right]


def _decode_frames(
    unit: dict[str, Any], settings: CacheSettings, rejected: list[dict[str, Any]]
) -> tuple[np.ndarray, list, list, list[int]]:
    """Display-mapped frames of a unit with their headers, sources and slice indices."""
    if unit["kind"] == "image":
        gray = load_gray(unit["paths"][0]).astype(np.float64) / 255.0
        return gray[None], [None], unit["sources"][:1], [0]
    window = _window_for(unit, settings)
    if unit["kind"] == "series":
        series = read_series(unit["paths"], settings.slices, screen=_screen(settings))
        rejected += [
            error_row(path, "missing_instance", f"left out of its series volume: {reason}")
            for path, reason in series.gaps
        ]
        rejected += [error_row(path, code, reason, status="excluded") for path, code, reason in series.excluded]
        if not series.chosen:
            return np.zeros((0, 1, 1)), [], [], []
        display = display_frames(series.decoded, window=window, modality_window=settings.pet_nm_window)
        by_path = dict(zip(unit["paths"], unit["sources"], strict=True))
        sources = [by_path[str(p)] for p in series.chosen]
        return display, series.decoded.headers, sources, list(series.decoded.frame_indices)
    decoded, raw = read_dicom_frames(unit["paths"][0], settings.slices, screen=_screen(settings))
    display = display_frames(decoded, window=window, raw=raw, modality_window=settings.pet_nm_window)
    return display, decoded.headers, unit["sources"] * len(decoded.frame_indices), list(decoded.frame_indices)


def decode_unit(unit: dict[str, Any], settings: CacheSettings) -> dict[str, Any]:
    """Decode one unit to ``(k, size, size) uint8`` slices; never raises for bad input.

    Returns ``{"images", "sources", "slice_index", "rejected", "notes"}``: the kept slices, one
    ``errors.parquet`` row per file or slice left out (:func:`error_row`), and counters for the
    summary. A unit that fails as a whole has no images and one rejected row naming its file.
    """
    rejected: list[dict[str, Any]] = []
    notes: Counter = Counter()
    empty = np.zeros((0, settings.size, settings.size), np.uint8)
    try:
        display, headers, sources, slice_index = _decode_frames(unit, settings, rejected)
        images, kept_sources, kept_index = [], [], []
        for frame, header, source, index in zip(display, headers, sources, slice_index, strict=True):
            if (
                settings.pet_nm_window == "suv"
                and header is not None
                and str(header.get("Modality", "")).strip().upper() == "PT"
            ):
                notes["pet_suv" if suv_factor(header) is not None else "pet_without_suv_percentile_window"] += 1
            frame = _crop_ultrasound(frame, header, settings, notes)
            if is_near_constant(frame, settings.min_std):
                path = unit["paths"][unit["sources"].index(source)] if source in unit["sources"] else unit["paths"][0]
                rejected.append(
                    error_row(
                        path,
                        "near_constant",
                        f"near-constant image (std {float(np.std(frame)):.4f} < {settings.min_std} "
                        "of the display range)",
                        status="excluded",
                        slice_index=int(index),
                    )
                )
                continue
            images.append(to_uint8(fit_square(frame, settings.size, settings.resize)))
            kept_sources.append(source)
            kept_index.append(int(index))
        return {
            "images": np.stack(images) if images else empty,
            "sources": kept_sources,
            "slice_index": kept_index,
            "rejected": rejected,
            "notes": dict(notes),
        }
    except ImageExcluded as exc:
        row = error_row(exc.path, exc.code, exc.reason, status="excluded")
    except PixelDecodeError as exc:
        row = error_row(exc.path, "decode_error", str(exc))
    except InputError as exc:
        row = error_row(unit["paths"][0], "decode_error", str(exc))
    except Exception as exc:  # per-unit isolation: whatever one file raises is that file's error row
        row = error_row(
            unit["paths"][0],
            "decode_error",
            f"{unit['paths'][0]}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
        )
    return {"images": empty, "sources": [], "slice_index": [], "rejected": [*rejected, row], "notes": dict(notes)}


def _decode_chunk(units: list[dict[str, Any]], settings: CacheSettings) -> list[dict[str, Any]]:
    return [decode_unit(u, settings) for u in units]


def _worker_died(unit: dict[str, Any], settings: CacheSettings, *, timed_out: bool = False) -> dict[str, Any]:
    if timed_out:
        code, what = "timeout", f"decoding ran past --unit-timeout {settings.unit_timeout:g} s and was stopped"
    else:
        code, what = "worker_died", "the decoding process died on this file (a crash inside a C decoder?)"
    reason = f"{unit['paths'][0]}: {what}; the build went on without it"
    return {
        "images": np.zeros((0, settings.size, settings.size), np.uint8),
        "sources": [],
        "slice_index": [],
        "rejected": [error_row(unit["paths"][0], code, reason)],
        "notes": {},
    }


def _resolve_dicom_counts(units: list[dict[str, Any]], settings: CacheSettings) -> None:
    """Planned row counts of generic DICOM units (frame count read from the header)."""
    import pydicom

    for unit in units:
        if unit["planned"] >= 0:
            continue
        try:
            ds = pydicom.dcmread(unit["paths"][0], stop_before_pixels=True, specific_tags=["NumberOfFrames"])
            unit["planned"] = _row_count(ds.get("NumberOfFrames", 1), settings.slices)
        except Exception:
            unit["planned"] = 1  # unreadable: decode_unit records the error


class _Rows:
    """Read-only row view ``base[rows]`` with the array attributes write_cache checks."""

    def __init__(self, base: np.ndarray, rows: np.ndarray) -> None:
        self.base, self.rows = base, rows
        self.shape = (len(rows), *base.shape[1:])
        self.ndim, self.dtype = base.ndim, base.dtype

    def __getitem__(self, item: slice) -> np.ndarray:
        return self.base[self.rows[item]]


def _fingerprint(units: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for u in units:
        h.update(json.dumps([u["kind"], u["paths"], u["planned"]]).encode())
    return h.hexdigest()


def _iter_results(
    todo: list[int], units: list[dict[str, Any]], settings: CacheSettings, workers: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(unit, result)`` as units finish (any order). With ``workers > 1`` a pool of processes
    decodes chunks of units; when a process dies, or no chunk finishes for ``unit_timeout`` seconds
    per unit of a chunk (a hang), the pool is replaced (see module docstring)."""
    if workers <= 1:
        for i in todo:
            yield i, decode_unit(units[i], settings)
        return
    chunk = max(1, min(16, len(todo) // (workers * 4) or 1))
    remaining = [todo[k : k + chunk] for k in range(0, len(todo), chunk)]
    stall_after = settings.unit_timeout * chunk if settings.unit_timeout > 0 else None
    while remaining:
        suspects: list[int] = []
        with ProcessPoolExecutor(max_workers=workers, initializer=_silence_native_stderr) as pool:
            pending: dict = {}
            last_progress = time.monotonic()
            try:
                while remaining or pending:
                    while remaining and len(pending) < 2 * workers:
                        ids = remaining.pop(0)
                        pending[pool.submit(_decode_chunk, [units[i] for i in ids], settings)] = ids
                    finished, _ = wait(
                        pending,
                        timeout=None if stall_after is None else min(5.0, stall_after),
                        return_when=FIRST_COMPLETED,
                    )
                    for future in finished:
                        results = future.result()  # raises BrokenProcessPool while still pending
                        yield from zip(pending.pop(future), results, strict=True)
                        last_progress = time.monotonic()
                    if not finished and stall_after is not None and time.monotonic() - last_progress > stall_after:
                        _kill_worker_processes()  # a hang: the pool breaks and its units are retried one by one
            except BrokenProcessPool:
                suspects = [i for ids in pending.values() for i in ids]
        yield from _isolate(suspects, units, settings)


def _silence_native_stderr() -> None:
    """Decoding-process initializer: file descriptor 2 goes to /dev/null.

    The C decoders (libjpeg, OpenJPEG, GDCM) print their complaints straight to file descriptor 2
    ("Unsupported JPEG data precision 12", "Invalid number of tiles"), past Python's logging, where
    they land on the user's terminal once per attempt. Each failure is already recorded, with its
    reason, in ``errors.parquet``; a worker that dies is recorded by the pool.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
    finally:
        os.close(devnull)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null inside the block, in this process (see
    :func:`_silence_native_stderr`); for a decode whose failure the caller already handles."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        _silence_native_stderr()
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _kill_worker_processes() -> None:
    """SIGKILL this process's multiprocessing children: the decoding pool's workers (a cache build
    starts no other children)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()


def _isolate(
    suspects: list[int], units: list[dict[str, Any]], settings: CacheSettings
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Decode each unit a dead pool held in a process of its own; the one that dies, or runs past
    ``unit_timeout``, is recorded."""
    from concurrent.futures import TimeoutError as FutureTimeout

    for i in suspects:
        with ProcessPoolExecutor(max_workers=1, initializer=_silence_native_stderr) as pool:
            future = pool.submit(_decode_chunk, [units[i]], settings)
            try:
                (result,) = future.result(timeout=settings.unit_timeout or None)
            except BrokenProcessPool:
                result = _worker_died(units[i], settings)
            except FutureTimeout:
                _kill_worker_processes()
                result = _worker_died(units[i], settings, timed_out=True)
        yield i, result


def build_cache(
    units: list[dict[str, Any]],
    unit_labels: np.ndarray,
    vocabulary: Any,
    out: str | Path,
    *,
    settings: CacheSettings,
    workers: int = 1,
    planning_errors: list[dict[str, str]] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CacheBuildResult:
    """Decode ``units`` into a cache at ``out`` (resumable; see module docstring).

    Args:
        units: from :func:`plan_index_units` / :func:`plan_record_units`.
        unit_labels: ``(M, K)`` multi-hot rows addressed by each unit's ``label_row``.
        vocabulary: the :class:`~modan_pacs.labels.Vocabulary` of ``unit_labels``.
        out: the cache folder.
        settings: size, slice policy, resize mode, CT windows.
        workers: decoding processes (1 = in this process).
        planning_errors: rows already known to be undecodable (written to ``errors.parquet``).
        overwrite: discard an existing cache or unfinished build at ``out``.
        progress: called with ``(units done, units total)`` after each unit.

    Raises:
        InputError: ``out`` holds a finished cache (without ``overwrite``) or an unfinished build
            with different settings or inputs.
    """
    from modan_pacs.pixels.cache import remove_cache_files

    out = Path(out)
    partial = out / ".partial"
    if overwrite:
        remove_cache_files(out)
    if (out / "images.npy").is_file() and not partial.exists():
        raise InputError(f"{out} already holds a finished cache; pass --overwrite to rebuild it")
    if any(u["planned"] < 0 for u in units):
        _resolve_dicom_counts(units, settings)
    planned = np.asarray([u["planned"] for u in units], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(planned)])
    total_rows = int(offsets[-1])
    state = {"settings": settings.outputs(), "fingerprint": _fingerprint(units), "rows": total_rows}
    partial.mkdir(parents=True, exist_ok=True)
    state_file, done_file = partial / "settings.json", partial / "done.jsonl"
    done: dict[int, dict[str, Any]] = {}
    if state_file.is_file():
        previous = json.loads(state_file.read_text())
        if previous != state:
            raise InputError(
                f"{out} holds an unfinished build with other settings or inputs; pass --overwrite to start again"
            )
        if done_file.is_file():
            for line in done_file.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    done[int(rec["unit"])] = rec
        images = np.lib.format.open_memmap(partial / "images.npy", mode="r+")
    else:
        state_file.write_text(json.dumps(state))
        done_file.unlink(missing_ok=True)
        images = np.lib.format.open_memmap(
            partial / "images.npy", mode="w+", dtype=np.uint8, shape=(max(total_rows, 0), settings.size, settings.size)
        )
    n_resumed = len(done)
    todo = [i for i in range(len(units)) if i not in done]
    (partial / "extra").mkdir(exist_ok=True)
    with done_file.open("a", encoding="utf-8") as log:
        for count, (i, result) in enumerate(_iter_results(todo, units, settings, workers), start=n_resumed + 1):
            rec = _store_result(i, result, units[i]["planned"], images, offsets, partial)
            if count % 256 == 0:
                images.flush()
            log.write(json.dumps(rec) + "\n")
            log.flush()
            done[i] = rec
            if progress is not None:
                progress(count, len(units))
    images.flush()
    result = _finalize(out, units, done, images, offsets, unit_labels, vocabulary, planning_errors or [], n_resumed)
    del images
    shutil.rmtree(partial, ignore_errors=True)
    return result


def _store_result(
    i: int, result: dict[str, Any], planned: int, images: np.ndarray, offsets: np.ndarray, partial: Path
) -> dict[str, Any]:
    """Put a unit's slices in its planned rows (or ``extra/i.npy`` when there are more); its log record."""
    n = len(result["images"])
    extra = n > planned
    if extra:
        np.save(partial / "extra" / f"{i}.npy", result["images"])
    elif n:
        images[offsets[i] : offsets[i] + n] = result["images"]
    return {
        "unit": i,
        "n": n,
        "extra": extra,
        "sources": list(result["sources"]),
        "slice_index": [int(v) for v in result["slice_index"]],
        "rejected": result["rejected"],
        "notes": result["notes"],
    }


class _Gathered:
    """Rows gathered from the pre-allocated map and the units' ``extra`` arrays, read in slices
    (what write_cache copies from): ``which[r]`` = source array, ``rows[r]`` = its row."""

    def __init__(self, arrays: list[np.ndarray], which: np.ndarray, rows: np.ndarray, size: int) -> None:
        self.arrays, self.which, self.rows = arrays, which, rows
        self.shape, self.ndim, self.dtype = (len(rows), size, size), 3, np.dtype(np.uint8)

    def __getitem__(self, item: slice) -> np.ndarray:
        which, rows = self.which[item], self.rows[item]
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for w in np.unique(which):
            mask = which == w
            out[mask] = self.arrays[int(w)][rows[mask]]
        return out


def _finalize(
    out: Path, units, done, images, offsets, unit_labels, vocabulary, planning_errors, n_resumed
) -> CacheBuildResult:
    """Kept rows in plan order -> the cache files, errors.parquet and summary.json."""
    arrays, which, rows, manifest_rows, label_rows = [images], [], [], [], []
    errors = [dict(e) for e in planning_errors]
    notes: Counter = Counter()
    for i, unit in enumerate(units):
        rec = done[i]
        errors += rec["rejected"]
        notes.update(rec["notes"])
        if rec["n"] == 0:
            continue
        if rec["extra"]:
            arrays.append(np.load(out / ".partial" / "extra" / f"{i}.npy", mmap_mode="r"))
            which += [len(arrays) - 1] * rec["n"]
            rows += list(range(rec["n"]))
        else:
            which += [0] * rec["n"]
            rows += list(range(int(offsets[i]), int(offsets[i]) + rec["n"]))
        row_of_source = dict(zip(unit["sources"], unit["index_rows"], strict=True))
        for source, slice_index in zip(rec["sources"], rec["slice_index"], strict=True):
            label_rows.append(unit["label_row"])
            manifest_rows.append(
                {
                    "source": source,
                    "slice_index": int(slice_index),
                    "modality_label": unit["modality_label"],
                    "anatomy_label": unit["anatomy_label"],
                    "index_row": int(row_of_source.get(source, unit["index_rows"][0])),
                    **unit["extra"],
                }
            )
    manifest = pd.DataFrame(
        manifest_rows,
        columns=None if manifest_rows else ["source", "slice_index", "modality_label", "anatomy_label", "index_row"],
    )
    manifest.insert(0, "cache_row", np.arange(len(manifest), dtype=np.int64))
    labels = (
        np.asarray(unit_labels, dtype=np.float32)[np.asarray(label_rows, dtype=np.int64)]
        if label_rows
        else np.zeros((0, len(vocabulary.label_names)), np.float32)
    )
    gathered = _Gathered(arrays, np.asarray(which, dtype=np.int64), np.asarray(rows, dtype=np.int64), images.shape[1])
    write_cache(out, gathered, labels, manifest, vocabulary, errors=errors)
    summary = summarize(errors, notes, n_rows=len(manifest), n_units=len(units))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    n_excluded = sum(summary["excluded"].values())
    return CacheBuildResult(
        out, len(manifest), len(errors) - n_excluded, len(units), n_resumed, n_excluded=n_excluded, summary=summary
    )


def summarize(errors: list[dict[str, Any]], notes: dict[str, int], *, n_rows: int, n_units: int) -> dict[str, Any]:
    """``summary.json``: rows kept, rows left out by status and code, and the notes' counters."""
    excluded = Counter(e.get("code") or "unknown" for e in errors if e.get("status") == "excluded")
    failed = Counter(e.get("code") or "unknown" for e in errors if e.get("status") != "excluded")
    return {
        "images": n_rows,
        "units": n_units,
        "excluded": dict(sorted(excluded.items())),
        "errors": dict(sorted(failed.items())),
        "notes": dict(sorted(notes.items())),
    }


def build_cache_from_index(
    index_dir: str | Path,
    out: str | Path,
    settings: CacheSettings | None = None,
    *,
    window_config: str | Path | None = None,
    workers: int = 1,
    montage: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CacheBuildResult:
    """``modan-pacs cache --index DIR``: decode every image of an index (docs/commands/cache.md).

    Reads ``index.parquet``, ``labels.npy`` and ``vocabulary.yaml`` of ``index_dir``.

    Args:
        settings: how pixels become rows (None: :class:`CacheSettings` defaults); its screening and
            PET/NM options are described in :mod:`modan_pacs.pixels.screen`.
        window_config: YAML ``{anatomy: [center, width]}`` replacing ``settings.ct_windows``
            (None: the shipped table), checked against the index's anatomies.
        workers: decoding processes (1 = in this process).
        montage: write ``OUT/montage.png`` (:func:`modan_pacs.pixels.montage.write_montage`).
        overwrite: discard an existing cache or unfinished build at ``out``.
        progress: called with ``(units done, units total)`` after each unit.

    Raises:
        DataNotFoundError: the index folder or one of those files is missing.
        InputError / ConfigError: bad window file.
    """
    from modan_pacs.ingest import load_index

    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise DataNotFoundError(f"index folder {index_dir} does not exist (build it with `modan-pacs index`)")
    tables = load_index(index_dir)
    frame, labels, vocab = tables.frame, tables.labels, tables.vocabulary
    missing = [
        c
        for c in (
            "sop_instance_uid",
            "series_instance_uid",
            "modality",
            "number_of_frames",
            "path",
            "modality_label",
            "anatomy_label",
        )
        if c not in frame.columns
    ]
    if missing:
        raise InputError(f"{index_dir / 'index.parquet'} lacks columns {missing}")
    settings = (settings or CacheSettings()).with_windows(window_config, vocab.groups.get("anatomy"))
    units, planning_errors = plan_index_units(frame, settings)
    result = build_cache(
        units,
        labels,
        vocab,
        out,
        settings=settings,
        workers=workers,
        planning_errors=planning_errors,
        overwrite=overwrite,
        progress=progress,
    )
    if montage:
        from modan_pacs.pixels.montage import write_montage

        write_montage(out)
    return result


def default_workers() -> int:
    """Worker processes by default: the CPUs this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
