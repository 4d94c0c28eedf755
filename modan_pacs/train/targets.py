"""What the loss is told about each image: unknown-anatomy handling and supervised class targets.

Unknown anatomy (an empty anatomy block: no header named it) is handled by ``unknown_anatomy``:

- ``distinct`` (default): each unknown anatomy counts as its own anatomy, never as a match. In the
  Jaccard weight an image of unknown anatomy then shares only its modality with anyone:
  ``{CT, ?} vs {CT, ?} = 1/3`` (like ``{CT, lung} vs {CT, abdomen}``), ``{CT, ?} vs {CT, lung} = 1/3``;
  for SupCon two such images are never identical. Implemented by appending, per batch, one column per
  image of unknown anatomy that only that image holds (:func:`unknown_as_distinct`). The two views
  of one image still share it (weight 1).
- ``match``: the anatomy block stays all-zero, so ``{CT} vs {CT} = 1.0``: every unknown-anatomy
  image of a modality is a full positive of every other (before 2026-12).
- ``drop``: images of unknown anatomy are left out of pretraining (:func:`known_anatomy_rows`).

For the cross-entropy baseline on the full label (``label_group: modality+anatomy``) an unknown
anatomy is no class (``distinct``, ``drop``: the row is ignored) or the class ``<modality>/unknown``
(``match``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.losses import IGNORE_INDEX

UNKNOWN_ANATOMY = ("distinct", "match", "drop")


def unknown_as_distinct(labels: torch.Tensor, group: slice) -> torch.Tensor:
    """``(N, K)`` labels -> ``(N, K + N)``: column ``K + i`` is 1 only for row ``i``, and only when
    row ``i``'s ``group`` block is empty (all zero); other new columns are 0.

    The Jaccard similarity (or SupCon identity) of the result treats every empty block as a value
    of its own that no other image shares.
    """
    empty = labels[:, group].sum(dim=1) == 0  # (N,)
    own = torch.diag(empty.to(labels.dtype))  # (N, N): row i holds its private "unknown" in column i
    return torch.cat([labels, own], dim=1)


class UnknownAsDistinct(nn.Module):
    """Wrap a contrastive loss ``(features (N, V, D), labels (N, K))`` so that an empty ``group``
    block counts as a private value (:func:`unknown_as_distinct`) before the loss sees the labels."""

    def __init__(self, loss: nn.Module, group: slice) -> None:
        super().__init__()
        self.loss = loss
        self.group = group

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(features, unknown_as_distinct(labels, self.group))


def anatomy_slice(label_names: list[str], group: str = "anatomy") -> slice:
    """The columns of ``group`` in ``label_names``.

    Raises:
        ConfigError: the labels have no such group.
    """
    slices = group_slices(label_names)
    if group not in slices:
        raise ConfigError(f"labels.anatomy_group {group!r} is not a label group of the cache; groups: {sorted(slices)}")
    return slices[group]


def known_anatomy_rows(labels: np.ndarray, group: slice) -> np.ndarray:
    """Indices of the rows whose ``group`` block is not empty (``unknown_anatomy: drop`` keeps these)."""
    return np.flatnonzero(np.asarray(labels)[:, group].sum(axis=1) > 0)


def wrap_loss_for_unknown(
    loss: nn.Module, policy: str, label_names: list[str], group: str = "anatomy", *, contrastive: bool = True
) -> nn.Module:
    """The loss the trainer calls: ``loss`` itself, or :class:`UnknownAsDistinct` around it when
    ``policy`` is ``distinct`` and ``loss`` is a contrastive loss that reads labels (cross-entropy
    handles unknowns through its class targets, :func:`class_targets`).

    Raises:
        ConfigError: unknown policy or label group.
    """
    if policy not in UNKNOWN_ANATOMY:
        raise ConfigError(f"labels.unknown_anatomy {policy!r} is unknown; choose one of {', '.join(UNKNOWN_ANATOMY)}")
    if policy != "distinct" or not contrastive or not getattr(loss, "needs_labels", False):
        return loss
    return UnknownAsDistinct(loss, anatomy_slice(label_names, group))


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


def _group_classes(labels: np.ndarray, label_names: list[str], group: str, where: str) -> tuple[np.ndarray, list[str]]:
    """Per-row index of the active value within ``group`` (-1 when the block is empty) and the values."""
    slices = group_slices(label_names)
    if group not in slices:
        raise ConfigError(f"supervised.label_group {group!r} is not a label group of {where}; groups: {sorted(slices)}")
    block = np.asarray(labels[:, slices[group]])
    names = [n.split(":", 1)[1] for n in label_names[slices[group]]]
    return np.where(block.max(axis=1) > 0, block.argmax(axis=1), -1).astype(np.int64), names


def _combined_classes(
    labels: np.ndarray, label_names: list[str], groups: list[str], where: str, unknown_anatomy: str, anatomy_group: str
) -> tuple[np.ndarray, list[str]]:
    """Classes of the cross product of ``groups`` (e.g. modality x anatomy: ``"CT/lung"``), only
    the combinations present; a row with an empty group has none (``IGNORE_INDEX``), except an empty
    ``anatomy_group`` under ``unknown_anatomy: match`` (value ``unknown``)."""
    parts = []
    for group in groups:
        index, names = _group_classes(labels, label_names, group, where)
        values = np.array([names[i] if i >= 0 else None for i in index], dtype=object)
        if group == anatomy_group and unknown_anatomy == "match":
            values[index < 0] = "unknown"
        parts.append(values)
    keys = ["/".join(v) if all(x is not None for x in v) else None for v in zip(*parts)]
    names = sorted({k for k in keys if k is not None})
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[k] if k is not None else IGNORE_INDEX for k in keys], dtype=np.int64), names


def class_targets(
    labels: np.ndarray,
    label_names: list[str],
    *,
    label_group: str | None = None,
    manifest_column: np.ndarray | None = None,
    column_name: str | None = None,
    where: str = "cache",
    unknown_anatomy: str = "distinct",
    anatomy_group: str = "anatomy",
) -> ClassTargets:
    """Per-row classes from one label group (argmax within its columns), several groups joined by
    ``+`` (their cross product, e.g. ``modality+anatomy``: the analogue of RadImageNet's 165
    modality x anatomy x finding classes) or a manifest column.

    Rows whose group is all zero (or whose column value is missing / empty) get ``IGNORE_INDEX``;
    see the module docstring for an unknown anatomy in a combined label.

    Raises:
        ConfigError: unknown label group.
        InputError: fewer than two classes are present among the rows.
    """
    if label_group is not None and "+" in label_group:
        groups = [g.strip() for g in label_group.split("+")]
        targets, names = _combined_classes(labels, label_names, groups, where, unknown_anatomy, anatomy_group)
        source = f"label groups {label_group!r}"
    elif label_group is not None:
        index, names = _group_classes(labels, label_names, label_group, where)
        targets = np.where(index >= 0, index, IGNORE_INDEX).astype(np.int64)
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


class _RowView:
    """Rows ``rows`` of a (memory-mapped) array, read on access: ``view[i] == array[rows[i]]``."""

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self._array = array
        self._rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self._rows), *array.shape[1:])
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):  # noqa: ANN001, ANN204
        return self._array[self._rows[index]]


def drop_unknown_anatomy(cache, group: str = "anatomy"):  # noqa: ANN001, ANN201
    """``cache`` without its rows of unknown anatomy (``unknown_anatomy: drop``): images are read
    from the original memory map on access; labels and manifest are the kept rows (manifest
    ``cache_row`` keeps the original row numbers).

    Raises:
        InputError: no row has a known anatomy.
    """
    from modan_pacs.pixels import ImageCache

    rows = known_anatomy_rows(cache.labels, anatomy_slice(list(cache.vocabulary.label_names), group))
    if len(rows) == 0:
        raise InputError(
            f"cache {cache.path}: no image has a known anatomy; labels.unknown_anatomy=drop leaves nothing"
        )
    if len(rows) == len(cache):
        return cache
    return ImageCache(
        images=_RowView(cache.images, rows),
        labels=np.asarray(cache.labels)[rows],
        manifest=cache.manifest.iloc[rows].reset_index(drop=True),
        vocabulary=cache.vocabulary,
        path=cache.path,
    )
