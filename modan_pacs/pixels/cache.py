"""The image cache: decoded, fixed-size, memory-mappable pixels that training reads every epoch.

Layout of ``CACHE_DIR/`` (docs/ARCHITECTURE.md, "cache"):

- ``images.npy``: ``(N, S, S) uint8`` in ``np.lib.format`` (opened with ``mmap_mode="r"``);
- ``labels.npy``: ``(N, K) float32`` multi-hot, columns = ``vocabulary.label_names``;
- ``manifest.parquet``: ``cache_row, source, slice_index, modality_label, anatomy_label``
  (+ optional columns such as ``target``, ``split``, ``index_row``);
- ``vocabulary.yaml``: the vocabulary the labels were built with;
- ``errors.parquet``: ``path, reason, status, code, slice_index``: one row per input (file, or
  slice of one) left out: ``status = error`` when it could not be decoded, ``excluded`` when
  screening left it out (:mod:`modan_pacs.pixels.screen`); ``path`` names the file at fault;
- ``summary.json`` (``modan-pacs cache``): rows kept and rows left out by status and code;
- ``montage.png`` (``modan-pacs cache``): the QA montage (:mod:`modan_pacs.pixels.montage`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modan_pacs.errors import DataNotFoundError, InputError
from modan_pacs.fileio import atomic_write

if TYPE_CHECKING:
    from modan_pacs.labels import Vocabulary

__all__ = ["MANIFEST_COLUMNS", "ERROR_COLUMNS", "ImageCache", "load_cache", "write_cache", "write_errors"]

MANIFEST_COLUMNS = ("cache_row", "source", "slice_index", "modality_label", "anatomy_label")
ERROR_COLUMNS = ("path", "reason", "status", "code", "slice_index")
CACHE_FILES = ("images.npy", "labels.npy", "manifest.parquet", "vocabulary.yaml")
REPORT_FILES = ("errors.parquet", "summary.json", "montage.png")


@dataclass
class ImageCache:
    """A loaded cache.

    Attributes:
        images: ``(N, S, S) uint8`` memory map (read-only); ``images[i]`` is cache row ``i``.
        labels: ``(N, K) float32`` multi-hot labels.
        manifest: one row per cache row (``cache_row == arange(N)``).
        vocabulary: the :class:`~modan_pacs.labels.Vocabulary` of the label columns.
        path: the cache folder.
    """

    images: np.ndarray
    labels: np.ndarray
    manifest: pd.DataFrame
    vocabulary: Vocabulary
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Side ``S`` of the square cached images."""
        return int(self.images.shape[1])


def _copy_to_npy(images: np.ndarray, path: Path) -> None:
    """Copy ``images`` into a new ``.npy`` file in 64 MiB chunks (``images`` may be a memory map)."""
    target = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=images.shape)
    chunk = max(1, (64 << 20) // max(1, images.shape[1] * images.shape[2]))
    for start in range(0, images.shape[0], chunk):
        target[start : start + chunk] = images[start : start + chunk]
    target.flush()
    del target


def _check_arrays(images: np.ndarray, labels: np.ndarray, manifest: pd.DataFrame, n_labels: int | None) -> None:
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputError(f"images must have shape (N, S, S); got {tuple(images.shape)}")
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8; got {images.dtype}")
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise InputError(f"labels must have shape (N, K) with N = {images.shape[0]}; got {tuple(labels.shape)}")
    if n_labels is not None and labels.shape[1] != n_labels:
        raise InputError(f"labels have {labels.shape[1]} columns but the vocabulary has {n_labels} label names")
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise InputError(f"manifest lacks columns {missing} (has {list(manifest.columns)})")
    if len(manifest) != images.shape[0]:
        raise InputError(f"manifest has {len(manifest)} rows but images has {images.shape[0]}")
    if not np.array_equal(manifest["cache_row"].to_numpy(), np.arange(len(manifest))):
        raise InputError("manifest column cache_row must be 0..N-1 in order")


def write_errors(path: str | Path, errors: pd.DataFrame | list[dict[str, Any]] | None) -> Path:
    """Write an ``errors.parquet`` with at least :data:`ERROR_COLUMNS` (empty table when None).

    A row without ``status`` is an error (``code`` ``decode_error``)."""
    frame = pd.DataFrame(errors if errors is not None else [], columns=None)
    for column in ERROR_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series([None] * len(frame), dtype="object")
    frame = frame[list(ERROR_COLUMNS) + [c for c in frame.columns if c not in ERROR_COLUMNS]]
    frame["status"] = frame["status"].fillna("error")
    frame["code"] = frame["code"].where(
        frame["code"].notna(), np.where(frame["status"] == "excluded", "excluded", "decode_error")
    )
    for column in ("path", "reason", "status", "code"):
        frame[column] = frame[column].astype("string")
    frame["slice_index"] = pd.array([None if pd.isna(v) else int(v) for v in frame["slice_index"]], dtype="Int64")
    out = Path(path)
    frame.to_parquet(out, index=False)
    return out


def _save_vocabulary(vocabulary: Vocabulary | str | Path, out: Path) -> Vocabulary:
    from modan_pacs.labels import Vocabulary

    if isinstance(vocabulary, (str, Path)):
        vocabulary = Vocabulary.load(vocabulary)
    if not isinstance(vocabulary, Vocabulary):
        raise InputError(f"vocabulary must be a Vocabulary or a YAML path; got {type(vocabulary).__name__}")
    vocabulary.save(out)
    return vocabulary


def write_cache(
    directory: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    manifest: pd.DataFrame,
    vocabulary: Vocabulary | str | Path,
    *,
    errors: pd.DataFrame | list[dict[str, Any]] | None = None,
) -> Path:
    """Write a complete cache folder (see module docstring); returns the folder.

    ``images`` may itself be a memory map; it is copied in chunks into a new ``images.npy``
    (``np.lib.format.open_memmap``), so memory use stays bounded.

    Raises:
        InputError: shapes, dtypes or manifest columns do not follow the contract.
    """
    from modan_pacs.labels import Vocabulary

    out = Path(directory)
    vocab = Vocabulary.load(vocabulary) if isinstance(vocabulary, (str, Path)) else vocabulary
    labels = np.asarray(labels)
    _check_arrays(images, labels, manifest, len(vocab.label_names))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "images.npy", lambda tmp: _copy_to_npy(images, tmp))
    np.save(out / "labels.npy", labels.astype(np.float32))
    manifest = manifest.reset_index(drop=True)
    manifest.to_parquet(out / "manifest.parquet", index=False)
    _save_vocabulary(vocab, out / "vocabulary.yaml")
    write_errors(out / "errors.parquet", errors)
    return out


def load_cache(directory: str | Path, *, mmap: bool = True) -> ImageCache:
    """Open a cache folder written by :func:`write_cache` or ``modan-pacs cache``.

    Args:
        directory: the cache folder.
        mmap: memory-map ``images.npy`` read-only (default) instead of reading it into memory.

    Raises:
        DataNotFoundError: the folder or one of its files is missing.
        InputError: the files disagree (row counts, label columns).
    """
    path = Path(directory)
    if not path.is_dir():
        raise DataNotFoundError(f"cache folder {path} does not exist (build it with `modan-pacs cache`)")
    missing = [name for name in CACHE_FILES if not (path / name).is_file()]
    if missing:
        raise DataNotFoundError(
            f"cache folder {path} lacks {', '.join(missing)} (an interrupted build? re-run `modan-pacs cache`)"
        )
    from modan_pacs.labels import Vocabulary

    images = np.load(path / "images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(path / "labels.npy").astype(np.float32, copy=False)
    manifest = pd.read_parquet(path / "manifest.parquet")
    vocabulary = Vocabulary.load(path / "vocabulary.yaml")
    try:
        _check_arrays(images, labels, manifest, len(vocabulary.label_names))
    except InputError as exc:
        raise InputError(f"cache {path}: {exc}") from None
    return ImageCache(images=images, labels=labels, manifest=manifest, vocabulary=vocabulary, path=path)


def remove_cache_files(directory: str | Path) -> None:
    """Delete the files of a cache folder (used by ``--overwrite``); other files are left alone."""
    path = Path(directory)
    for name in (*CACHE_FILES, *REPORT_FILES):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / ".partial", ignore_errors=True)
