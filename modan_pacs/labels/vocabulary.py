"""The label vocabulary: raw DICOM header values -> canonical modality / anatomy labels.

A :class:`Vocabulary` is loaded from YAML (shipped default ``configs/vocabulary.yaml``), validated
with pydantic (unknown keys are refused), and answers the questions of stage 2 of the design:
which canonical modality a raw ``Modality`` code is, which anatomy a header describes and which
header field decided it, and the multi-hot matrix of a labelled index (ModAn-MulSupCon: the label
of an image is modality ⊕ anatomy, one one-hot block per group).

Example:
    >>> vocab = Vocabulary.load()
    >>> vocab.map_modality("dx")
    'radiograph'
    >>> vocab.map_anatomy(body_part="THORAX", texts=[])
    ('lung', 'body_part')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.fileio import is_missing
from modan_pacs.yamlconfig import did_you_mean, read_yaml_mapping, validate_model

ANATOMY_SOURCES = ("body_part", "anatomic_region", "description", "refined", "conflict", "unknown")
#: separator of the anatomies of a multi-region label (``"lung|abdomen|pelvis"``) in ``anatomy_label``
MULTI_SEP = "|"
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def _normalise_code(value: str) -> str:
    """``"Abd-Pelvis "`` -> ``"ABDPELVIS"``: BodyPartExamined compared without case or separators."""
    return re.sub(r"[^0-9A-Z]", "", str(value).upper())


def _normalise_text(value: str) -> str:
    """Lower case, every run of non-alphanumerics -> one space, padded with spaces."""
    return " " + _NON_ALNUM.sub(" ", str(value).lower()).strip() + " "


def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    """A whole-word, case-insensitive pattern; a trailing ``*`` matches any word ending."""
    prefix = keyword.endswith("*")
    words = _NON_ALNUM.sub(" ", keyword.rstrip("*").lower()).split()
    if not words:
        raise ConfigError(f"vocabulary keyword {keyword!r} has no letters or digits")
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(r"(?<![0-9a-z])" + body + (r"[0-9a-z]*" if prefix else "") + r"(?![0-9a-z])")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModalityEntry(_Strict):
    """One canonical modality and the raw ``Modality`` codes (0008,0060) that mean it."""

    name: str
    codes: list[str] = Field(min_length=1)


class AnatomyEntry(_Strict):
    """One canonical anatomy and every way a header or a RadImageNet folder can say it."""

    name: str
    body_parts: list[str] = []
    region_codes: list[str] = []
    region_meanings: list[str] = []
    keywords: list[str] = []
    radimagenet: list[str] = []
    refines: list[str] = []
    """Broader anatomies this one is part of (thyroid refines neck): a description naming it wins
    over a body part or region naming one of these."""

    @field_validator("region_codes")
    @classmethod
    def _scheme_value(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if ":" not in code:
                raise ValueError(f"region code {code!r} must be 'SCHEME:VALUE', e.g. 'SCT:818981001'")
        return codes


class MultiRegion(_Strict):
    """A value naming several regions (CHEST_TO_PELVIS, WHOLEBODY, "CT ABD PELVIS"): the image
    gets every anatomy in ``anatomies``."""

    name: str
    anatomies: list[str] = Field(min_length=2)
    body_parts: list[str] = []
    keywords: list[str] = []


class ExtraValue(_Strict):
    name: str
    keywords: list[str] = Field(min_length=1)


class ExtraGroup(_Strict):
    """An optional label group read from one index column (e.g. manufacturer, view)."""

    column: str
    values: list[ExtraValue] = Field(min_length=1)


class VocabularyModel(_Strict):
    """The YAML schema of a vocabulary file (see ``configs/vocabulary.yaml`` for the documented default)."""

    version: Literal[1] = 1
    label_groups: list[str] = ["modality", "anatomy"]
    unknown_anatomy: Literal["keep", "drop"] = "keep"
    anatomy_conflict: Literal["unknown", "body_part", "description"] = "unknown"
    modalities: list[ModalityEntry] = Field(min_length=1)
    anatomies: list[AnatomyEntry] = Field(min_length=1)
    multi_regions: list[MultiRegion] = []
    extra_groups: dict[str, ExtraGroup] = {}

    @model_validator(mode="after")
    def _consistent(self) -> VocabularyModel:
        self._check_label_groups()
        for kind, names in (
            ("modalities", [m.name for m in self.modalities]),
            ("anatomies", [a.name for a in self.anatomies]),
        ):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{kind} has duplicate names {dup}")
        _one_owner("modality code", ((code, code.strip().upper(), m.name) for m in self.modalities for code in m.codes))
        entries = [*self.anatomies, *self.multi_regions]
        _one_owner("body part", ((bp, _normalise_code(bp), e.name) for e in entries for bp in e.body_parts))
        self._check_anatomy_references()
        return self

    def _check_label_groups(self) -> None:
        known = {"modality", "anatomy", *self.extra_groups}
        for group in self.label_groups:
            if group not in known:
                hint = did_you_mean(group, sorted(known))
                extra = f"; did you mean {hint!r}?" if hint else f"; known groups: {sorted(known)}"
                raise ValueError(f"label_groups has unknown group {group!r}{extra}")
        if len(set(self.label_groups)) != len(self.label_groups):
            raise ValueError(f"label_groups has duplicates: {self.label_groups}")

    def _check_anatomy_references(self) -> None:
        names = {a.name for a in self.anatomies}
        for a in self.anatomies:
            for broader in a.refines:
                if broader not in names or broader == a.name:
                    raise ValueError(
                        f"anatomy {a.name!r} refines {broader!r}, which is not another anatomy of the vocabulary"
                    )
        for m in self.multi_regions:
            for part in m.anatomies:
                if part not in names:
                    raise ValueError(
                        f"multi_regions {m.name!r} names {part!r}, which is not an anatomy of the vocabulary"
                    )


def _one_owner(what: str, items: Iterable[tuple[str, str, str]]) -> None:
    """Each normalised value belongs to one entry: ``items`` are ``(value, normalised, entry name)``."""
    seen: dict[str, str] = {}
    for value, key, name in items:
        if key in seen and seen[key] != name:
            raise ValueError(f"{what} {value!r} is listed under both {seen[key]!r} and {name!r}")
        seen[key] = name


class Vocabulary:
    """Validated label vocabulary; build with :meth:`load` or :meth:`from_dict`.

    Attributes:
        groups: ordered ``{group: [canonical values]}`` of the groups in ``label_groups``.
        label_names: the K column names of the multi-hot matrix, ``"group:value"`` in order.
        unknown_anatomy: ``"keep"`` (row kept, anatomy block empty) or ``"drop"`` (row left out of the index).
        anatomy_conflict: what a description that contradicts the body part (or region) gives:
            ``"unknown"`` (default), ``"body_part"`` (the header field wins, as before 2026-12) or
            ``"description"``; the source is ``"conflict"`` either way.
        source: the file it was loaded from, or None.
    """

    def __init__(self, model: VocabularyModel, source: Path | None = None) -> None:
        self.model = model
        self.source = source
        self.unknown_anatomy = model.unknown_anatomy
        self.anatomy_conflict = model.anatomy_conflict
        order = {a.name: i for i, a in enumerate(model.anatomies)}
        self._refines = {a.name: frozenset(a.refines) for a in model.anatomies}
        #: multi-region name -> its anatomies joined in vocabulary order ("lung|abdomen|pelvis")
        self._multi = {m.name: MULTI_SEP.join(sorted(m.anatomies, key=order.__getitem__)) for m in model.multi_regions}
        self._modality_by_code = {c.strip().upper(): m.name for m in model.modalities for c in m.codes}
        self._anatomy_by_body_part = {_normalise_code(bp): a.name for a in model.anatomies for bp in a.body_parts}
        self._anatomy_by_body_part.update(
            {_normalise_code(bp): self._multi[m.name] for m in model.multi_regions for bp in m.body_parts}
        )
        self._anatomy_by_code: dict[str, str] = {}
        for a in model.anatomies:
            for code in a.region_codes:
                scheme, value = code.split(":", 1)
                self._anatomy_by_code[f"{scheme.strip().upper()}:{value.strip().upper()}"] = a.name
                self._anatomy_by_code.setdefault(value.strip().upper(), a.name)
        self._anatomy_by_meaning = {
            _normalise_text(m).strip(): a.name for a in model.anatomies for m in [a.name, *a.region_meanings]
        }
        # (pattern, anatomy, keyword length): the longest keyword found in a text wins.
        self._keywords = [
            (_keyword_pattern(k), a.name, len(k.rstrip("*"))) for a in model.anatomies for k in a.keywords
        ] + [
            (_keyword_pattern(k), self._multi[m.name], len(k.rstrip("*")))
            for m in model.multi_regions
            for k in m.keywords
        ]
        self._radimagenet = {r.lower(): a.name for a in model.anatomies for r in a.radimagenet}
        self._extra = {
            name: (g.column, [(_keyword_pattern(k), v.name, len(k)) for v in g.values for k in v.keywords])
            for name, g in model.extra_groups.items()
        }

    # ----------------------------------------------------------------- construction
    @classmethod
    def load(cls, path: str | Path | None = None) -> Vocabulary:
        """Load and validate a vocabulary YAML; ``None`` loads the shipped ``configs/vocabulary.yaml``.

        Raises:
            InputError: the file does not exist.
            ConfigError: the YAML is malformed or does not follow the schema (field named).
        """
        if path is None:
            from modan_pacs.paths import config_path

            path = config_path("vocabulary.yaml")
        path = Path(path)
        return cls.from_dict(read_yaml_mapping(path, what="vocabulary"), source=path)

    @classmethod
    def from_dict(cls, data: object, source: Path | None = None) -> Vocabulary:
        """Validate a parsed vocabulary mapping. Raises ConfigError naming the first bad field."""
        where = str(source) if source else "vocabulary"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at top level, got {type(data).__name__}")
        data = dict(data)
        stated_order = data.pop("label_names", None)  # written by save(); checked, not trusted
        model = validate_model(VocabularyModel, data, where, what="vocabulary")
        vocab = cls(model, source)
        if stated_order is not None and list(stated_order) != vocab.label_names:
            raise ConfigError(
                f"{where}: label_names {stated_order} disagree with the groups, which give {vocab.label_names}"
            )
        return vocab

    def to_yaml(self) -> str:
        """The vocabulary as YAML (what ``vocabulary.yaml`` in an index holds), label order included."""
        data = self.model.model_dump(mode="json")
        data["label_names"] = self.label_names
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_yaml` to ``path``; :meth:`load` reads it back (``label_names`` is checked)."""
        path = Path(path)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    # ----------------------------------------------------------------- label layout
    @cached_property
    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for group in self.model.label_groups:
            if group == "modality":
                out[group] = [m.name for m in self.model.modalities]
            elif group == "anatomy":
                out[group] = [a.name for a in self.model.anatomies]
            else:
                out[group] = list(dict.fromkeys(v.name for v in self.model.extra_groups[group].values))
        return out

    @cached_property
    def label_names(self) -> list[str]:
        return [f"{group}:{value}" for group, values in self.groups.items() for value in values]

    # ----------------------------------------------------------------- mapping
    def map_modality(self, raw: str | None) -> str | None:
        """Canonical modality of a raw ``Modality`` code (case and spaces ignored), or None."""
        if raw is None:
            return None
        return self._modality_by_code.get(str(raw).strip().upper())

    def map_body_part(self, raw: str | None) -> str | None:
        """Canonical anatomy of a raw ``BodyPartExamined`` (exact synonym, else keyword rules), or None."""
        if raw is None or not str(raw).strip():
            return None
        hit = self._anatomy_by_body_part.get(_normalise_code(raw))
        return hit if hit is not None else self.match_keywords([raw])

    def map_region(self, code: str | None = None, meaning: str | None = None) -> str | None:
        """Canonical anatomy of an AnatomicRegionSequence item (``"SCHEME:VALUE"`` code, else its meaning)."""
        if code:
            key = str(code).strip().upper()
            hit = self._anatomy_by_code.get(key)
            if hit is None and ":" in key:
                hit = self._anatomy_by_code.get(key.split(":", 1)[1])
            if hit is not None:
                return hit
        if meaning:
            hit = self._anatomy_by_meaning.get(_normalise_text(meaning).strip())
            return hit if hit is not None else self.match_keywords([meaning])
        return None

    def match_keywords(self, texts: Iterable[str | None]) -> str | None:
        """The anatomy of the longest keyword found in the first text that has one, or None."""
        for text in texts:
            if not text:
                continue
            norm = _normalise_text(text)
            best: tuple[int, int, str] | None = None  # (-length, position, anatomy)
            for pattern, anatomy, length in self._keywords:
                m = pattern.search(norm)
                if m is not None:
                    cand = (-length, m.start(), anatomy)
                    if best is None or cand < best:
                        best = cand
            if best is not None:
                return best[2]
        return None

    def map_anatomy(
        self,
        *,
        body_part: str | None = None,
        region_code: str | None = None,
        region_meaning: str | None = None,
        texts: Sequence[str | None] = (),
    ) -> tuple[str | None, str]:
        """Anatomy and the source that decided it.

        The header field (BodyPartExamined, else AnatomicRegionSequence) and the keywords in
        ``texts`` (pass SeriesDescription, ProtocolName, StudyDescription: most specific first) are
        both read, then:

        - only one names an anatomy: that one (``body_part`` / ``anatomic_region`` / ``description``);
        - they agree or overlap (CHEST and "CT CHEST ABD PELVIS"), or the header names the more
          specific part (THYROID and "NECK"): the header field;
        - the description names a more specific part of it (``refines`` in the vocabulary: NECK and
          "US THYROID" -> thyroid): the description, source ``refined``;
        - they contradict (CHEST and "CT ABD PELVIS"): source ``conflict``, anatomy by
          :attr:`anatomy_conflict` (default None: a wrong anatomy would make false positives).

        A multi-region value (CHEST_TO_PELVIS, WHOLEBODY, "CT ABD PELVIS") gives every anatomy it
        names, joined by ``|`` in vocabulary order (``"lung|abdomen|pelvis"``).

        Returns:
            ``(anatomy or None, source)``, source in :data:`ANATOMY_SOURCES` (not ``unknown`` for a conflict).
        """
        header, source = self.map_body_part(body_part), "body_part"
        if header is None:
            header, source = self.map_region(region_code, region_meaning), "anatomic_region"
        described = self.match_keywords(texts)
        if header is None:
            return (described, "description") if described is not None else (None, "unknown")
        if described is None:
            return header, source
        have, said = set(header.split(MULTI_SEP)), set(described.split(MULTI_SEP))
        if have & said or all(self._refines[h] & said for h in have):  # agree, or the header is the more specific
            return header, source
        if all(self._refines[d] & have for d in said):
            return described, "refined"
        chosen = {"unknown": None, "body_part": header, "description": described}[self.anatomy_conflict]
        return chosen, "conflict"

    def map_radimagenet(self, modality_dir: str, anatomy_dir: str) -> tuple[str, str]:
        """``(modality, anatomy)`` of a RadImageNet folder pair such as ``("CT", "abd")``.

        Raises:
            InputError: a folder name the vocabulary does not know (the name is given).
        """
        modality = self.map_modality(modality_dir)
        if modality is None:
            raise InputError(f"RadImageNet modality folder {modality_dir!r} is not in the vocabulary")
        anatomy = self._radimagenet.get(str(anatomy_dir).strip().lower())
        if anatomy is None:
            known = ", ".join(sorted(self._radimagenet))
            raise InputError(f"RadImageNet anatomy folder {anatomy_dir!r} is not in the vocabulary (known: {known})")
        return modality, anatomy

    def map_extra(self, group: str, raw: str | None) -> str | None:
        """Value of an optional extra group (e.g. ``manufacturer``) for a raw column value, or None."""
        if group not in self._extra:
            raise ConfigError(f"vocabulary has no extra group {group!r}; known: {sorted(self._extra)}")
        if not raw:
            return None
        norm = _normalise_text(raw)
        best: tuple[int, int, str] | None = None
        for pattern, name, length in self._extra[group][1]:
            m = pattern.search(norm)
            if m is not None and (best is None or (-length, m.start(), name) < best):
                best = (-length, m.start(), name)
        return best[2] if best else None

    def extra_column(self, group: str) -> str:
        """The index column an extra group is read from."""
        return self.model.extra_groups[group].column

    # ----------------------------------------------------------------- encoding
    def encode_frame(self, df) -> np.ndarray:
        """Multi-hot matrix ``(N, K) uint8`` from columns ``<group>_label`` (None/NaN = empty block;
        ``"a|b"`` = both values set, a multi-region anatomy).

        Columns ``modality_label`` and ``anatomy_label`` (plus ``<group>_label`` for extra groups in
        ``label_groups``); column order is :attr:`label_names`.

        Raises:
            InputError: a column is missing, or holds a value that is not in the vocabulary.
        """
        n = len(df)
        out = np.zeros((n, len(self.label_names)), dtype=np.uint8)
        offset = 0
        for group, values in self.groups.items():
            column = f"{group}_label"
            if column not in df.columns:
                raise InputError(f"frame has no column {column!r} (columns: {list(df.columns)})")
            index = {v: i for i, v in enumerate(values)}
            raw = df[column].tolist()
            rows, cols = [], []
            for r, value in enumerate(raw):
                if is_missing(value):
                    continue
                for part in str(value).split(MULTI_SEP):  # a multi-region anatomy sets several bits
                    col = index.get(part)
                    if col is None:
                        raise InputError(
                            f"{column} value {value!r} (row {r}) is not a {group} of the vocabulary: {values}"
                        )
                    rows.append(r)
                    cols.append(offset + col)
            out[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = 1
            offset += len(values)
        return out
