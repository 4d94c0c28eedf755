"""Label a frame of raw header fields with a :class:`~modan_pacs.labels.vocabulary.Vocabulary`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from modan_pacs.fileio import is_missing
from modan_pacs.labels.vocabulary import Vocabulary

RAW_LABEL_INPUTS = (
    "modality",
    "body_part_examined",
    "anatomic_region_code",
    "anatomic_region_meaning",
    "series_description",
    "protocol_name",
    "study_description",
)


def _clean(value: object) -> str | None:
    if is_missing(value):
        return None
    text = str(value).strip()
    return text or None


def _clean_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``_clean`` of a column as an object array, computed once per distinct value (header fields
    such as modality or descriptions repeat across the thousands of images of a series)."""
    if column not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    codes, uniques = pd.factorize(frame[column], use_na_sentinel=True)
    cleaned = np.array([*(_clean(u) for u in uniques), None], dtype=object)  # code -1 (missing) -> the last slot
    return cleaned[codes]


def _map_unique(values: np.ndarray, mapper) -> np.ndarray:
    """``mapper(v)`` for every value of an object array, called once per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.array([*(mapper(u) for u in uniques), mapper(None)], dtype=object)
    return mapped[codes]


def label_frame(frame: pd.DataFrame, vocabulary: Vocabulary) -> pd.DataFrame:
    """Copy of ``frame`` with ``modality_label``, ``anatomy_label``, ``anatomy_source`` (and
    ``<group>_label`` for extra groups in ``label_groups``) computed from the raw header columns.

    Anatomy texts are tried most specific first: SeriesDescription, ProtocolName, StudyDescription.
    Raw columns that are absent count as empty. Each distinct raw value (modality) or combination
    (anatomy fields) is mapped once.
    """
    out = frame.copy()
    cols = {c: _clean_column(out, c) for c in RAW_LABEL_INPUTS}
    out["modality_label"] = pd.Series(
        _map_unique(cols["modality"], vocabulary.map_modality), index=out.index, dtype=object
    )
    memo: dict[tuple, tuple[str | None, str]] = {}
    anatomy, source = [], []
    for key in zip(
        cols["body_part_examined"],
        cols["anatomic_region_code"],
        cols["anatomic_region_meaning"],
        cols["series_description"],
        cols["protocol_name"],
        cols["study_description"],
    ):
        hit = memo.get(key)
        if hit is None:
            hit = vocabulary.map_anatomy(body_part=key[0], region_code=key[1], region_meaning=key[2], texts=key[3:])
            memo[key] = hit
        anatomy.append(hit[0])
        source.append(hit[1])
    out["anatomy_label"] = pd.Series(anatomy, index=out.index, dtype=object)
    out["anatomy_source"] = source
    for group in vocabulary.groups:
        if group in ("modality", "anatomy"):
            continue
        column = vocabulary.extra_column(group)
        raw = _clean_column(out, column)
        out[f"{group}_label"] = pd.Series(
            _map_unique(raw, lambda v, g=group: vocabulary.map_extra(g, v)), index=out.index, dtype=object
        )
    return out
