"""Image sources other than a DICOM index, as records for the cache builder.

- a CSV with ``path, modality, anatomy`` columns (the ``metadata.csv`` files of ../shared/data);
- a folder laid out ``DIR/<modality>/<anatomy>/**/<image>``;
- RadImageNet's PNG layout ``DIR/<modality>/<anatomy>/<class>/*.png``, sampled to miniRIN
  (up to ``per_class`` images per class, all where a class has fewer; paper: 100 -> 16,222 images).

Every source yields a DataFrame of records ``path`` (absolute), ``modality_label``,
``anatomy_label`` (canonical vocabulary values or None) plus source-specific columns, which
:func:`build_cache_from_records` decodes into a cache (docs/ARCHITECTURE.md, "cache").
Raw values are mapped through the :class:`~modan_pacs.labels.Vocabulary`; unmapped values leave
the group empty and are reported by :func:`unmapped_values`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from modan_pacs.errors import DataNotFoundError, InputError
from modan_pacs.fileio import IMAGE_SUFFIXES
from modan_pacs.pixels.build import CacheBuildResult, CacheSettings, build_cache, plan_record_units

__all__ = [
    "build_cache_from_records",
    "build_minirin",
    "read_image_csv",
    "read_image_folder",
    "scan_radimagenet",
    "sample_minirin",
    "unmapped_values",
]

SOURCE_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm")


def _map_labels(frame: pd.DataFrame, vocab) -> pd.DataFrame:
    frame = frame.copy()
    frame["modality_label"] = [vocab.map_modality(m) if isinstance(m, str) and m else None for m in frame["modality"]]
    frame["anatomy_label"] = [
        vocab.map_anatomy(body_part=a, texts=[a])[0] if isinstance(a, str) and a else None for a in frame["anatomy"]
    ]
    return frame


def unmapped_values(records: pd.DataFrame) -> pd.DataFrame:
    """Counts of raw ``modality`` / ``anatomy`` values that did not map to the vocabulary."""
    rows = []
    for group in ("modality", "anatomy"):
        raw, mapped = records[group], records[f"{group}_label"]
        miss = raw[mapped.isna() & raw.notna()]
        for value, count in miss.value_counts().items():
            rows.append({"group": group, "raw_value": value, "count": int(count)})
    return pd.DataFrame(rows, columns=["group", "raw_value", "count"])


def read_image_csv(csv: str | Path, vocabulary, *, root: str | Path | None = None) -> pd.DataFrame:
    """Records of a CSV with columns ``path, modality, anatomy`` (others are kept).

    Relative paths are resolved against ``root``; by default against the CSV's folder, or its
    parent when every path starts with the CSV folder's own name (the ``metadata.csv`` files of
    ../shared/data, whose paths are relative to ``data/``).

    Raises:
        DataNotFoundError: the CSV is missing.
        InputError: a required column is missing or a listed file does not exist (first one named).
    """
    csv = Path(csv)
    if not csv.is_file():
        raise DataNotFoundError(f"CSV file {csv} does not exist")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
    missing = [c for c in ("path", "modality", "anatomy") if c not in frame.columns]
    if missing:
        raise InputError(f"{csv} lacks columns {missing} (has {list(frame.columns)})")
    if root is None:
        own = csv.parent.name
        rel = [Path(p) for p in frame["path"] if not Path(p).is_absolute()]
        root = csv.parent.parent if rel and all(p.parts and p.parts[0] == own for p in rel) else csv.parent
    root = Path(root)
    frame["path"] = [str(Path(p) if Path(p).is_absolute() else (root / p)) for p in frame["path"]]
    absent = [p for p in frame["path"] if not Path(p).is_file()]
    if absent:
        raise InputError(f"{csv}: {len(absent)} listed files do not exist, e.g. {absent[0]}")
    return _map_labels(frame, vocabulary)


def read_image_folder(folder: str | Path, vocabulary) -> pd.DataFrame:
    """Records of a folder laid out ``<modality>/<anatomy>/**/<file>`` (PNG/JPG/... or .dcm).

    Raises:
        DataNotFoundError: the folder is missing or holds no image at that depth.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"image folder {folder} does not exist")
    rows = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in SOURCE_SUFFIXES:
            parts = path.relative_to(folder).parts
            if len(parts) >= 3:
                rows.append({"path": str(path), "modality": parts[0], "anatomy": parts[1]})
    if not rows:
        raise DataNotFoundError(f"{folder}: no images found in the layout <modality>/<anatomy>/**/<image>")
    return _map_labels(pd.DataFrame(rows), vocabulary)


def scan_radimagenet(root: str | Path, vocabulary) -> pd.DataFrame:
    """All images of a RadImageNet tree ``<modality>/<anatomy>/<class>/<image>``, sorted by path.

    Columns: ``path, modality, anatomy, class_name`` (``"CT/abd/acute_pancreatitis"``),
    ``modality_label, anatomy_label`` (from :meth:`Vocabulary.map_radimagenet`).

    Raises:
        DataNotFoundError: no image in that layout.
        InputError: a modality or anatomy folder name the vocabulary does not know.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(
            f"RadImageNet folder {root} does not exist (layout: <modality>/<anatomy>/<class>/*.png)"
        )
    rows = []
    mapped: dict[tuple[str, str], tuple[str, str]] = {}
    for path in sorted(root.glob("*/*/*/*")):
        if not (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
            continue
        modality, anatomy, cls = path.relative_to(root).parts[:3]
        if (modality, anatomy) not in mapped:
            mapped[(modality, anatomy)] = vocabulary.map_radimagenet(modality, anatomy)
        m_label, a_label = mapped[(modality, anatomy)]
        rows.append(
            {
                "path": str(path),
                "modality": modality,
                "anatomy": anatomy,
                "class_name": f"{modality}/{anatomy}/{cls}",
                "modality_label": m_label,
                "anatomy_label": a_label,
            }
        )
    if not rows:
        raise DataNotFoundError(f"{root}: no images in the RadImageNet layout <modality>/<anatomy>/<class>/*.png")
    return pd.DataFrame(rows)


def sample_minirin(images: pd.DataFrame, *, per_class: int = 100, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_class`` images per class (all where a class has fewer), drawn with ``seed``.

    The draw per class uses ``numpy.random.default_rng([seed, class number])`` over the class's
    paths in sorted order, so it does not depend on file-system order. Adds ``target`` (class
    number in sorted class-name order). Result sorted by class, then path.

    Raises:
        InputError: ``per_class`` < 1.
    """
    if per_class < 1:
        raise InputError(f"--per-class must be >= 1; got {per_class}")
    classes = sorted(images["class_name"].unique())
    parts = []
    for number, name in enumerate(classes):
        group = images[images["class_name"] == name].sort_values("path")
        if len(group) > per_class:
            rng = np.random.default_rng([int(seed), number])
            group = group.iloc[np.sort(rng.choice(len(group), size=per_class, replace=False))]
        parts.append(group.assign(target=number))
    return pd.concat(parts, ignore_index=True)


def build_cache_from_records(
    records: pd.DataFrame,
    vocabulary,
    out: str | Path,
    settings: CacheSettings | None = None,
    *,
    window_config: str | Path | None = None,
    extra_columns: tuple[str, ...] = (),
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CacheBuildResult:
    """Decode records (``path, modality_label, anatomy_label`` + ``extra_columns``) into a cache.

    ``settings`` is a :class:`~modan_pacs.pixels.build.CacheSettings` (None: its defaults); records
    are single images or files, so its ``series_volumes`` is switched off. ``window_config`` and the
    other keywords are those of :func:`~modan_pacs.pixels.build.build_cache_from_index`;
    ``extra_columns`` are copied into the manifest (e.g. ``target``, ``class_name``, ``label``).
    """
    missing = [c for c in ("path", "modality_label", "anatomy_label", *extra_columns) if c not in records.columns]
    if missing:
        raise InputError(f"records lack columns {missing}")
    settings = (settings or CacheSettings()).with_windows(window_config, vocabulary.groups.get("anatomy"))
    settings = settings.model_copy(update={"series_volumes": False})
    records = records.reset_index(drop=True)
    labels = vocabulary.encode_frame(records)
    units = plan_record_units(records, settings, extra_columns)
    return build_cache(
        units, labels, vocabulary, out, settings=settings, workers=workers, overwrite=overwrite, progress=progress
    )


def build_minirin(
    radimagenet_dir: str | Path,
    out: str | Path,
    *,
    per_class: int = 100,
    seed: int = 0,
    size: int = 224,
    workers: int = 1,
    vocabulary_path: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[CacheBuildResult, pd.DataFrame]:
    """``modan-pacs minirin``: sample miniRIN from RadImageNet and cache it.

    Writes the cache (manifest columns ``target``, ``class_name`` for the 165-class supervised
    baseline) plus ``OUT/minirin.csv`` (the selection) and ``OUT/classes.txt`` (target -> class).

    Returns:
        ``(build result, selection)``.
    """
    from modan_pacs.labels import Vocabulary

    vocab = Vocabulary.load(vocabulary_path)
    selection = sample_minirin(scan_radimagenet(radimagenet_dir, vocab), per_class=per_class, seed=seed)
    result = build_cache_from_records(
        selection,
        vocab,
        out,
        CacheSettings(size=size),
        workers=workers,
        extra_columns=("target", "class_name"),
        overwrite=overwrite,
        progress=progress,
    )
    root = Path(radimagenet_dir)
    listing = selection.assign(path=[str(Path(p).relative_to(root)) for p in selection["path"]])
    listing[["path", "class_name", "target", "modality_label", "anatomy_label"]].to_csv(
        Path(out) / "minirin.csv", index=False
    )
    classes = selection.drop_duplicates("target").sort_values("target")["class_name"]
    (Path(out) / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    return result, selection
