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

import difflib
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modan_pacs.errors import ConfigError, InputError

ANATOMY_SOURCES = ("body_part", "anatomic_region", "description", "unknown")
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

    @field_validator("region_codes")
    @classmethod
    def _scheme_value(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if ":" not in code:
                raise ValueError(f"region code {code!r} must be 'SCHEME:VALUE', e.g. 'SCT:818981001'")
        return codes


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
    modalities: list[ModalityEntry] = Field(min_length=1)
    anatomies: list[AnatomyEntry] = Field(min_length=1)
    extra_groups: dict[str, ExtraGroup] = {}

    @model_validator(mode="after")
    def _consistent(self) -> VocabularyModel:
        known = {"modality", "anatomy", *self.extra_groups}
        for group in self.label_groups:
            if group not in known:
                hint = difflib.get_close_matches(group, sorted(known), n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else f"; known groups: {sorted(known)}"
                raise ValueError(f"label_groups has unknown group {group!r}{extra}")
        if len(set(self.label_groups)) != len(self.label_groups):
            raise ValueError(f"label_groups has duplicates: {self.label_groups}")
        for kind, names in (
            ("modalities", [m.name for m in self.modalities]),
            ("anatomies", [a.name for a in self.anatomies]),
        ):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{kind} has duplicate names {dup}")
        seen: dict[str, str] = {}
        for m in self.modalities:
            for code in m.codes:
                key = code.strip().upper()
                if key in seen and seen[key] != m.name:
                    raise ValueError(f"modality code {code!r} is listed under both {seen[key]!r} and {m.name!r}")
                seen[key] = m.name
        seen = {}
        for a in self.anatomies:
            for bp in a.body_parts:
                key = _normalise_code(bp)
                if key in seen and seen[key] != a.name:
                    raise ValueError(f"body part {bp!r} is listed under both {seen[key]!r} and {a.name!r}")
                seen[key] = a.name
        return self


class Vocabulary:
    """Validated label vocabulary; build with :meth:`load` or :meth:`from_dict`.

    Attributes:
        groups: ordered ``{group: [canonical values]}`` of the groups in ``label_groups``.
        label_names: the K column names of the multi-hot matrix, ``"group:value"`` in order.
        unknown_anatomy: ``"keep"`` (row kept, anatomy block empty) or ``"drop"`` (row left out of the index).
        source: the file it was loaded from, or None.
    """

    def __init__(self, model: VocabularyModel, source: Path | None = None) -> None:
        self.model = model
        self.source = source
        self.unknown_anatomy = model.unknown_anatomy
        self._modality_by_code = {c.strip().upper(): m.name for m in model.modalities for c in m.codes}
        self._anatomy_by_body_part = {_normalise_code(bp): a.name for a in model.anatomies for bp in a.body_parts}
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
        if not path.is_file():
            raise InputError(f"vocabulary file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: object, source: Path | None = None) -> Vocabulary:
        """Validate a parsed vocabulary mapping. Raises ConfigError naming the first bad field."""
        where = str(source) if source else "vocabulary"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at top level, got {type(data).__name__}")
        data = dict(data)
        stated_order = data.pop("label_names", None)  # written by save(); checked, not trusted
        try:
            model = VocabularyModel.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
            # a misspelt key also makes its correct name "missing": name the misspelling first
            err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                parent = VocabularyModel
                field = str(err["loc"][-1])
                names = list(parent.model_fields) + ["name", "codes", "body_parts", "region_codes",
                                                     "region_meanings", "keywords", "radimagenet", "column", "values"]
                hint = difflib.get_close_matches(field, names, n=1)
                msg = f"unknown key{f'; did you mean {hint[0]!r}?' if hint else ''}"
            raise ConfigError(f"{where}: {loc}: {msg}") from None
        vocab = cls(model, source)
        if stated_order is not None and list(stated_order) != vocab.label_names:
            raise ConfigError(f"{where}: label_names {stated_order} disagree with the groups, which give {vocab.label_names}")
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

        Order: BodyPartExamined, then AnatomicRegionSequence, then keywords in ``texts`` (pass
        SeriesDescription, ProtocolName, StudyDescription: most specific first).

        Returns:
            ``(anatomy or None, source)``, source in ``body_part | anatomic_region | description | unknown``.
        """
        hit = self.map_body_part(body_part)
        if hit is not None:
            return hit, "body_part"
        hit = self.map_region(region_code, region_meaning)
        if hit is not None:
            return hit, "anatomic_region"
        hit = self.match_keywords(texts)
        if hit is not None:
            return hit, "description"
        return None, "unknown"

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
        """Multi-hot matrix ``(N, K) uint8`` from columns ``<group>_label`` (None/NaN = empty block).

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
                if value is None or (isinstance(value, float) and value != value):
                    continue
                col = index.get(value)
                if col is None:
                    raise InputError(f"{column} value {value!r} (row {r}) is not a {group} of the vocabulary: {values}")
                rows.append(r)
                cols.append(offset + col)
            out[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = 1
            offset += len(values)
        return out
