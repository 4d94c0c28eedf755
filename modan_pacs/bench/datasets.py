"""Downstream datasets of the benchmark: thyroid (DDTI), breast (BUSI), acl (MRNet), csv.

Each loader returns a :class:`DownstreamDataset`: one record per image with a binary ``label``
and a ``group`` that cross-validation must keep in one fold. Groups join the images of one case
(DDTI case number, MRNet exam, CSV ``patient_id``), byte-identical image files (DDTI and BUSI hold
duplicates) and, for the 2-D image sets (thyroid, breast, csv), near-duplicates: the same scene
under another name, adjacent frames of one sweep included
(:mod:`modan_pacs.bench.near_duplicates`, thumbnail correlation >= ``near_duplicate_threshold``).
A group is a connected component of the "same case", "same bytes" and "same scene" relations.
Label-discordant duplicates are listed in ``DownstreamDataset.duplicates``; with
``discordant_duplicates: drop`` both images of such a pair are left out.

With no data folder, ``$MODAN_PACS_DATA/<ddti|busi|mrnet>`` is used (default
``~/modan-pacs-data``); a missing dataset raises :class:`DataNotFoundError` naming where to get it
and the layout expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from modan_pacs.errors import DataNotFoundError, InputError
from modan_pacs.fileio import IMAGE_SUFFIXES, gray_array, is_missing
from modan_pacs.slice_policy import select_slices

from .config import TIRADS_ORDER, BenchmarkConfig
from .near_duplicates import PAIR_COLUMNS, discordant, find_near_duplicates, identical_pairs

DATASETS = ("thyroid", "breast", "acl", "csv")
DEFAULT_DIRS = {"thyroid": "ddti", "breast": "busi", "acl": "mrnet"}
SOURCES = {
    "thyroid": (
        "DDTI, Pedraza et al. 2015, http://cimalab.unal.edu.co/applications/thyroid/ "
        "(Kaggle mirror: 'ddti thyroid ultrasound images')"
    ),
    "breast": (
        "BUSI, Al-Dhabyani et al. 2020, https://scholar.cu.edu.eg/?q=afahmy/pages/dataset "
        "(Kaggle: 'breast-ultrasound-images-dataset')"
    ),
    "acl": "MRNet, Bien et al. 2018, https://stanfordmlgroup.github.io/competitions/mrnet/ (registration required)",
    "csv": "your own labelled images",
}
LAYOUTS = {
    "thyroid": (
        "either N.xml (with <tirads>) beside N_M.jpg images (original DDTI), "
        "or metadata.csv with path,tirads,patient_id beside the crops"
    ),
    "breast": "benign/, malignant/ and optionally normal/ folders of PNG images; *_mask* files are ignored",
    "acl": (
        "train/ and valid/ with axial/, coronal/, sagittal/ NNNN.npy volumes, "
        "plus train-acl.csv and valid-acl.csv (id,label; no header)"
    ),
    "csv": "a CSV file (or a folder holding labels.csv) with columns path,label and optionally patient_id",
}


@dataclass
class DownstreamDataset:
    """A binary downstream task.

    Attributes:
        name: ``thyroid``, ``breast``, ``acl`` or ``csv``.
        records: one row per image: ``item`` (unique id), ``label`` (0/1), ``group`` (kept in one
            fold), ``path`` (image file or ``.npy`` volume), ``slice`` (volume slice, -1 for 2-D
            files), ``box`` (crop ``(left, top, right, bottom)`` or None).
        root: the data folder.
        notes: what was dropped or changed on the way (shown in the run log).
        duplicates: the same-image links found (:data:`~modan_pacs.bench.near_duplicates.PAIR_COLUMNS`:
            ``item_a, item_b, label_a, label_b, correlation, kind``; ``kind`` = ``identical``
            (same bytes) or ``near`` (thumbnail correlation)), before any discordant pair is dropped.
    """

    name: str
    records: pd.DataFrame
    root: Path
    notes: list[str] = field(default_factory=list)
    duplicates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIR_COLUMNS))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return self.records["label"].to_numpy(dtype=np.int64)


def default_data_dir(dataset: str) -> Path:
    """``$MODAN_PACS_DATA/<ddti|busi|mrnet>`` (``MODAN_PACS_DATA`` defaults to ``~/modan-pacs-data``)."""
    root = Path(os.environ.get("MODAN_PACS_DATA", Path.home() / "modan-pacs-data")).expanduser()
    return root / DEFAULT_DIRS[dataset]


def _not_found(dataset: str, path: Path, detail: str = "") -> DataNotFoundError:
    what = f" ({detail})" if detail else ""
    return DataNotFoundError(
        f"{dataset} dataset not found at {path}{what}; get it from {SOURCES[dataset]}; "
        f"expected layout: {LAYOUTS[dataset]}"
    )


def file_digest(path: Path) -> str:
    """MD5 of a file's bytes (to group byte-identical images)."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def merge_groups(*keys: list[str], links: list[tuple[int, int]] = ()) -> list[str]:
    """Connected components of items that share any key (e.g. case id or file digest) or are
    joined by a link (a pair of item indices, e.g. near-duplicates).

    ``merge_groups(cases, digests)[i] == merge_groups(cases, digests)[j]`` iff items i and j are
    linked by a chain of equal cases, equal digests or links. Group names are the smallest item index.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(keys[0])
    rows, cols = [], []
    offset = n
    for key in keys:
        codes, _ = pd.factorize(pd.Series(key, dtype="object"))
        for i, code in enumerate(codes):
            if code >= 0:  # NaN/None keys link nothing
                rows.append(i)
                cols.append(offset + code)
        offset += int(codes.max()) + 1 if len(codes) else 0
    for a, b in links:
        rows.append(int(a))
        cols.append(int(b))
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(offset, offset))
    _, component = connected_components(graph, directed=False)
    first = {}
    for i in range(n):
        first.setdefault(component[i], i)
    return [f"g{first[component[i]]:06d}" for i in range(n)]


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["item", "label", "case", "path", "slice", "box", "digest"])
    frame["label"] = frame["label"].astype(np.int64)
    frame["slice"] = frame["slice"].astype(np.int64)
    return frame


def _same_image_links(name: str, frame: pd.DataFrame, cfg: BenchmarkConfig) -> pd.DataFrame:
    """Identical-file pairs and (2-D image sets, unless switched off) near-duplicate pairs."""
    items, labels = frame["item"].tolist(), frame["label"].tolist()
    found = [identical_pairs(items, labels, frame["digest"].tolist())]
    if cfg.near_duplicates and name != "acl":
        records = frame.to_dict(orient="records")
        found.append(
            find_near_duplicates(
                items,
                labels,
                lambda i: load_pixels(records[i]),
                threshold=cfg.near_duplicate_threshold,
                size=cfg.near_duplicate_size,
            )
        )
    pairs = (
        pd.concat([f for f in found if not f.empty], ignore_index=True) if any(not f.empty for f in found) else found[0]
    )
    # a pair that is byte-identical is listed once, as identical
    pairs = pairs.drop_duplicates(subset=["item_a", "item_b"], keep="first")
    return pairs.sort_values(["item_a", "item_b"], kind="stable").reset_index(drop=True)


def _finish(name: str, frame: pd.DataFrame, root: Path, notes: list[str], cfg: BenchmarkConfig) -> DownstreamDataset:
    if frame.empty:
        raise InputError(f"{name} dataset at {root}: no labelled image left ({'; '.join(notes) or 'nothing found'})")
    if frame["item"].duplicated().any():
        raise InputError(
            f"{name} dataset at {root}: duplicate item {frame['item'][frame['item'].duplicated()].iloc[0]!r}"
        )
    classes = set(frame["label"].unique())
    if classes != {0, 1}:
        raise InputError(
            f"{name} dataset at {root}: only class {sorted(classes)} present; a binary task needs both 0 and 1"
        )
    frame = frame.sort_values("item", kind="stable").reset_index(drop=True)
    pairs = _same_image_links(name, frame, cfg)
    clash = discordant(pairs)
    if len(clash):
        if cfg.discordant_duplicates == "drop":
            gone = set(clash["item_a"]) | set(clash["item_b"])
            frame = frame[~frame["item"].isin(gone)].reset_index(drop=True)
            notes.append(f"{len(gone)} image(s) of {len(clash)} label-discordant duplicate pair(s) dropped")
        else:
            notes.append(f"{len(clash)} label-discordant duplicate pair(s) kept (discordant_duplicates: keep)")
    position = {item: i for i, item in enumerate(frame["item"])}
    links = [
        (position[a], position[b]) for a, b in zip(pairs["item_a"], pairs["item_b"]) if a in position and b in position
    ]
    frame["group"] = merge_groups(frame["case"].tolist(), frame["digest"].tolist(), links=links)
    frame = frame.drop(columns=["case", "digest"])
    return DownstreamDataset(name=name, records=frame, root=root, notes=notes, duplicates=pairs)


def tirads_label(score: str | None, cutoff: str) -> int | None:
    """1 if the TI-RADS ``score`` is at or above ``cutoff``, 0 below, None when absent or unknown."""
    if is_missing(score):
        return None
    text = str(score).strip().lower()
    if text not in TIRADS_ORDER:
        return None
    return int(TIRADS_ORDER.index(text) >= TIRADS_ORDER.index(cutoff))


# ---------------------------------------------------------------------------- thyroid (DDTI)


def _svg_box(svg_text: str | None, margin: int = 8) -> tuple[int, int, int, int] | None:
    """Bounding box ``(left, top, right, bottom)`` of the points of a DDTI ``<svg>`` annotation."""
    if not svg_text or not svg_text.strip():
        return None
    try:
        shapes = json.loads(svg_text)
    except json.JSONDecodeError:
        return None
    xs = [p["x"] for s in shapes for p in s.get("points", []) if "x" in p and "y" in p]
    ys = [p["y"] for s in shapes for p in s.get("points", []) if "x" in p and "y" in p]
    if not xs:
        return None
    return (max(0, int(min(xs)) - margin), max(0, int(min(ys)) - margin), int(max(xs)) + margin, int(max(ys)) + margin)


def _ddti_original(root: Path, cfg: BenchmarkConfig) -> DownstreamDataset:
    rows, notes = [], []
    no_score = no_image = no_box = 0
    for xml_path in sorted(root.glob("*.xml"), key=lambda p: (len(p.stem), p.stem)):
        try:
            case = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            raise InputError(f"{xml_path}: not a DDTI case XML ({exc})") from exc
        number = (case.findtext("number") or xml_path.stem).strip()
        label = tirads_label(case.findtext("tirads"), cfg.tirads_cutoff)
        marks = case.findall("mark")
        if label is None:
            no_score += max(1, len(marks))
            continue
        for mark in marks:
            index = (mark.findtext("image") or "").strip()
            image = root / f"{number}_{index}.jpg"
            if not image.is_file():
                no_image += 1
                continue
            box = _svg_box(mark.findtext("svg")) if cfg.ddti_crop else None
            if cfg.ddti_crop and box is None:
                no_box += 1
                continue
            rows.append(
                {
                    "item": image.name,
                    "label": label,
                    "case": number,
                    "path": str(image),
                    "slice": -1,
                    "box": box,
                    "digest": file_digest(image),
                }
            )
    if no_score:
        notes.append(f"{no_score} image(s) without a TI-RADS score dropped")
    if no_image:
        notes.append(f"{no_image} annotated image(s) missing on disk skipped")
    if no_box:
        notes.append(f"{no_box} image(s) without a nodule outline dropped (ddti_crop)")
    return _finish("thyroid", _frame(rows), root, notes, cfg)


def _resolve_relative(csv_path: Path, values: list[str], image_root: Path | None) -> Path:
    """The folder that the CSV's relative paths are relative to: ``image_root``, else the CSV's own
    folder, else its parent (the layout of ``shared/data/*/metadata.csv``), decided by the first path."""
    bases = [image_root] if image_root is not None else [csv_path.parent, csv_path.parent.parent]
    first = next((v for v in values if not Path(v).is_absolute()), None)
    if first is None:
        return csv_path.parent
    for base in bases:
        if (base / first).is_file():
            return base
    raise InputError(f"{csv_path}: image {first!r} is not found relative to {' or '.join(str(b) for b in bases)}")


def _ddti_crops(root: Path, cfg: BenchmarkConfig) -> DownstreamDataset:
    csv_path = root / "metadata.csv"
    meta = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "tirads") if c not in meta.columns]
    if missing:
        raise InputError(f"{csv_path}: missing column(s) {missing}; expected path,tirads[,patient_id]")
    base = _resolve_relative(csv_path, meta["path"].tolist(), None)
    rows, no_score = [], 0
    for rec in meta.itertuples(index=False):
        label = tirads_label(rec.tirads or None, cfg.tirads_cutoff)
        if label is None:
            no_score += 1
            continue
        image = base / rec.path
        if not image.is_file():
            raise InputError(f"{csv_path}: image {rec.path!r} not found under {base}")
        case = getattr(rec, "patient_id", "") or None
        rows.append(
            {
                "item": rec.path,
                "label": label,
                "case": case,
                "path": str(image),
                "slice": -1,
                "box": None,
                "digest": file_digest(image),
            }
        )
    notes = [f"{no_score} crop(s) without a TI-RADS score dropped"] if no_score else []
    return _finish("thyroid", _frame(rows), root, notes, cfg)


def load_thyroid(root: Path, cfg: BenchmarkConfig) -> DownstreamDataset:
    """DDTI: the crop layout (``metadata.csv`` with ``path, tirads, patient_id``) or the original
    layout (``N.xml`` + ``N_M.jpg``); label = TI-RADS >= ``cfg.tirads_cutoff``; unscored images dropped."""
    if (root / "metadata.csv").is_file():
        return _ddti_crops(root, cfg)
    if any(root.glob("*.xml")):
        return _ddti_original(root, cfg)
    raise _not_found("thyroid", root, "no metadata.csv and no case .xml files")


# ---------------------------------------------------------------------------- breast (BUSI)


def load_breast(root: Path, cfg: BenchmarkConfig) -> DownstreamDataset:
    """BUSI folder layout: ``benign/`` (0), ``malignant/`` (1) and ``normal/`` (0 by default, the
    paper's 779 = 569 negative / 210 positive; ``breast_normal: drop`` leaves them out); masks ignored."""
    for klass in ("benign", "malignant"):
        if not (root / klass).is_dir():
            raise _not_found("breast", root, f"no {klass}/ folder")
    classes = [(0, "benign"), (1, "malignant")]
    has_normal = (root / "normal").is_dir()
    if has_normal and cfg.breast_normal == "negative":
        classes.append((0, "normal"))
    rows = []
    for label, klass in classes:
        for image in sorted((root / klass).iterdir()):
            if image.suffix.lower() not in IMAGE_SUFFIXES or "_mask" in image.stem:
                continue
            item = f"{klass}/{image.name}"
            rows.append(
                {
                    "item": item,
                    "label": label,
                    "case": None,
                    "path": str(image),
                    "slice": -1,
                    "box": None,
                    "digest": file_digest(image),
                }
            )
    notes = []
    if has_normal:
        n_normal = sum(
            1 for p in (root / "normal").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in p.stem
        )
        notes.append(
            f"{n_normal} normal image(s) counted as class 0 (breast_normal: negative)"
            if cfg.breast_normal == "negative"
            else f"{n_normal} normal image(s) dropped (breast_normal: drop, benign vs malignant only)"
        )
    return _finish("breast", _frame(rows), root, notes, cfg)


# ---------------------------------------------------------------------------- acl (MRNet)


def load_acl(root: Path, cfg: BenchmarkConfig) -> DownstreamDataset:
    """MRNet layout: ``{train,valid}/{plane}/NNNN.npy`` volumes ``(slices, H, W)`` and
    ``{train,valid}-acl.csv`` (``id,label``, no header). Both splits are pooled for cross-validation;
    slices of one exam share a group. ``cfg.plane`` and ``cfg.slice_policy`` choose the images."""
    splits = [s for s in ("train", "valid") if (root / f"{s}-acl.csv").is_file()]
    if not splits:
        raise _not_found("acl", root, "no train-acl.csv or valid-acl.csv")
    rows = []
    for split in splits:
        table = pd.read_csv(root / f"{split}-acl.csv", header=None, names=["id", "label"], dtype={"id": str})
        for rec in table.itertuples(index=False):
            exam = str(rec.id).strip().zfill(4)
            volume = root / split / cfg.plane / f"{exam}.npy"
            if not volume.is_file():
                raise _not_found("acl", root, f"{split}-acl.csv lists exam {exam} but {volume} is missing")
            label = int(rec.label)
            if label not in (0, 1):
                raise InputError(f"{root / f'{split}-acl.csv'}: exam {exam} has label {rec.label!r}; expected 0 or 1")
            shape = np.load(volume, mmap_mode="r").shape
            if len(shape) != 3:
                raise InputError(f"{volume}: expected a (slices, H, W) volume, got shape {shape}")
            for index in select_slices(shape[0], cfg.slice_policy):
                rows.append(
                    {
                        "item": f"{split}/{exam}#{index:03d}",
                        "label": label,
                        "case": f"{split}/{exam}",
                        "path": str(volume),
                        "slice": index,
                        "box": None,
                        "digest": None,
                    }
                )
    return _finish("acl", _frame(rows), root, [f"plane {cfg.plane}, slice policy {cfg.slice_policy}"], cfg)


# ---------------------------------------------------------------------------- csv


def load_csv(path: Path, cfg: BenchmarkConfig) -> DownstreamDataset:
    """Any CSV with ``path, label`` and optional ``patient_id``. Labels are 0/1, or any values with
    ``cfg.positive_label`` naming class 1. Relative paths are relative to the CSV's folder (or its
    parent, as in ``shared/data/*/metadata.csv``)."""
    csv_path = path / "labels.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise _not_found("csv", csv_path)
    meta = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "label") if c not in meta.columns]
    if missing:
        raise InputError(f"{csv_path}: missing column(s) {missing}; expected path,label[,patient_id]")
    values = sorted(set(meta["label"]))
    if cfg.positive_label is not None:
        if cfg.positive_label not in values:
            raise InputError(f"{csv_path}: positive_label {cfg.positive_label!r} is not among the labels {values}")
        labels = (meta["label"] == cfg.positive_label).astype(int)
    elif set(values) <= {"0", "1"}:
        labels = meta["label"].astype(int)
    else:
        raise InputError(f"{csv_path}: labels {values[:6]} are not 0/1; name class 1 with --positive-label")
    base = _resolve_relative(csv_path, meta["path"].tolist(), None)
    has_ids = "patient_id" in meta.columns
    rows = []
    for rec, label in zip(meta.itertuples(index=False), labels):
        image = Path(rec.path) if Path(rec.path).is_absolute() else base / rec.path
        if not image.is_file():
            raise InputError(f"{csv_path}: image {rec.path!r} not found under {base}")
        if image.suffix.lower() not in (*IMAGE_SUFFIXES, ".npy"):
            raise InputError(f"{csv_path}: {rec.path!r} is not a PNG/JPG/BMP/TIFF image or a 2-D .npy array")
        case = (rec.patient_id or None) if has_ids else None
        rows.append(
            {
                "item": rec.path,
                "label": int(label),
                "case": case,
                "path": str(image),
                "slice": -1,
                "box": None,
                "digest": file_digest(image),
            }
        )
    return _finish("csv", _frame(rows), csv_path.parent, [], cfg)


LOADERS = {"thyroid": load_thyroid, "breast": load_breast, "acl": load_acl, "csv": load_csv}


def load_dataset(dataset: str, data_dir: str | Path | None, cfg: BenchmarkConfig) -> DownstreamDataset:
    """Load a downstream dataset, optionally a stratified ``cfg.subsample`` of it.

    Raises:
        InputError: unknown dataset name or malformed files.
        DataNotFoundError: the folder (default ``$MODAN_PACS_DATA/<name>``) is missing.
    """
    if dataset not in LOADERS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if data_dir is None:
        if dataset == "csv":
            raise InputError("dataset csv needs --data-dir pointing at a CSV file with path,label[,patient_id]")
        data_dir = default_data_dir(dataset)
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise _not_found(dataset, root)
    data = LOADERS[dataset](root, cfg)
    if cfg.subsample is not None and cfg.subsample < len(data):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(
            np.arange(len(data)), train_size=cfg.subsample, stratify=data.labels, random_state=cfg.seed
        )
        data.notes.append(f"stratified subsample of {cfg.subsample} of {len(data)} images (seed {cfg.seed})")
        data.records = data.records.iloc[np.sort(keep)].reset_index(drop=True)
    return data


def load_pixels(record: pd.Series | dict) -> np.ndarray:
    """One record's image as ``(1, H, W)`` float32 in ``[0, 1]`` (before resizing).

    Files: PIL grayscale (``L``; 16-bit scaled by 65535), cropped to ``box`` when set. Volume
    slices: uint8 / 255, other dtypes min-max scaled per slice.
    """
    path = Path(record["path"])
    if int(record["slice"]) >= 0 or path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r")
        plane = np.asarray(array[int(record["slice"])] if int(record["slice"]) >= 0 else array)
        if plane.ndim != 2:
            raise InputError(f"{path}: expected a 2-D slice, got shape {plane.shape}")
        if plane.dtype == np.uint8:
            out = plane.astype(np.float32) / 255.0
        else:
            plane = plane.astype(np.float32)
            span = float(plane.max() - plane.min())
            out = (plane - plane.min()) / span if span > 0 else np.zeros_like(plane)
        return out[None]
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                out = np.asarray(image, dtype=np.float32) / 65535.0
                if record.get("box") is not None:
                    left, top, right, bottom = record["box"]
                    out = out[top:bottom, left:right]
                return np.clip(out, 0, 1)[None]
            return (gray_array(image, box=record.get("box")).astype(np.float32) / 255.0)[None]
    except OSError as exc:
        raise InputError(f"{path}: cannot decode image ({exc})") from exc


def preprocess(data: DownstreamDataset, size: int, *, progress: Callable[[int, int], None] | None = None):
    """All images resized once with ``modan_pacs.data.downstream_transform(size)``: a tensor ``(N, 1, size, size)``.

    ``progress(done, total)`` is called after each image.
    """
    import torch

    from modan_pacs.data import downstream_transform

    transform = downstream_transform(size)
    out = torch.empty((len(data), 1, size, size), dtype=torch.float32)
    for i, record in enumerate(data.records.to_dict(orient="records")):
        out[i] = transform({"image": load_pixels(record)})["image"]
        if progress:
            progress(i + 1, len(data))
    return out
