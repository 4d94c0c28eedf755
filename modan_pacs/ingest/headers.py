"""Read one DICOM file's header (never its pixel data) into a flat, PHI-free record.

This is the function the worker processes run. It opens the file once, lets pydicom parse only
the tags the index needs (``specific_tags``, ``stop_before_pixels``), then checks from the file
itself that the pixel data element is present and complete (a file cut inside its pixel data
parses fine as a header, so the length of the element is compared with the file size, walking
the fragment items of encapsulated data). Anything that is not an indexable image becomes a
record with ``error`` set to a reason code and ``error_detail`` a one-line explanation.

Reason codes: ``empty_file``, ``not_dicom``, ``truncated``, ``dicomdir``, ``not_an_image``,
``no_pixel_data``, ``missing_uid``, ``permission_denied``, ``unreadable`` (here), plus
``duplicate_sop_instance`` and ``missing_referenced_file`` (added by the index builder).
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

import pyarrow as pa

# Columns of a raw record (what the workers write to part files and what write_index accepts).
RAW_COLUMNS: dict[str, pa.DataType] = {
    "sop_instance_uid": pa.string(),
    "series_instance_uid": pa.string(),
    "study_instance_uid": pa.string(),
    "patient_hash": pa.string(),
    "modality": pa.string(),
    "body_part_examined": pa.string(),
    "study_description": pa.string(),
    "series_description": pa.string(),
    "protocol_name": pa.string(),
    "anatomic_region_code": pa.string(),
    "anatomic_region_meaning": pa.string(),
    "manufacturer": pa.string(),
    "view_position": pa.string(),
    "laterality": pa.string(),
    "rows": pa.int32(),
    "columns": pa.int32(),
    "number_of_frames": pa.int32(),
    "bits_stored": pa.int32(),
    "transfer_syntax_uid": pa.string(),
    "photometric_interpretation": pa.string(),
    "sop_class_uid": pa.string(),
    "path": pa.string(),
    "location": pa.string(),
    "size": pa.int64(),
    "mtime": pa.float64(),
}
PART_SCHEMA = pa.schema([*RAW_COLUMNS.items(), ("error", pa.string()), ("error_detail", pa.string())])

# Keyword -> record column for the plain string fields.
_STRING_FIELDS = {
    "SOPInstanceUID": "sop_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "Modality": "modality",
    "BodyPartExamined": "body_part_examined",
    "StudyDescription": "study_description",
    "SeriesDescription": "series_description",
    "ProtocolName": "protocol_name",
    "Manufacturer": "manufacturer",
    "ViewPosition": "view_position",
    "PhotometricInterpretation": "photometric_interpretation",
    "SOPClassUID": "sop_class_uid",
}
_INT_FIELDS = {"Rows": "rows", "Columns": "columns", "NumberOfFrames": "number_of_frames", "BitsStored": "bits_stored"}
# Only these tags are parsed; PatientID is read to be hashed and never stored.
HEADER_TAGS = sorted(
    {*_STRING_FIELDS, *_INT_FIELDS, "SpecificCharacterSet", "PatientID", "AnatomicRegionSequence",
     "ImageLaterality", "Laterality"}
)

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
    b"\x1f\x8b": "a gzip archive",
}


def patient_hash(patient_id: str | None, salt: bytes) -> str | None:
    """Salted SHA-256 (hex) of a PatientID; None for a missing or blank id."""
    if patient_id is None:
        return None
    text = str(patient_id).strip()
    if not text:
        return None
    return hashlib.sha256(salt + text.encode("utf-8")).hexdigest()


def empty_record(path: str, size: int | None = None, mtime: float | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(PART_SCHEMA.names)
    rec["path"], rec["size"], rec["mtime"] = path, size, mtime
    return rec


def _error(rec: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    rec["error"] = reason
    rec["error_detail"] = " ".join(detail.split())[:300]
    return rec


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _looks_like_bare_dataset(head: bytes) -> bool:
    """A DICOM dataset written without preamble starts with a group 0x0008 (or 0x0002) element."""
    if len(head) < 8:
        return False
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _pixel_extent_ok(fh, size: int, implicit: bool, little: bool) -> tuple[bool, str]:
    """Is the pixel data element at the current position complete? ``(ok, detail)``."""
    start = fh.tell()
    endian = "<" if little else ">"
    head = fh.read(12)
    if len(head) < 8:
        return False, f"pixel data element header cut at byte {start}"
    if not implicit and not (65 <= head[4] <= 90 and 65 <= head[5] <= 90):
        implicit = True  # writer switched to implicit VR (pydicom tolerates this too)
    if implicit:
        length = struct.unpack(endian + "I", head[4:8])[0]
        value_start = start + 8
    else:
        if len(head) < 12:
            return False, f"pixel data element header cut at byte {start}"
        length = struct.unpack(endian + "I", head[8:12])[0]
        value_start = start + 12
    if length != 0xFFFFFFFF:
        end = value_start + length
        if end > size:
            return False, f"pixel data needs {end} bytes, file has {size}"
        return True, ""
    # Encapsulated: items (FFFE,E000) until the sequence delimiter (FFFE,E0DD).
    pos = value_start
    for _ in range(1_000_000):
        fh.seek(pos)
        item = fh.read(8)
        if len(item) < 8:
            return False, f"encapsulated pixel data ends without a sequence delimiter (file has {size} bytes)"
        g, e, ilen = struct.unpack(endian + "HHI", item)
        if (g, e) == (0xFFFE, 0xE0DD):
            return True, ""
        if (g, e) != (0xFFFE, 0xE000) or ilen == 0xFFFFFFFF:
            return False, f"bad fragment item ({g:04X},{e:04X}) at byte {pos}"
        pos += 8 + ilen
        if pos > size:
            return False, f"pixel data fragment needs {pos} bytes, file has {size}"
    return False, "too many pixel data fragments"


def read_header(path: str, salt: bytes) -> dict[str, Any]:
    """The raw index record of one file (see :data:`PART_SCHEMA`); never raises for a bad file.

    Args:
        path: file to read.
        salt: secret bytes prepended to PatientID before hashing (:func:`patient_hash`).
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    rec = empty_record(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except PermissionError:
        return _error(rec, "permission_denied", f"permission denied reading {path}")
    except OSError as exc:
        return _error(rec, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")
    with fh:
        st = os.fstat(fh.fileno())
        size = st.st_size
        rec["size"], rec["mtime"] = size, st.st_mtime
        if size == 0:
            return _error(rec, "empty_file", "zero-byte file")
        try:
            head = fh.read(132)
        except OSError as exc:
            return _error(rec, "unreadable", f"{type(exc).__name__}: {exc}")
        for sig, what in _SIGNATURES.items():
            if head.startswith(sig):
                return _error(rec, "not_dicom", f"file is {what}, not DICOM")
        force = False
        if len(head) < 132 or head[128:132] != b"DICM":
            if not _looks_like_bare_dataset(head):
                return _error(rec, "not_dicom", "no DICM prefix and no DICOM element at byte 0")
            force = True
        fh.seek(0)
        try:
            ds = dcmread(fh, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=force)
        except InvalidDicomError as exc:
            return _error(rec, "not_dicom", str(exc))
        except (EOFError, struct.error) as exc:
            return _error(rec, "truncated", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # pydicom raises many types on corrupt input
            return _error(rec, "not_dicom", f"pydicom could not parse it: {type(exc).__name__}: {exc}")
        end = fh.tell()
        meta = getattr(ds, "file_meta", None)
        media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
        if media_class == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            return _error(rec, "dicomdir", "DICOMDIR (media directory), not an image")
        if end > size:
            return _error(rec, "truncated", f"header runs past the end of the file ({size} bytes)")
        for tag in ds.keys():  # a wanted value cut short by the end of the file
            raw = ds.get_item(tag)
            tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
            if tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > size:
                return _error(rec, "truncated", f"element {tag} needs {tell + length} bytes, file has {size}")
        try:
            implicit, little = ds.original_encoding
            encoding = _text_encoding(ds)
            for keyword, column in _STRING_FIELDS.items():
                rec[column] = _raw_text(ds, keyword, encoding)
            for keyword, column in _INT_FIELDS.items():
                rec[column] = _raw_int(ds, keyword, little)
            rec["patient_hash"] = patient_hash(_raw_text(ds, "PatientID", encoding), salt)
            rec["laterality"] = _raw_text(ds, "ImageLaterality", encoding) or _raw_text(ds, "Laterality", encoding)
            regions = ds.get("AnatomicRegionSequence")
            if regions:
                item = regions[0]
                value = _text(item.get("CodeValue")) or _text(item.get("LongCodeValue"))
                scheme = _text(item.get("CodingSchemeDesignator"))
                if value:
                    rec["anatomic_region_code"] = f"{scheme}:{value}" if scheme else value
                rec["anatomic_region_meaning"] = _text(item.get("CodeMeaning"))
            if rec["sop_class_uid"] is None and media_class:
                rec["sop_class_uid"] = media_class
            tsyntax = _text(meta.get("TransferSyntaxUID")) if meta is not None else None
            if tsyntax is None:
                tsyntax = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
            rec["transfer_syntax_uid"] = tsyntax
        except Exception as exc:  # a value pydicom cannot convert: the header is corrupt
            return _error(rec, "not_dicom", f"bad header value: {type(exc).__name__}: {exc}")
        if rec["sop_instance_uid"] is None:
            sop = _text(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else None
            if sop is None:
                return _error(rec, "missing_uid", "no SOPInstanceUID")
            rec["sop_instance_uid"] = sop
        if end >= size:
            name = _sop_class_name(rec["sop_class_uid"])
            if rec["rows"] is None and "Image" not in name:
                return _error(rec, "not_an_image", f"no pixel data: {name}")
            return _error(rec, "no_pixel_data", f"no pixel data element ({name})")
        ok, detail = _pixel_extent_ok(fh, size, bool(implicit), bool(little))
        if not ok:
            return _error(rec, "truncated", detail)
    if rec["number_of_frames"] is None:
        rec["number_of_frames"] = 1
    return rec


_TAG_OF = {}
_US_VRS = {"US", "SS", "UL", "SL"}


def _tag(keyword: str) -> int:
    tag = _TAG_OF.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword

        tag = _TAG_OF[keyword] = tag_for_keyword(keyword)
    return tag


def _text_encoding(ds) -> str | None:
    """Python codec for raw text values, or None when pydicom must decode (multi-byte charsets)."""
    raw = ds.get_item(0x00080005)
    if raw is None:
        return "latin-1"
    value = raw.value if not isinstance(raw.value, (bytes, bytearray)) else raw.value.decode("ascii", "replace")
    terms = [str(v).strip() for v in (value if isinstance(value, (list, tuple)) else str(value).split("\\"))]
    terms = [t for t in terms if t]
    if not terms or terms == ["ISO_IR 6"] or terms == ["ISO_IR 100"]:
        return "latin-1"
    if terms == ["ISO_IR 192"]:
        return "utf-8"
    return None


def _raw_text(ds, keyword: str, encoding: str | None) -> str | None:
    """A text value from the raw bytes (pydicom's full value conversion is the slow part of a read)."""
    raw = ds.get_item(_tag(keyword))
    if raw is None:
        return None
    value = raw.value
    if isinstance(value, (bytes, bytearray)) and encoding is not None:
        return _text(value.decode(encoding, "replace"))
    return _text(ds[_tag(keyword)].value)


def _raw_int(ds, keyword: str, little: bool) -> int | None:
    raw = ds.get_item(_tag(keyword))
    if raw is None:
        return None
    value = raw.value
    if isinstance(value, (bytes, bytearray)):
        if not value:
            return None
        if getattr(raw, "VR", None) in _US_VRS or (getattr(raw, "VR", None) is None and len(value) in (2, 4)
                                                   and keyword in ("Rows", "Columns", "BitsStored")):
            fmt = ("<" if little else ">") + ("H" if len(value) == 2 else "I")
            return struct.unpack(fmt, value[:struct.calcsize(fmt)])[0]
        text = value.decode("ascii", "replace").strip("\x00 ").strip()
        return int(float(text)) if text else None
    converted = ds[_tag(keyword)].value
    return int(converted) if converted not in (None, "") else None


def _sop_class_name(uid: str | None) -> str:
    if not uid:
        return "unknown SOP class"
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else f"SOP class {uid}"
