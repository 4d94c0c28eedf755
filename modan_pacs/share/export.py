"""``modan-pacs share``: a shareable copy of a cache, de-identified after DICOM PS3.15's Basic
Application Level Confidentiality Profile with the Clean Descriptors Option (Annex E).

The working index stays at the hospital: it may carry file paths (folders are often named after
patients), free-text descriptions and the original UIDs. ``SHARE/`` holds only:

- ``images.npy``: the cached images (``(N, S, S) uint8``), as ``modan-pacs cache`` wrote them;
- ``labels.npy`` and ``labels.json``: the multi-hot labels and their column names / groups (not
  the vocabulary's matching rules, which may quote local descriptions);
- ``manifest.parquet``: :data:`SHARE_MANIFEST_COLUMNS`: a row number, the slice index, the
  modality and anatomy labels, and the SOP / Series / Study Instance UIDs and the patient replaced
  by salted hashes (``U`` and ``Z`` actions of PS3.15 Table E.1-1: UIDs become ``2.25.<128-bit
  integer>`` UIDs, consistent within the share and across shares made with the same salt);
- ``summary.json``: counts (images, patients, studies, series; what the cache screened out, by code);
- ``README.md``: what was removed, what was kept and why.

Removed (``X``): every path, file name, PACS location, file size and time; every date and time;
every free-text descriptor (study / series description, protocol name, body part as written,
anatomic region text, manufacturer); the cache's ``errors.parquet`` (file paths) and
``montage.png`` (it shows excluded images). The salt stays in its file outside the share.

The Clean Pixel Data option is *not* claimed: screening excluded images flagged Burned In
Annotation = YES and cropped ultrasound to its data regions (:mod:`modan_pacs.pixels.screen`), but
an image whose header does not flag burned-in text may still show it: look at the montage first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from modan_pacs.errors import InputError

__all__ = ["SHARE_FILES", "SHARE_MANIFEST_COLUMNS", "ShareReport", "share_dataset", "hashed_uid"]

SHARE_FILES = ("images.npy", "labels.npy", "labels.json", "manifest.parquet", "summary.json", "README.md")
SHARE_MANIFEST_COLUMNS = (
    "row",
    "image_uid",
    "series_uid",
    "study_uid",
    "patient_id",
    "slice_index",
    "modality_label",
    "anatomy_label",
)
# index columns whose values must never appear in a share (checked cell by cell before writing)
_LOCAL_ONLY_COLUMNS = (
    "sop_instance_uid",
    "series_instance_uid",
    "study_instance_uid",
    "patient_hash",
    "path",
    "location",
    "study_description",
    "series_description",
    "protocol_name",
    "body_part_examined",
    "anatomic_region_meaning",
    "manufacturer",
)


@dataclass
class ShareReport:
    """What ``share_dataset`` wrote: the folder and its counts."""

    path: Path
    n_images: int
    n_patients: int
    n_studies: int
    n_series: int


def hashed_uid(uid: str, salt: bytes, kind: str) -> str:
    """``2.25.<int>``: a valid DICOM UID from the first 128 bits of ``SHA-256(salt, kind, uid)``."""
    digest = hashlib.sha256(salt + b"\0" + kind.encode() + b"\0" + uid.encode("utf-8")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big') or 1}"


def _hashed_patient(patient_hash: str | None, salt: bytes) -> str | None:
    if patient_hash is None or pd.isna(patient_hash) or not str(patient_hash):
        return None
    return hashlib.sha256(salt + b"\0patient\0" + str(patient_hash).encode()).hexdigest()[:32]


def _check_folders(index_dir: Path, cache_dir: Path, out: Path, overwrite: bool) -> None:
    for name, folder in (("--index", index_dir), ("--cache", cache_dir)):
        if not folder.is_dir():
            raise InputError(f"{name} {folder} does not exist")
    resolved = out.resolve()
    for name, folder in (("--index", index_dir), ("--cache", cache_dir)):
        inside = folder.resolve()
        if resolved == inside or inside in resolved.parents or resolved in inside.parents:
            raise InputError(f"--out {out} must be outside {name} {folder} (the share is what leaves; they stay)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} is not empty; pass --overwrite to replace it")


def _shared_manifest(
    index: pd.DataFrame, manifest: pd.DataFrame, vocabulary, salt: bytes, index_dir: Path, cache_dir: Path
) -> pd.DataFrame:
    """The share's manifest (module docstring); refuses a cache that was not built from ``index``."""
    if "index_row" not in manifest.columns:
        raise InputError(
            f"cache {cache_dir} has no index_row column: "
            f"share needs a cache built with `modan-pacs cache --index {index_dir}`"
        )
    rows = manifest["index_row"].to_numpy(dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(index)):
        raise InputError(
            f"cache {cache_dir} points at index rows up to {int(rows.max())}, but {index_dir} has {len(index)}"
        )
    picked = index.iloc[rows].reset_index(drop=True)
    mismatch = np.flatnonzero(
        picked["sop_instance_uid"].astype(str).to_numpy() != manifest["source"].astype(str).to_numpy()
    )
    if len(mismatch):
        raise InputError(
            f"cache {cache_dir} was not built from index {index_dir} "
            f"(cache row {int(mismatch[0])} names another instance)"
        )
    for column, group in (("modality_label", "modality"), ("anatomy_label", "anatomy")):
        odd = sorted({str(v) for v in manifest[column].dropna()} - set(vocabulary.groups.get(group, [])))
        if odd:
            raise InputError(f"cache {cache_dir}: {column} values {odd[:3]} are not {group} names of its vocabulary")

    def uids(column: str, kind: str) -> list[str | None]:
        values = picked[column].astype("string")
        return [None if pd.isna(v) or not v else hashed_uid(str(v), salt, kind) for v in values]

    return pd.DataFrame(
        {
            "row": np.arange(len(manifest), dtype=np.int64),
            "image_uid": uids("sop_instance_uid", "sop"),
            "series_uid": uids("series_instance_uid", "series"),
            "study_uid": uids("study_instance_uid", "study"),
            "patient_id": [_hashed_patient(v, salt) for v in picked["patient_hash"]],
            "slice_index": manifest["slice_index"].astype("int64").to_numpy(),
            "modality_label": manifest["modality_label"].astype("string"),
            "anatomy_label": manifest["anatomy_label"].astype("string"),
        },
        columns=list(SHARE_MANIFEST_COLUMNS),
    )


def _assert_nothing_local(shared: pd.DataFrame, index: pd.DataFrame) -> None:
    """Defence in depth: no cell of the share equals a value the index keeps local."""
    local = set()
    for column in _LOCAL_ONLY_COLUMNS:
        if column in index.columns:
            local |= {str(v) for v in index[column].dropna()}
    for column in shared.columns:
        hits = {str(v) for v in shared[column].dropna()} & local
        if hits:
            raise InputError(f"share manifest column {column} would carry a local value; nothing written")


def _readme(summary: dict, label_names: list[str], size: int) -> str:
    excluded = summary["cache_excluded"]
    screened = ", ".join(f"{code} {n}" for code, n in excluded.items()) or "none"
    return f"""# A shared image set (modan-pacs share)

{summary["images"]} images ({size} x {size} pixels, 8-bit grey) of {summary["patients"]} patients,
{summary["studies"]} studies and {summary["series"]} series, with modality and anatomy labels.

De-identified after DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile with the
Clean Descriptors Option. Clean Pixel Data is not claimed (see "Pixels").

## Files

| file | holds |
|---|---|
| `images.npy` | `(N, {size}, {size}) uint8` images, row i = manifest row i |
| `labels.npy` | `(N, K) float32` multi-hot labels; columns = `labels.json` `label_names` |
| `labels.json` | the label names and their groups (modality, anatomy) |
| `manifest.parquet` | `{", ".join(SHARE_MANIFEST_COLUMNS)}` |
| `summary.json` | these counts |

## Removed

- every file path, file name, folder name, PACS address, file size and time;
- every date and time (study, series, acquisition, birth, file times);
- every free-text descriptor: study and series description, protocol name, body part and anatomic
  region as written, manufacturer;
- patient name, ID, birth date, sex, age, address and every other patient attribute
  (the index never stores them);
- the working index and the cache's error list and QA montage (they name local files or show
  excluded images).

## Replaced

- SOP, Series and Study Instance UIDs by `2.25.<integer>` UIDs: the first 128 bits of a salted
  SHA-256, the same original always giving the same replacement, so images of one series or study
  stay grouped; they cannot be traced back without the salt, which stays at the site;
- the patient by `patient_id`, a salted hash of the index's (already salted) patient hash.

## Kept

- the pixels as cached: windowed, resized, 8-bit;
- labels from the label vocabulary (`labels.json`); the slice index within its series or file.

## Pixels

Before caching, screening excluded images that are not of a patient (segmentations, RT objects,
reports, presentation states, documents), secondary captures that are not ORIGINAL\\PRIMARY,
images flagged Burned In Annotation = YES and near-constant images, and cropped ultrasound to its
image regions: {screened}. An image whose header does not flag burned-in text may still show text.
Labels: {len(label_names)} columns.
"""


def share_dataset(
    *,
    index_dir: str | Path,
    cache_dir: str | Path,
    out: str | Path,
    salt_file: str | Path | None = None,
    overwrite: bool = False,
) -> ShareReport:
    """Write the shareable folder ``out`` from a local index and its cache (module docstring).

    Args:
        index_dir: the working index (``modan-pacs index``), which stays local.
        cache_dir: its cache (``modan-pacs cache --index index_dir``).
        out: the share folder (outside both); written to a temporary folder and renamed into place.
        salt_file: salt of the hashed UIDs (default: the site's salt, as for ``index``); it is read,
            never copied.
        overwrite: replace a non-empty ``out``.

    Raises:
        InputError: a folder is missing, ``out`` is inside one of them or not empty, the cache was
            not built from this index, or a shared cell would equal a local value.
    """
    from modan_pacs.ingest import load_index, load_or_create_salt
    from modan_pacs.pixels import load_cache

    index_dir, cache_dir, out = Path(index_dir), Path(cache_dir), Path(out)
    _check_folders(index_dir, cache_dir, out, overwrite)
    tables = load_index(index_dir)
    cache = load_cache(cache_dir)
    salt = load_or_create_salt(salt_file, forbidden_dir=None)
    shared = _shared_manifest(tables.frame, cache.manifest, cache.vocabulary, salt, index_dir, cache_dir)
    _assert_nothing_local(shared, tables.frame)
    cache_summary = {}
    if (cache_dir / "summary.json").is_file():
        cache_summary = json.loads((cache_dir / "summary.json").read_text(encoding="utf-8"))
    summary = {
        "images": len(shared),
        "patients": int(shared["patient_id"].nunique()),
        "studies": int(shared["study_uid"].nunique()),
        "series": int(shared["series_uid"].nunique()),
        "cache_excluded": {str(k): int(v) for k, v in (cache_summary.get("excluded") or {}).items()},
        "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, Clean Descriptors Option",
    }
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=cache.images.shape)
        step = max(1, (64 << 20) // max(1, cache.size * cache.size))
        for start in range(0, len(cache), step):
            images[start : start + step] = cache.images[start : start + step]
        images.flush()
        del images
        np.save(tmp / "labels.npy", cache.labels.astype(np.float32))
        groups = {k: list(v) for k, v in cache.vocabulary.groups.items()}
        (tmp / "labels.json").write_text(
            json.dumps({"label_names": list(cache.vocabulary.label_names), "groups": groups}, indent=2) + "\n",
            encoding="utf-8",
        )
        shared.to_parquet(tmp / "manifest.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(
            _readme(summary, list(cache.vocabulary.label_names), cache.size), encoding="utf-8"
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ShareReport(out, summary["images"], summary["patients"], summary["studies"], summary["series"])
