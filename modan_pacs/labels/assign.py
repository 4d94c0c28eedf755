"""Label a frame of raw header fields with a :class:`~modan_pacs.labels.vocabulary.Vocabulary`."""

from __future__ import annotations

import pandas as pd

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
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def label_frame(frame: pd.DataFrame, vocabulary: Vocabulary) -> pd.DataFrame:
    """Copy of ``frame`` with ``modality_label``, ``anatomy_label``, ``anatomy_source`` (and
    ``<group>_label`` for extra groups in ``label_groups``) computed from the raw header columns.

    Anatomy texts are tried most specific first: SeriesDescription, ProtocolName, StudyDescription.
    Raw columns that are absent count as empty. Each distinct raw combination is mapped once.
    """
    out = frame.copy()
    cols = {c: (out[c].map(_clean) if c in out.columns else pd.Series([None] * len(out), index=out.index, dtype=object))
            for c in RAW_LABEL_INPUTS}
    out["modality_label"] = pd.Series([vocabulary.map_modality(m) for m in cols["modality"]], index=out.index, dtype=object)
    memo: dict[tuple, tuple[str | None, str]] = {}
    anatomy, source = [], []
    for key in zip(cols["body_part_examined"], cols["anatomic_region_code"], cols["anatomic_region_meaning"],
                   cols["series_description"], cols["protocol_name"], cols["study_description"]):
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
        raw = out[column].map(_clean) if column in out.columns else [None] * len(out)
        out[f"{group}_label"] = pd.Series([vocabulary.map_extra(group, v) for v in raw], index=out.index, dtype=object)
    return out
