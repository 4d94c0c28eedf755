"""The fixed partition of the protocol: a stratified, grouped k-fold split saved in the run folder.

``folds.csv`` (``dataset, item, label, group, fold``; folds numbered 1..k) is written once and
reused on every later run into the same folder, so every initialisation, regime and repeat is
evaluated on the same test folds (the paper: "the same fixed 5-fold partition"). For each test fold
an inner validation part of the training folds (stratified, grouped, ``val_fraction``) picks the best
epoch; it is saved in ``inner_val.csv`` (``dataset, test_fold, item``) and reused too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from modan_pacs.errors import InputError

from .datasets import DownstreamDataset

FOLD_COLUMNS = ["dataset", "item", "label", "group", "fold"]


def stratified_group_folds(labels: np.ndarray, groups: list[str], n_folds: int, seed: int) -> np.ndarray:
    """Fold number (1..``n_folds``) of each item: scikit-learn ``StratifiedGroupKFold`` (shuffled
    with ``seed``), so a group never straddles two folds and class shares stay close to the whole's.

    Raises:
        InputError: fewer groups of a class than folds (some fold would miss that class).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    frame = pd.DataFrame({"label": labels, "group": groups})
    for klass in (0, 1):
        n_groups = frame[frame["label"] == klass]["group"].nunique()
        if n_groups < n_folds:
            raise InputError(
                f"class {klass} has only {n_groups} independent case(s); "
                f"{n_folds}-fold cross-validation needs at least {n_folds}"
            )
    folds = np.zeros(len(labels), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups), start=1):
        folds[test] = k
    return folds


def make_folds(data: DownstreamDataset, n_folds: int, seed: int) -> pd.DataFrame:
    """The partition of ``data``: a frame with :data:`FOLD_COLUMNS`."""
    records = data.records
    folds = stratified_group_folds(records["label"].to_numpy(), records["group"].tolist(), n_folds, seed)
    frame = pd.DataFrame(
        {
            "dataset": data.name,
            "item": records["item"],
            "label": records["label"],
            "group": records["group"],
            "fold": folds,
        }
    )
    for k in range(1, n_folds + 1):
        if frame[frame["fold"] == k]["label"].nunique() < 2:
            raise InputError(f"{data.name}: test fold {k} holds only one class; use fewer folds or more images")
    return frame


def load_or_make_folds(run_dir: Path, data: DownstreamDataset, n_folds: int, seed: int) -> pd.DataFrame:
    """``run_dir/folds.csv`` rows of this dataset, made and saved on first use.

    Raises:
        InputError: the saved partition does not match the dataset (other images or labels, or
            another number of folds): a run folder holds one partition per dataset.
    """
    path = run_dir / "folds.csv"
    saved = (
        pd.read_csv(path, dtype={"item": str, "group": str}) if path.is_file() else pd.DataFrame(columns=FOLD_COLUMNS)
    )
    if list(saved.columns) != FOLD_COLUMNS:
        raise InputError(f"{path}: expected columns {','.join(FOLD_COLUMNS)}; got {','.join(saved.columns)}")
    mine = saved[saved["dataset"] == data.name]
    if mine.empty:
        made = make_folds(data, n_folds, seed)
        pd.concat([saved, made], ignore_index=True).to_csv(path, index=False)
        return made.reset_index(drop=True)
    current = data.records.set_index("item")["label"]
    stored = mine.set_index("item")["label"].astype(int)
    if set(current.index) != set(stored.index):
        extra, gone = len(set(current.index) - set(stored.index)), len(set(stored.index) - set(current.index))
        raise InputError(
            f"{path}: the saved {data.name} partition lists other images ({extra} new, {gone} missing); "
            "use another --out folder for this data or settings"
        )
    if not (stored.loc[current.index] == current).all():
        raise InputError(
            f"{path}: the saved {data.name} partition has other labels (e.g. another TI-RADS cut-off); "
            "use another --out folder"
        )
    if mine["fold"].nunique() != n_folds:
        raise InputError(f"{path}: the saved {data.name} partition has {mine['fold'].nunique()} folds, not {n_folds}")
    fold_of = mine.set_index("item")["fold"]
    straddling = (
        data.records.assign(fold=fold_of.loc[data.records["item"]].to_numpy()).groupby("group")["fold"].nunique()
    )
    if (straddling > 1).any():
        raise InputError(
            f"{path}: the saved {data.name} partition splits {int((straddling > 1).sum())} group(s) "
            "of the current grouping "
            "(e.g. near-duplicates made before they were grouped) over several folds; use another --out folder"
        )
    return mine.set_index("item").loc[data.records["item"]].reset_index()[FOLD_COLUMNS]


def inner_validation(folds: pd.DataFrame, test_fold: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over ``folds`` rows: the validation part of the training folds of ``test_fold``.

    One split of a shuffled ``StratifiedGroupKFold`` with ``round(1 / val_fraction)`` splits of the
    training rows (groups kept whole), seeded by ``seed`` and the test fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    train = np.flatnonzero(folds["fold"].to_numpy() != test_fold)
    n_splits = max(2, int(round(1 / val_fraction)))
    labels = folds["label"].to_numpy()[train]
    groups = folds["group"].to_numpy()[train]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + 7919 * test_fold)
    _, val = next(splitter.split(np.zeros(len(train)), labels, groups))
    mask = np.zeros(len(folds), dtype=bool)
    mask[train[val]] = True
    return mask


def load_or_make_inner(
    run_dir: Path, dataset: str, folds: pd.DataFrame, val_fraction: float, seed: int
) -> dict[int, np.ndarray]:
    """Validation masks per test fold, saved in ``run_dir/inner_val.csv`` (``dataset, test_fold, item``)."""
    path = run_dir / "inner_val.csv"
    saved = (
        pd.read_csv(path, dtype={"item": str})
        if path.is_file()
        else pd.DataFrame(columns=["dataset", "test_fold", "item"])
    )
    mine = saved[saved["dataset"] == dataset]
    masks: dict[int, np.ndarray] = {}
    if mine.empty:
        rows = []
        for k in sorted(folds["fold"].unique()):
            mask = inner_validation(folds, int(k), val_fraction, seed)
            masks[int(k)] = mask
            rows.append(pd.DataFrame({"dataset": dataset, "test_fold": int(k), "item": folds["item"][mask]}))
        pd.concat([saved, *rows], ignore_index=True).to_csv(path, index=False)
        return masks
    items = folds["item"]
    for k in sorted(folds["fold"].unique()):
        chosen = set(mine[mine["test_fold"] == k]["item"])
        mask = items.isin(chosen).to_numpy()
        if mask.sum() != len(chosen) or (folds["fold"].to_numpy()[mask] == k).any():
            raise InputError(f"{path}: saved validation items of {dataset} fold {k} do not match folds.csv")
        masks[int(k)] = mask
    return masks
