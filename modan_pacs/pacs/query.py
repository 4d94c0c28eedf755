"""C-FIND indexing of a live PACS: the same index schema as a folder index, with ``location``.

The archive is walked top-down so that no single C-FIND response is unbounded: studies are found
in date slices (``slice_days`` wide, when a date range is given) times modality slices (one query
per requested modality), then the series of each study, then the instances of each series. Study
Root is used when the PACS accepts it; otherwise Patient Root (patients first, then their studies).

The index contract has one row per image instance, so instances are always enumerated. ``level``
chooses the deepest level whose *attributes* are requested (and so feed the labels):

- ``image``: study, series and image attributes (rows, columns, view, photometric, SOP class...);
- ``series``: study and series attributes; the image query asks only for SOP Instance/Class UIDs
  (much cheaper on servers that read files to answer image-level keys);
- ``study``: study attributes only (modality from ModalitiesInStudy, anatomy from StudyDescription).

PatientID is hashed with the folder index's salted hash (:func:`modan_pacs.ingest.patient_hash`)
at once and never stored. ``path`` is None and ``location`` is ``pacs://AET@host:port/STUDY/SERIES/SOP``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modan_pacs.errors import InputError, PacsError
from modan_pacs.ingest.headers import raw_frame
from modan_pacs.pacs.association import PacsSettings, no_response_problem, one_line, open_association

LOGGER = logging.getLogger(__name__)

LEVELS = ("study", "series", "image")
QUERY_MODELS = ("auto", "study", "patient")


def _find_models() -> tuple[str, str]:
    """(Study Root, Patient Root) C-FIND information models, by pynetdicom's names."""
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
    )

    return StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind


# series attributes the labels use; many archives return them at IMAGE level only (or not at all)
LABEL_SERIES_KEYS = ("Modality", "BodyPartExamined", "SeriesDescription", "ProtocolName")
# index columns the labels are derived from, and the C-FIND key of each
LABEL_COLUMNS = {
    "modality": "Modality",
    "body_part_examined": "BodyPartExamined",
    "study_description": "StudyDescription",
    "series_description": "SeriesDescription",
    "protocol_name": "ProtocolName",
}

STUDY_KEYS = ("PatientID", "StudyInstanceUID", "StudyDate", "StudyDescription", "ModalitiesInStudy")
SERIES_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "ProtocolName",
    "Manufacturer",
    "Laterality",
    "NumberOfSeriesRelatedInstances",
)
IMAGE_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "ViewPosition",
    "ImageLaterality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsStored",
    "PhotometricInterpretation",
)


def parse_date(value: str | dt.date | None, name: str) -> dt.date | None:
    """``YYYYMMDD`` or ``YYYY-MM-DD`` (or a date) -> date; None stays None.

    Raises:
        InputError: the text is not a valid date.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    text = str(value).strip().replace("-", "")
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise InputError(f"{name} {value!r}: expected a date as YYYYMMDD or YYYY-MM-DD") from None


def date_slices(date_from: dt.date | None, date_to: dt.date | None, slice_days: int) -> list[str]:
    """DICOM StudyDate range matching values covering [date_from, date_to] in ``slice_days`` windows.

    With no bound, one universal-match slice (``""``); with one bound, one open range
    (``"YYYYMMDD-"`` / ``"-YYYYMMDD"``); with both, consecutive closed windows.

    Raises:
        InputError: date_from is after date_to, or slice_days < 0.
    """
    if slice_days < 0:
        raise InputError(f"slice_days {slice_days} must be >= 0 (0 = one query for the whole range)")
    if date_from is None and date_to is None:
        return [""]
    if date_to is None:
        return [f"{date_from:%Y%m%d}-"]
    if date_from is None:
        return [f"-{date_to:%Y%m%d}"]
    if date_from > date_to:
        raise InputError(f"date_from {date_from:%Y%m%d} is after date_to {date_to:%Y%m%d}")
    if slice_days == 0:
        return [f"{date_from:%Y%m%d}-{date_to:%Y%m%d}"]
    slices = []
    start = date_from
    while start <= date_to:
        end = min(start + dt.timedelta(days=slice_days - 1), date_to)
        slices.append(f"{start:%Y%m%d}-{end:%Y%m%d}")
        start = end + dt.timedelta(days=1)
    return slices


def _text(ds: Any, keyword: str) -> str | None:
    """A header value as text, None when absent or empty."""
    value = ds.get(keyword) if ds is not None else None
    if value is None:
        return None
    if not isinstance(value, str) and hasattr(value, "__iter__") and not hasattr(value, "original_string"):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _int(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword) if ds is not None else None
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# Query/Retrieve level of the matching keys a --filter may name (PS3.4 C.6.1.1 and the modules
# archives index at each level); any other attribute is matched at IMAGE level.
_STUDY_LEVEL = {
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "ModalitiesInStudy",
    "SOPClassesInStudy",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "IssuerOfPatientID",
    "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription",
    "InstitutionName",
    "RequestedProcedureDescription",
}
_SERIES_LEVEL = {
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "ProtocolName",
    "StationName",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionalDepartmentName",
    "OperatorsName",
    "PerformingPhysicianName",
    "Laterality",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "SoftwareVersions",
    "DeviceSerialNumber",
}


def parse_filters(filters: Sequence[str] | dict[str, str] | None) -> dict[str, dict[str, str]]:
    """``["StudyDescription=*KNEE*", "0008,1010=CT01", ...]`` -> ``{level: {keyword: value}}``, as findscu's ``-k``.

    A key is a DICOM keyword or a ``gggg,eeee`` tag; the value is a C-FIND matching value
    (``*``/``?`` wildcards, ``A-B`` ranges, ``\\``-separated lists). Each filter is sent at the
    level its attribute belongs to (study, series, else image), so only matching studies, series
    or instances enter the index.

    Raises:
        InputError: no ``=``, or a key that is not a DICOM attribute.
    """
    from pydicom.datadict import keyword_for_tag, tag_for_keyword

    items = filters.items() if isinstance(filters, dict) else [_split_filter(f) for f in filters or ()]
    out: dict[str, dict[str, str]] = {"STUDY": {}, "SERIES": {}, "IMAGE": {}}
    for key, value in items:
        keyword = key.strip()
        if "," in keyword:
            group, _, element = keyword.strip("()").partition(",")
            try:
                keyword = keyword_for_tag((int(group, 16) << 16) | int(element, 16))
            except ValueError:
                keyword = ""
        if not keyword or tag_for_keyword(keyword) is None:
            raise InputError(f"--filter {key}={value}: {key!r} is not a DICOM attribute keyword or gggg,eeee tag")
        level = "STUDY" if keyword in _STUDY_LEVEL else "SERIES" if keyword in _SERIES_LEVEL else "IMAGE"
        out[level][keyword] = value
    return out


def _split_filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--filter {text!r}: expected KEY=VALUE, e.g. StudyDescription=*KNEE*")
    return key, value


class PacsQuery(BaseModel):
    """What a C-FIND (or QIDO-RS) walk of an archive asks for: the one way into :func:`query_pacs`,
    :func:`build_pacs_index` and :func:`~modan_pacs.pacs.dicomweb.query_dicomweb`.

    ``level``: the deepest level whose attributes are requested (rows are always one per instance);
    ``modalities``: one query slice each (a comma-separated text is split); ``date_from`` /
    ``date_to``: StudyDate bounds, inclusive (``YYYYMMDD`` or ``YYYY-MM-DD``), sliced into
    ``slice_days`` windows (0: one query); ``query_model``: Study Root when accepted (``auto``) or
    forced; ``filters``: more matching keys as ``KEY=VALUE`` (:func:`parse_filters`). Build it with
    :func:`make_query` for one-line :class:`InputError` messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: str = "image"
    modalities: tuple[str, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    slice_days: int = Field(default=30, ge=0)
    query_model: str = "auto"
    filters: tuple[str, ...] = ()

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value not in LEVELS:
            raise ValueError(f"{value!r} must be one of {', '.join(LEVELS)}")
        return value

    @field_validator("query_model")
    @classmethod
    def _model(cls, value: str) -> str:
        if value not in QUERY_MODELS:
            raise ValueError(f"{value!r} must be one of {', '.join(QUERY_MODELS)}")
        return value

    @field_validator("modalities", mode="before")
    @classmethod
    def _modalities(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else (value or ())
        return tuple(m.strip().upper() for m in items if str(m).strip())

    @field_validator("date_from", "date_to", mode="before")
    @classmethod
    def _date(cls, value: Any, info: Any) -> dt.date | None:
        try:
            return parse_date(value, info.field_name)
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, value: Any) -> tuple[str, ...]:
        items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else list(value or ())
        try:
            parse_filters(items)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return tuple(items)

    @model_validator(mode="after")
    def _range(self) -> PacsQuery:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from:%Y%m%d} is after date_to {self.date_to:%Y%m%d}")
        return self

    def date_slices(self) -> list[str]:
        """StudyDate matching values of the walk (:func:`date_slices`)."""
        return date_slices(self.date_from, self.date_to, self.slice_days)

    def filters_by_level(self) -> dict[str, dict[str, str]]:
        """``{level: {keyword: value}}`` (:func:`parse_filters`)."""
        return parse_filters(list(self.filters))


def make_query(**kwargs: Any) -> PacsQuery:
    """Build :class:`PacsQuery`, turning validation errors into one-line :class:`InputError`."""
    return one_line(PacsQuery, "PACS query", **kwargs)


class FindSession:
    """One association used for many C-FIND requests (reopened after an abort).

    ``model`` is ``"study"``, ``"patient"`` or ``"auto"`` (Study Root if accepted, else Patient Root).
    ``filters`` (from :func:`parse_filters`) are added to the matching keys of each level.
    """

    def __init__(
        self, settings: PacsSettings, model: str = "auto", filters: dict[str, dict[str, str]] | None = None
    ) -> None:
        if model not in QUERY_MODELS:
            raise InputError(f"query model {model!r} must be one of {', '.join(QUERY_MODELS)}")
        self.settings = settings
        self.filters = filters or {}
        self.requested = model
        self.assoc = None
        self.model = ""

    def _open(self) -> None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        study_find, patient_find = _find_models()
        wanted = {"auto": (study_find, patient_find), "study": (study_find,), "patient": (patient_find,)}[
            self.requested
        ]
        self.assoc = open_association(
            self.settings, [(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for uid in wanted], purpose="C-FIND"
        )
        accepted = {cx.abstract_syntax for cx in self.assoc.accepted_contexts}
        if study_find in accepted and self.requested in ("auto", "study"):
            self.model = "study"
        elif patient_find in accepted:
            self.model = "patient"
            LOGGER.info("%s does not accept Study Root C-FIND; using Patient Root", self.settings.label)
        else:
            self.close()
            raise PacsError(f"C-FIND: {self.settings.label} accepted neither Study Root nor Patient Root queries")

    def __enter__(self) -> FindSession:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None

    def find(self, level: str, keys: Sequence[str], match: dict[str, str]) -> list[Any]:
        """One C-FIND at ``level`` (PATIENT/STUDY/SERIES/IMAGE) returning the identifiers.

        ``keys`` are return keys (sent empty); ``match`` maps keywords to matching values.

        Raises:
            PacsError: a failure status, or no final status (abort / DIMSE timeout).
        """
        from pydicom.dataset import Dataset
        from pynetdicom.status import STATUS_PENDING, STATUS_SUCCESS, code_to_category

        if self.assoc is None or not self.assoc.is_established:
            self._open()
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword in keys:
            if keyword == "AnatomicRegionSequence":
                query.AnatomicRegionSequence = []
            else:
                setattr(query, keyword, None)
        for keyword, value in match.items():
            setattr(query, keyword, value)
        model = _find_models()[0 if self.model == "study" else 1]
        results = []
        final = None
        heard = time.monotonic()
        for status, identifier in self.assoc.send_c_find(query, model):
            code = getattr(status, "Status", None)
            if code is not None and code_to_category(code) == STATUS_PENDING:
                heard = time.monotonic()
                if identifier is not None:
                    results.append(identifier)
                continue
            final = code
        if final is None:
            problem = no_response_problem(self.settings, f"C-FIND {level}", time.monotonic() - heard)
            self.close()
            raise PacsError(f"{problem} (is calling AE {self.settings.calling_aet} allowed to query?)")
        if code_to_category(final) != STATUS_SUCCESS:
            raise PacsError(f"C-FIND {level} on {self.settings.label} with {match}: status 0x{final:04X}")
        return results

    # -- hierarchy walk -------------------------------------------------------------------------
    def studies(self, study_date: str, modality: str | None) -> list[Any]:
        """Studies matching a StudyDate range value and (optionally) one modality."""
        match = dict(self.filters.get("STUDY", {}))
        if study_date:
            match["StudyDate"] = study_date
        if modality:
            match["ModalitiesInStudy"] = modality
        keys = [k for k in STUDY_KEYS if k not in match]
        if self.model == "study":
            return self.find("STUDY", keys, match)
        found = []
        anonymous = False
        for patient in self.find("PATIENT", ["PatientID"], {}):
            pid = _text(patient, "PatientID")
            if pid is None:  # an empty PatientID cannot be matched by value: take those studies below
                anonymous = True
                continue
            found.extend(self.find("STUDY", [k for k in keys if k != "PatientID"], {**match, "PatientID": pid}))
        if anonymous:
            found.extend(s for s in self.find("STUDY", keys, match) if _text(s, "PatientID") is None)
        return found

    def _upper(self, study: Any) -> dict[str, str]:
        match = {"StudyInstanceUID": str(study.StudyInstanceUID)}
        if self.model == "patient":
            match["PatientID"] = _text(study, "PatientID") or ""
        return match

    def series(self, study: Any, modality: str | None, *, attributes: bool = True) -> list[Any]:
        """Series of a study; with ``attributes=False`` only UIDs and Modality are asked for."""
        match = {**self.filters.get("SERIES", {}), **self._upper(study)}
        if modality:
            match["Modality"] = modality
        keys = SERIES_KEYS if attributes else ("SeriesInstanceUID", "Modality")
        return self.find("SERIES", [k for k in keys if k not in match], match)

    def images(self, study: Any, series: Any, *, attributes: bool = True, extra: Sequence[str] = ()) -> list[Any]:
        """Instances of a series; with ``attributes=False`` only SOP Instance/Class UIDs (and ``extra``)
        are asked for."""
        match = {
            **self.filters.get("IMAGE", {}),
            **self._upper(study),
            "SeriesInstanceUID": str(series.SeriesInstanceUID),
        }
        keys = [*IMAGE_KEYS, "AnatomicRegionSequence"] if attributes else ["SOPInstanceUID", "SOPClassUID"]
        keys += [k for k in extra if k not in keys]
        return self.find("IMAGE", [k for k in keys if k not in match], match)


def _anatomic_region(ds: Any) -> tuple[str | None, str | None]:
    seq = ds.get("AnatomicRegionSequence") if ds is not None else None
    if not seq:
        return None, None
    item = seq[0]
    return _text(item, "CodeValue"), _text(item, "CodeMeaning")


def _row(
    settings: PacsSettings,
    patient_hash: str | None,
    study: Any,
    series: Any,
    image: Any,
    level: str,
) -> dict[str, Any]:
    """One index row; attributes below ``level`` are left empty (UIDs always come from the identifiers)."""
    study_uid = str(study.StudyInstanceUID)
    series_uid = _text(series, "SeriesInstanceUID")
    sop_uid = _text(image, "SOPInstanceUID")
    series_attrs = series if level in ("series", "image") else None
    image_attrs = image if level == "image" else None

    def series_value(keyword: str) -> str | None:  # the series answer, else the image answer (asked when missing)
        return _text(series_attrs, keyword) or (_text(image, keyword) if series_attrs is not None else None)

    if series_attrs is not None:
        modality = series_value("Modality")
    else:
        modality = _text(study, "ModalitiesInStudy") or _text(series, "Modality")
    code, meaning = _anatomic_region(image_attrs)
    return {
        "sop_instance_uid": sop_uid,
        "series_instance_uid": series_uid,
        "study_instance_uid": study_uid,
        "patient_hash": patient_hash,
        "modality": modality,
        "body_part_examined": series_value("BodyPartExamined"),
        "study_description": _text(study, "StudyDescription"),
        "series_description": series_value("SeriesDescription"),
        "protocol_name": series_value("ProtocolName"),
        "anatomic_region_code": code,
        "anatomic_region_meaning": meaning,
        "manufacturer": _text(series_attrs, "Manufacturer"),
        "view_position": _text(image_attrs, "ViewPosition"),
        "laterality": _text(image_attrs, "ImageLaterality") or _text(series_attrs, "Laterality"),
        "rows": _int(image_attrs, "Rows"),
        "columns": _int(image_attrs, "Columns"),
        "number_of_frames": _int(image_attrs, "NumberOfFrames") or (1 if image_attrs is not None else None),
        "bits_stored": _int(image_attrs, "BitsStored"),
        "transfer_syntax_uid": None,
        "photometric_interpretation": _text(image_attrs, "PhotometricInterpretation"),
        "sop_class_uid": _text(image, "SOPClassUID"),
        "path": None,
        "location": f"pacs://{settings.label}/{study_uid}/{series_uid}/{sop_uid}",
        "size": None,
        "mtime": None,
    }


def _study_rows(session: FindSession, study: Any, modality: str | None, level: str, patient_hash: str | None):
    """Index rows of one study: its series, then the instances of each series."""
    for series in session.series(study, modality, attributes=level != "study"):
        # label attributes the series answer lacks are asked again at IMAGE level
        lacking = [k for k in LABEL_SERIES_KEYS if _text(series, k) is None] if level != "study" else []
        for image in session.images(study, series, attributes=level == "image", extra=lacking):
            yield _row(session.settings, patient_hash, study, series, image, level)


def query_pacs(
    settings: PacsSettings,
    query: PacsQuery | None = None,
    *,
    hash_patient_id: Callable[[str], str | None] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
):
    """Walk the PACS and return a DataFrame of raw index rows (the raw schema,
    :data:`modan_pacs.ingest.headers.RAW_COLUMNS`).

    Args:
        query: what to ask for (:class:`PacsQuery`; None = every instance, image-level attributes).
        hash_patient_id: ``PatientID -> hash`` (the folder index's salted hash); None leaves the hash empty.
        progress: ``progress(done, total, description)``: query slices (date window x modality) done;
            called with 0 before the first (the CLI draws it).

    Raises:
        PacsError: the PACS failed or refused a request.
    """

    query = query or PacsQuery()
    modalities, level = list(query.modalities), query.level
    slices = query.date_slices()
    rows: list[dict[str, Any]] = []
    seen_studies: set[tuple[str, str | None]] = set()
    total, done, description = len(slices) * max(1, len(modalities)), 0, f"C-FIND {settings.label}"
    with FindSession(settings, query.query_model, query.filters_by_level()) as session:
        if progress is not None:
            progress(done, total, description)
        for study_date in slices:
            for mod in modalities or [None]:
                for study in session.studies(study_date, mod):
                    study_uid = _text(study, "StudyInstanceUID")
                    if study_uid is None or (study_uid, mod) in seen_studies:
                        continue
                    seen_studies.add((study_uid, mod))
                    pid = _text(study, "PatientID")
                    patient_hash = hash_patient_id(pid) if (hash_patient_id is not None and pid) else None
                    rows.extend(_study_rows(session, study, mod, level, patient_hash))
                done += 1
                if progress is not None:
                    progress(done, total, description)
    frame = raw_frame([r for r in rows if r.get("sop_instance_uid")])
    return frame.drop_duplicates(subset=["sop_instance_uid"], keep="first").reset_index(drop=True)


def missing_label_attributes(frame) -> dict[str, int]:
    """C-FIND key -> number of index rows without a value for it, for the keys the labels use.

    A PACS that answers only key attributes (dcmqrscp, many archives' defaults) leaves anatomy to
    the descriptions, or unknown; :func:`modan_pacs.pacs.complete_labels` fills them from the
    headers of pulled files.
    """
    return {key: int(frame[column].isna().sum()) for column, key in LABEL_COLUMNS.items() if column in frame.columns}


UID_COLUMNS = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
}


def split_invalid_uids(frame, label: str):
    """Move rows holding an identifier that is not a valid DICOM UID to an errors table.

    Valid means ``pydicom.uid.UID(value).is_valid``: digits and dots, no empty or zero-led
    component, at most 64 characters. An archive answering ``../../x`` or a 300-character UID
    keeps that row out of the index; the error's ``path`` names the row with the UIDs made
    file-system safe (:func:`~modan_pacs.pacs.store.safe_uid_name`), never the raw value.
    A missing SOP Class UID is allowed (some archives do not return it). Returns ``(valid, errors)``.
    """
    import pandas as pd
    from pydicom.uid import UID

    from modan_pacs.pacs.store import safe_uid_name

    def invalid(value: Any) -> bool:
        return value is not None and value is not pd.NA and not UID(str(value)).is_valid

    reasons = pd.Series("", index=frame.index, dtype=object)
    for column, keyword in UID_COLUMNS.items():
        bad = frame[column].map(invalid).astype(bool)
        reasons[bad] = reasons[bad] + (keyword + " ")
    mask = reasons != ""
    rows = frame.loc[mask]
    errors = pd.DataFrame(
        {
            "path": [
                f"pacs://{label}/{safe_uid_name(a)}/{safe_uid_name(b)}/{safe_uid_name(c)}"
                for a, b, c in zip(rows["study_instance_uid"], rows["series_instance_uid"], rows["sop_instance_uid"])
            ],
            "reason": "invalid_uid",
            "detail": [f"not a valid DICOM UID: {r.strip().replace(' ', ', ')}" for r in reasons[mask]],
        }
    )
    return frame.loc[~mask].reset_index(drop=True), errors


def split_non_images(frame):
    """Move rows whose SOP class is not an image class and that report no Rows to an errors table.

    Mirrors the folder index's ``not_an_image`` rule (SR, presentation states, RT plans...);
    returns ``(images, errors)`` with errors as ``path`` (the location), ``reason``, ``detail``.
    """
    import pandas as pd
    from pydicom.uid import UID

    def is_non_image(sop_class: Any, rows: Any) -> bool:
        if sop_class is None or not (rows is None or rows is pd.NA):
            return False
        return "Image" not in UID(str(sop_class)).name

    mask = pd.Series(
        [is_non_image(c, r) for c, r in zip(frame["sop_class_uid"], frame["rows"])], index=frame.index, dtype=bool
    )
    errors = pd.DataFrame(
        {
            "path": frame.loc[mask, "location"].to_numpy(dtype=object),
            "reason": "not_an_image",
            "detail": [f"no pixel data: {UID(str(c)).name}" for c in frame.loc[mask, "sop_class_uid"]],
        }
    )
    return frame.loc[~mask].reset_index(drop=True), errors


def _patient_hasher(salt_file: str | Path | None, out_dir: str | Path):
    """The folder index's salted PatientID hash, bound to the salt in ``salt_file`` (kept outside ``out_dir``)."""
    from modan_pacs.ingest import load_or_create_salt, patient_hash

    salt = load_or_create_salt(salt_file, forbidden_dir=out_dir)
    return lambda patient_id: patient_hash(patient_id, salt)


def build_pacs_index(
    settings: PacsSettings,
    query: PacsQuery | None = None,
    *,
    out_dir: str | Path,
    vocabulary: Any = None,
    salt_file: str | Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
):
    """Index a live PACS by C-FIND into ``out_dir`` with the folder index's schema and labels.

    Writes what :func:`modan_pacs.ingest.write_index` writes (``index.parquet`` with ``location``
    and ``path=None``, ``labels.npy``, ``vocabulary.yaml``, ...). ``settings`` says where the PACS is
    and how to talk to it (:func:`~modan_pacs.pacs.association.make_settings`), ``query`` what to ask
    (:func:`make_query`); ``vocabulary`` is a Vocabulary, a path to one, or None for the shipped
    default; ``progress`` is passed to :func:`query_pacs`. Returns what ``write_index`` returns.

    Raises:
        PacsError: the PACS could not be reached or refused us.
    """
    from modan_pacs import ingest
    from modan_pacs.labels import Vocabulary

    vocab = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary.load(vocabulary)
    frame = query_pacs(settings, query, hash_patient_id=_patient_hasher(salt_file, out_dir), progress=progress)
    import pandas as pd

    frame, bad_uids = split_invalid_uids(frame, settings.label)
    frame, non_images = split_non_images(frame)
    errors = pd.concat([bad_uids, non_images], ignore_index=True)
    if len(bad_uids):
        LOGGER.warning(
            "%d C-FIND rows with identifiers that are not valid DICOM UIDs kept out of the index", len(bad_uids)
        )
    return ingest.write_index(frame, Path(out_dir), vocab, errors=errors)


def iter_instances_of_series(
    settings: PacsSettings, study_uid: str, series_uid: str, session: FindSession | None = None
) -> Iterator[tuple[str, str | None]]:
    """``(SOPInstanceUID, SOPClassUID)`` of every instance of one series (an IMAGE-level C-FIND)."""
    own = session is None
    session = session or FindSession(settings).__enter__()
    try:
        from pydicom.dataset import Dataset

        study = Dataset()
        study.StudyInstanceUID = study_uid
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        for image in session.images(study, series, attributes=False):
            uid = _text(image, "SOPInstanceUID")
            if uid:
                yield uid, _text(image, "SOPClassUID")
    finally:
        if own:
            session.close()
