"""Build an image cache: decode every unit once, in worker processes, resumably.

A *unit* is what one worker decodes: a DICOM file (its frames chosen by the slice policy), a
series volume (single-frame CT/MR/PT/NM instances of one series, slices chosen by the policy,
assembled with SimpleITK) or a PNG/JPG image. Each planned slice owns a row of a pre-allocated
memory map in ``CACHE/.partial/images.npy``; finished units are appended to
``CACHE/.partial/done.jsonl``, so an interrupted build continues where it stopped when re-run with
the same settings. At the end the successful rows are copied into ``images.npy`` and the manifest,
labels, vocabulary and errors are written (docs/ARCHITECTURE.md, "cache"); ``.partial`` is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modan_pacs.errors import DataNotFoundError, InputError
from modan_pacs.pixels.cache import write_cache
from modan_pacs.pixels.decode import (
    display_frames,
    fit_square,
    parse_slice_policy,
    read_dicom_frames,
    read_series_slices,
    select_slices,
    to_uint8,
)
from modan_pacs.pixels.windows import CtWindows, load_ct_windows

__all__ = ["CacheSettings", "CacheBuildResult", "build_cache", "build_cache_from_index", "plan_index_units", "plan_record_units"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_MODALITIES = ("CT", "MR", "PT", "NM")


@dataclass
class CacheSettings:
    """How pixels become cache rows (recorded in ``.partial/settings.json`` to check a resume)."""

    size: int = 224
    slices: str = "middle"
    resize: str = "pad"
    ct_window: str = "anatomy"  # anatomy | header
    ct_windows: dict[str, list[float]] = field(default_factory=dict)
    series_volumes: bool = True

    def validate(self) -> None:
        if self.size < 8:
            raise InputError(f"--size must be >= 8; got {self.size}")
        parse_slice_policy(self.slices)
        if self.resize not in ("pad", "stretch"):
            raise InputError(f"--resize must be pad or stretch; got {self.resize!r}")
        if self.ct_window not in ("anatomy", "header"):
            raise InputError(f"--ct-window must be anatomy or header; got {self.ct_window!r}")


@dataclass
class CacheBuildResult:
    path: Path
    n_rows: int
    n_errors: int
    n_units: int
    n_resumed: int
    already_complete: bool = False


def _row_count(n_frames: Any, policy: str) -> int:
    try:
        n = int(n_frames)
    except (TypeError, ValueError):
        n = 1
    return len(select_slices(max(n, 1), policy))


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def plan_index_units(frame: pd.DataFrame, settings: CacheSettings) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Units of an index frame (one row per instance) and the rows that cannot be decoded locally.

    Single-frame instances of a CT/MR/PT/NM series with more than one instance form one series
    unit when ``settings.series_volumes``; every other instance is a file unit.
    """
    units: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    frame = frame.reset_index(drop=True)
    has_path = frame["path"].notna() & (frame["path"].astype("string").fillna("") != "")
    for i in np.flatnonzero(~has_path.to_numpy()):
        loc = frame.at[i, "location"] if "location" in frame.columns else None
        errors.append({"path": str(_clean(loc) or frame.at[i, "sop_instance_uid"]), "reason": "no local file (PACS index: retrieve the series first)"})
    local = frame[has_path.to_numpy()]
    n_frames = pd.to_numeric(local["number_of_frames"], errors="coerce").fillna(1).astype(int)
    in_volume = pd.Series(False, index=local.index)
    if settings.series_volumes:
        candidate = local["modality"].astype("string").str.upper().isin(VOLUME_MODALITIES) & (n_frames <= 1)
        sizes = local[candidate].groupby("series_instance_uid")["sop_instance_uid"].transform("size")
        in_volume.loc[sizes.index] = sizes > 1
    for series_uid, group in local[in_volume].groupby("series_instance_uid", sort=False):
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


def plan_record_units(records: pd.DataFrame, settings: CacheSettings, extra_columns: tuple[str, ...] = ()) -> list[dict[str, Any]]:
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
    return CtWindows({k: tuple(v) for k, v in settings.ct_windows.items()}).window(unit.get("anatomy_label"))


def decode_unit(unit: dict[str, Any], settings: CacheSettings) -> dict[str, Any]:
    """Decode one unit to ``(k, size, size) uint8`` slices; never raises for bad input (error recorded)."""
    try:
        if unit["kind"] == "image":
            from PIL import Image

            with Image.open(unit["paths"][0]) as im:
                gray = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
            images = [to_uint8(fit_square(gray, settings.size, settings.resize))]
            return {"ok": True, "images": np.stack(images), "sources": unit["sources"][:1], "slice_index": [0]}
        window = _window_for(unit, settings)
        if unit["kind"] == "series":
            decoded, chosen = read_series_slices(unit["paths"], settings.slices)
            display = display_frames(decoded, window=window)
            by_path = dict(zip(unit["paths"], unit["sources"], strict=True))
            sources = [by_path[str(p)] for p in chosen]
        else:
            decoded, raw = read_dicom_frames(unit["paths"][0], settings.slices)
            display = display_frames(decoded, window=window, raw=raw)
            sources = unit["sources"] * len(decoded.frame_indices)
        images = np.stack([to_uint8(fit_square(f, settings.size, settings.resize)) for f in display])
        return {"ok": True, "images": images, "sources": sources, "slice_index": list(decoded.frame_indices)}
    except InputError as exc:
        return {"ok": False, "reason": str(exc)}
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        return {"ok": False, "reason": f"{unit['paths'][0]}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def _decode_star(args: tuple[dict[str, Any], CacheSettings]) -> dict[str, Any]:
    return decode_unit(*args)


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


def _iter_results(todo: list[int], units: list[dict[str, Any]], settings: CacheSettings, workers: int) -> Iterator[tuple[int, dict[str, Any]]]:
    if workers <= 1:
        for i in todo:
            yield i, decode_unit(units[i], settings)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_star, [(units[i], settings) for i in todo], chunksize=max(1, min(16, len(todo) // (workers * 4) or 1)))
        yield from zip(todo, results, strict=True)


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

    settings.validate()
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
    state = {"settings": asdict(settings), "fingerprint": _fingerprint(units), "rows": total_rows}
    partial.mkdir(parents=True, exist_ok=True)
    state_file, done_file = partial / "settings.json", partial / "done.jsonl"
    done: dict[int, dict[str, Any]] = {}
    if state_file.is_file():
        previous = json.loads(state_file.read_text())
        if previous != state:
            raise InputError(f"{out} holds an unfinished build with other settings or inputs; pass --overwrite to start again")
        if done_file.is_file():
            for line in done_file.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    done[int(rec["unit"])] = rec
        images = np.lib.format.open_memmap(partial / "images.npy", mode="r+")
    else:
        state_file.write_text(json.dumps(state))
        done_file.unlink(missing_ok=True)
        images = np.lib.format.open_memmap(partial / "images.npy", mode="w+", dtype=np.uint8, shape=(max(total_rows, 0), settings.size, settings.size))
    n_resumed = len(done)
    todo = [i for i in range(len(units)) if i not in done]
    with done_file.open("a", encoding="utf-8") as log:
        for count, (i, result) in enumerate(_iter_results(todo, units, settings, workers), start=n_resumed + 1):
            unit = units[i]
            if result["ok"] and len(result["images"]) != unit["planned"]:
                result = {"ok": False, "reason": f"{unit['paths'][0]}: decoded {len(result['images'])} slices, planned {unit['planned']}"}
            if result["ok"]:
                images[offsets[i] : offsets[i] + unit["planned"]] = result["images"]
                rec = {"unit": i, "ok": True, "sources": result["sources"], "slice_index": [int(s) for s in result["slice_index"]]}
            else:
                rec = {"unit": i, "ok": False, "reason": result["reason"]}
            if count % 256 == 0:
                images.flush()
            log.write(json.dumps(rec) + "\n")
            log.flush()
            done[i] = rec
            if progress is not None:
                progress(count, len(units))
    images.flush()
    # finalize: successful units in plan order
    rows, manifest_rows, label_rows = [], [], []
    errors = list(planning_errors or [])
    for i, unit in enumerate(units):
        rec = done[i]
        if not rec["ok"]:
            errors.append({"path": unit["paths"][0], "reason": rec["reason"]})
            continue
        row_of_source = dict(zip(unit["sources"], unit["index_rows"], strict=True))
        for k, (source, slice_index) in enumerate(zip(rec["sources"], rec["slice_index"], strict=True)):
            rows.append(offsets[i] + k)
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
    manifest = pd.DataFrame(manifest_rows, columns=None if manifest_rows else ["source", "slice_index", "modality_label", "anatomy_label", "index_row"])
    manifest.insert(0, "cache_row", np.arange(len(manifest), dtype=np.int64))
    labels = np.asarray(unit_labels, dtype=np.float32)[np.asarray(label_rows, dtype=np.int64)] if label_rows else np.zeros((0, len(vocabulary.label_names)), np.float32)
    write_cache(out, _Rows(images, np.asarray(rows, dtype=np.int64)), labels, manifest, vocabulary, errors=errors)
    del images
    shutil.rmtree(partial, ignore_errors=True)
    return CacheBuildResult(out, len(manifest), len(errors), len(units), n_resumed)


def build_cache_from_index(
    index_dir: str | Path,
    out: str | Path,
    *,
    size: int = 224,
    slices: str = "middle",
    workers: int = 1,
    resize: str = "pad",
    ct_window: str = "anatomy",
    window_config: str | Path | None = None,
    series_volumes: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CacheBuildResult:
    """``modan-pacs cache --index DIR``: decode every image of an index (docs/commands/cache.md).

    Reads ``index.parquet``, ``labels.npy`` and ``vocabulary.yaml`` of ``index_dir``.

    Raises:
        DataNotFoundError: the index folder or one of those files is missing.
        InputError / ConfigError: bad options or window file.
    """
    from modan_pacs.errors import DataNotFoundError
    from modan_pacs.ingest import load_index

    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise DataNotFoundError(f"index folder {index_dir} does not exist (build it with `modan-pacs index`)")
    tables = load_index(index_dir)
    frame, labels, vocab = tables.frame, tables.labels, tables.vocabulary
    missing = [c for c in ("sop_instance_uid", "series_instance_uid", "modality", "number_of_frames", "path", "modality_label", "anatomy_label") if c not in frame.columns]
    if missing:
        raise InputError(f"{index_dir / 'index.parquet'} lacks columns {missing}")
    windows = load_ct_windows(window_config, anatomies=vocab.groups.get("anatomy"))
    settings = CacheSettings(size=size, slices=slices, resize=resize, ct_window=ct_window, ct_windows=windows.as_dict(), series_volumes=series_volumes)
    settings.validate()
    units, planning_errors = plan_index_units(frame, settings)
    return build_cache(units, labels, vocab, out, settings=settings, workers=workers, planning_errors=planning_errors, overwrite=overwrite, progress=progress)


def default_workers() -> int:
    """Worker processes by default: the CPUs this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
