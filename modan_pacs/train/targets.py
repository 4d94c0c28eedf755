"""Class targets for the supervised (cross-entropy) baseline, from a label group or a manifest column."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.losses import IGNORE_INDEX


@dataclass(frozen=True)
class ClassTargets:
    """``targets[i]``: class of cache row ``i`` (``IGNORE_INDEX`` = no class, row not used)."""

    targets: np.ndarray
    class_names: list[str]
    source: str


def group_slices(label_names: list[str]) -> dict[str, slice]:
    """``{"modality": slice(0, 3), "anatomy": slice(3, 12)}`` from ``"group:value"`` column names."""
    slices: dict[str, slice] = {}
    for i, name in enumerate(label_names):
        group = name.split(":", 1)[0]
        if group in slices and slices[group].stop != i:
            raise InputError(f"label columns of group {group!r} are not contiguous in {label_names}")
        start = slices[group].start if group in slices else i
        slices[group] = slice(start, i + 1)
    return slices


def class_targets(
    labels: np.ndarray,
    label_names: list[str],
    *,
    label_group: str | None = None,
    manifest_column: np.ndarray | None = None,
    column_name: str | None = None,
    where: str = "cache",
) -> ClassTargets:
    """Per-row classes from one label group (argmax within its columns) or a manifest column.

    Rows whose group is all zero (or whose column value is missing / empty) get ``IGNORE_INDEX``.

    Raises:
        ConfigError: unknown label group.
        InputError: fewer than two classes are present among the rows.
    """
    if label_group is not None:
        slices = group_slices(label_names)
        if label_group not in slices:
            raise ConfigError(f"supervised.label_group {label_group!r} is not a label group of {where}; groups: {sorted(slices)}")
        block = np.asarray(labels[:, slices[label_group]])
        names = [n.split(":", 1)[1] for n in label_names[slices[label_group]]]
        targets = np.where(block.max(axis=1) > 0, block.argmax(axis=1), IGNORE_INDEX).astype(np.int64)
        source = f"label group {label_group!r}"
    else:
        if manifest_column is None:
            raise ConfigError(f"supervised.column {column_name!r} is not a column of the manifest of {where}")
        values = np.asarray(manifest_column, dtype=object)
        present = np.array([v is not None and v == v and str(v) != "" for v in values], dtype=bool)
        names = sorted({str(v) for v in values[present]})
        lookup = {name: i for i, name in enumerate(names)}
        targets = np.array([lookup[str(v)] if ok else IGNORE_INDEX for v, ok in zip(values, present)], dtype=np.int64)
        source = f"manifest column {column_name!r}"
    used = np.unique(targets[targets != IGNORE_INDEX])
    if len(used) < 2:
        found = [names[i] for i in used]
        raise InputError(
            f"{source} of {where} has {len(used)} class(es) present {found}: supervised pretraining needs at least 2"
        )
    return ClassTargets(targets=targets, class_names=names, source=source)
