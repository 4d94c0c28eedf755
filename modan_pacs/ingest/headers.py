"""Read one DICOM file's header (never its pixel data) into a flat, PHI-free record.

This is what the worker processes run, so it is the hot path of ``modan-pacs index``. It reads the
first few kB of the file once and walks them in memory with pydicom's ``data_element_generator``,
keeping the raw bytes of the few tags the index needs and stopping at the pixel data element;
it then checks that the pixel data element is present and complete (a file cut inside its pixel
data parses fine as a header, so the element length is compared with the file size, walking the
fragment items of encapsulated data). A deflated dataset is inflated in memory and walked the
same way. Files that walk does not cover (no preamble, big endian, odd file meta) are read with
``pydicom.dcmread`` instead; both give the same record.
Anything that is not an indexable image becomes a record with ``error`` set to a reason code and
``error_detail`` a one-line explanation.

Reason codes: ``empty_file``, ``not_dicom``, ``truncated``, ``corrupt_header``, ``dicomdir``,
``not_an_image``, ``no_pixel_data``, ``missing_uid``, ``permission_denied``, ``unreadable`` (here),
``timeout`` (:func:`read_rows`), ``worker_crashed`` (:mod:`modan_pacs.ingest.workers`),
``special_file`` (:mod:`modan_pacs.ingest.walk`), plus ``duplicate_sop_instance`` and
``missing_referenced_file`` (added by the index builder). docs/commands/index.md explains each.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pyarrow as pa

from modan_pacs.fileio import atomic_write

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
_PART_NAMES = tuple(PART_SCHEMA.names)  # Schema.names builds a new list on every access

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
    {
        *_STRING_FIELDS,
        *_INT_FIELDS,
        "SpecificCharacterSet",
        "PatientID",
        "AnatomicRegionSequence",
        "ImageLaterality",
        "Laterality",
    }
)

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
    rec: dict[str, Any] = dict.fromkeys(_PART_NAMES)
    rec["path"], rec["size"], rec["mtime"] = path, size, mtime
    return rec


def _error(rec: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    """The error record of ``rec``'s file: only path, size and mtime are kept (values read from a
    corrupt header may hold any bytes of the file, identifying ones included)."""
    out = empty_record(rec["path"], rec["size"], rec["mtime"])
    out["error"], out["error_detail"] = reason, _safe_detail(detail)
    return out


_QUOTED = re.compile(r"""(['"])([^'"]{17,})\1""")


def _safe_detail(detail: str) -> str:
    """One printable line of at most 300 characters; a quoted value longer than 16 characters in an
    exception message (pydicom quotes the bytes it could not convert) is replaced by its length."""
    text = " ".join(_QUOTED.sub(lambda m: f"<{len(m.group(2))} characters>", str(detail)).split())
    return "".join(c if c.isprintable() else "?" for c in text)[:300]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    if not text.isascii():  # a bad charset can leave lone surrogates, which Parquet cannot store
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text or None


def _looks_like_bare_dataset(head: bytes) -> bool:
    """A DICOM dataset written without preamble starts with a group 0x0008 (or 0x0002) element."""
    if len(head) < 8:
        return False
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _pixel_extent_ok(read_at, start: int, size: int, implicit: bool, little: bool) -> tuple[bool, str]:
    """Is the pixel data element at byte ``start`` complete? ``(ok, detail)``.

    ``read_at(pos, n)`` returns up to ``n`` bytes of the file from ``pos``.
    """
    endian = "<" if little else ">"
    head = read_at(start, 12)
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
        item = read_at(pos, 8)
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


class _Reject(Exception):
    """Raised inside the reader: the file is not an indexable image (``reason`` code, one-line ``detail``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class ReadTimeout(BaseException):
    """Raised by the per-file alarm of :func:`read_rows`. A ``BaseException`` so that no ``except
    Exception`` fallback inside the reader (or inside pydicom) can swallow it."""


@dataclass
class _Scan:
    """What a header walk found: wanted raw elements, their encoding, and where the walk ended.

    ``end`` is the offset of the pixel data element (or where the walk ended; :data:`_DIRECTORY_RECORDS`
    for a DICOMDIR) in a stream of ``size`` bytes. For a deflated file that stream is ``data``, the
    file meta followed by the inflated dataset; otherwise it is the file itself (``data`` is None).
    """

    meta: dict[str, str | None]
    elems: dict[int, Any]
    implicit: bool
    little: bool
    end: int
    size: int
    data: bytes | None = None


def read_header(path: str, salt: bytes, *, dcmread_only: bool = False) -> dict[str, Any]:
    """The raw index record of one file (see :data:`PART_SCHEMA`); never raises for a bad file.

    Standard Part-10 files (``DICM`` prefix, implicit or explicit VR little endian, including every
    encapsulated syntax, and deflated files once inflated) are read by :func:`_scan_part10`, which
    walks the elements with pydicom's ``data_element_generator`` and keeps only the raw values of
    :data:`HEADER_TAGS`; any other file (no preamble, big endian, a file meta pydicom must re-read
    as implicit VR, a command set, or an element the walk cannot parse) is read by
    ``pydicom.dcmread`` (:func:`_read_with_dcmread`). Both produce the same record
    (``tests/ingest/test_ingest_headers.py`` checks this on every real pydicom file).

    Whatever the file holds, the answer is a record: a reason from the module doc in ``error``, and
    ``corrupt_header`` with the exception's type and message for anything the reader did not
    foresee. Only :class:`ReadTimeout` (the caller's alarm) passes through.

    Args:
        path: file to read.
        salt: secret bytes prepended to PatientID before hashing (:func:`patient_hash`).
        dcmread_only: read every file with ``pydicom.dcmread`` (slower; the reference the fast
            walk is tested against).
    """
    rec = empty_record(path)
    try:
        _read_into(rec, path, salt, dcmread_only)
    except _Reject as exc:
        return _error(rec, exc.reason, exc.detail)
    except Exception as exc:  # anything else a corrupt file provokes is this file's error, never the run's
        return _error(rec, "corrupt_header", f"{type(exc).__name__}: {exc}")
    if rec["number_of_frames"] is None:
        rec["number_of_frames"] = 1
    return rec


def _read_into(rec: dict[str, Any], path: str, salt: bytes, dcmread_only: bool) -> None:
    """Fill ``rec`` from the file at ``path``; raise :class:`_Reject` for a file that is not an image."""
    try:
        fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except PermissionError:
        raise _Reject("permission_denied", f"permission denied reading {path}") from None
    except OSError as exc:
        raise _Reject("unreadable", f"{type(exc).__name__}: {exc.strerror or exc}") from None
    with fh:
        try:
            st = os.fstat(fh.fileno())
            rec["size"], rec["mtime"] = st.st_size, st.st_mtime
            if st.st_size == 0:
                raise _Reject("empty_file", "zero-byte file")
            block = fh.read(_BLOCK)
        except OSError as exc:
            raise _Reject("unreadable", f"{type(exc).__name__}: {exc}") from None
        part10 = _check_signature(block[:132])
        scan = _scan(fh, block, st.st_size, part10, dcmread_only)
        _check_extent(scan)
        try:
            _fill(rec, scan.elems, scan.meta, scan.implicit, scan.little, salt)
        except Exception as exc:  # a value pydicom cannot convert: the header is corrupt
            raise _Reject("not_dicom", f"bad header value: {type(exc).__name__}: {exc}") from None
        if rec["sop_instance_uid"] is None:
            rec["sop_instance_uid"] = scan.meta.get("media_instance")
            if rec["sop_instance_uid"] is None:
                raise _Reject("missing_uid", "no SOPInstanceUID")
        for column in _UID_COLUMNS:  # a length field gone wrong makes a UID swallow the elements after it
            value = rec[column]
            if value is not None and not (value.isascii() and value.isprintable()):
                raise _Reject("corrupt_header", f"{column} holds bytes no UID has ({len(value)} characters)")
        _check_pixels(fh, block, scan, rec)


def _check_signature(head: bytes) -> bool:
    """True for a Part-10 file (``DICM`` at byte 128); raise ``not_dicom`` for other formats."""
    for sig, what in _SIGNATURES.items():
        if head.startswith(sig):
            raise _Reject("not_dicom", f"file is {what}, not DICOM")
    part10 = len(head) == 132 and head[128:132] == b"DICM"
    if not part10 and not _looks_like_bare_dataset(head):
        raise _Reject("not_dicom", "no DICM prefix and no DICOM element at byte 0")
    return part10


def _scan(fh, block: bytes, size: int, part10: bool, dcmread_only: bool) -> _Scan:
    """The fast walk where it applies, else pydicom's full reader."""
    if part10 and not dcmread_only:
        try:
            scanned = _scan_part10(fh, block, size)
        except _Reject:
            raise
        except Exception:  # an element the walk cannot parse: pydicom's full reader decides
            scanned = None
        if scanned is not None:
            return scanned
    fh.seek(0)
    return _read_with_dcmread(fh, size, force=not part10)


def _check_extent(scan: _Scan) -> None:
    """DICOMDIRs and headers (or wanted values) that run past the end of the file."""
    if scan.meta.get("media_class") == _uids().dicomdir or scan.end == _DIRECTORY_RECORDS:
        raise _Reject("dicomdir", "DICOMDIR (media directory), not an image")
    size = scan.size
    if scan.end > size:
        raise _Reject("truncated", f"header runs past the end of the file ({size} bytes)")
    for tag, raw in scan.elems.items():  # a wanted value cut short by the end of the file
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > size:
            raise _Reject(
                "truncated",
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) needs {tell + length} bytes, file has {size}",
            )


def _check_pixels(fh, block: bytes, scan: _Scan, rec: dict[str, Any]) -> None:
    """Raise ``not_an_image`` / ``no_pixel_data`` / ``truncated`` unless the pixel data element is complete."""
    size = scan.size
    if scan.end >= size:
        name = _sop_class_name(rec["sop_class_uid"])
        if rec["rows"] is None and "Image" not in name:
            raise _Reject("not_an_image", f"no pixel data: {name}")
        raise _Reject("no_pixel_data", f"no pixel data element ({name})")
    data = scan.data if scan.data is not None else block

    def read_at(pos: int, n: int) -> bytes:
        if pos + n <= len(data) or scan.data is not None:
            return data[pos : pos + n]
        fh.seek(pos)
        return fh.read(n)

    ok, detail = _pixel_extent_ok(read_at, scan.end, size, bool(scan.implicit), bool(scan.little))
    if not ok:
        raise _Reject("truncated", detail)


_BLOCK = 8192  # read first and walked from memory; grown 8x at a time for longer headers
_MAX_BLOCK = 1 << 19  # beyond this the file object is walked (memory stays flat for huge headers)
_MAX_INFLATED = 1 << 30  # a deflated dataset inflating to more than this is refused (a zip bomb)
_DIRECTORY_RECORDS = -1  # "end" marker: the walk met DirectoryRecordSequence (a DICOMDIR)
_META_TAGS = {0x00020002: "media_class", 0x00020003: "media_instance", 0x00020010: "transfer_syntax"}
_STOP_TAGS = _PIXEL_TAGS | {0x00041220}
_INT32 = 1 << 31
_UID_COLUMNS = ("sop_instance_uid", "series_instance_uid", "study_instance_uid", "sop_class_uid", "transfer_syntax_uid")


def _not_meta(tag, vr, length) -> bool:
    return tag >> 16 != 2


def _at_pixels(tag, vr, length) -> bool:
    return tag in _PIXEL_TAGS


def _meta_text(value: bytes | None) -> str | None:
    if not value:
        return None
    return _text(value.decode("ascii", "replace").strip("\x00 "))


def _scan_part10(fh, block: bytes, size: int) -> _Scan | None:
    """Walk a Part-10 file from byte 132 keeping the raw values of :data:`HEADER_TAGS`.

    ``block`` (the first :data:`_BLOCK` bytes) is walked from memory (pydicom's generator makes one
    small read per element, which costs far more on a file object); when the walk reaches the end
    of the block before the pixel data, the block is grown and walked again, up to
    :data:`_MAX_BLOCK`; past that the file object itself is walked. A deflated dataset is inflated
    (:func:`_inflate`) and walked in memory as explicit VR little endian.

    Returns the :class:`_Scan`, or None when the file needs pydicom's full reader.
    """
    while True:
        available = min(len(block), size)
        scanned = _walk(BytesIO(block), size, available)
        if scanned is _BLOCK_TOO_SHORT:
            if len(block) >= _MAX_BLOCK:  # huge non-pixel elements: walk the file, seeking past their values
                return _walk(fh, size, size)
            fh.seek(len(block))
            more = fh.read(7 * len(block))
            if not more:  # the file shrank while being read: pydicom decides
                return None
            block += more
            continue
        if isinstance(scanned, int):  # deflated: the dataset starts at this offset
            data = _inflate(fh, scanned)
            inflated = _walk(BytesIO(data), len(data), len(data), inflated=True)
            if inflated is not None and inflated is not _BLOCK_TOO_SHORT:
                inflated.data = data
                return inflated
            return None
        return scanned


_BLOCK_TOO_SHORT = object()


@dataclass(frozen=True)
class _Uids:
    dicomdir: str
    implicit_le: str
    explicit_le: str
    explicit_be: str
    deflated: str


@functools.cache
def _uids() -> _Uids:
    """The UIDs the reader compares with, from ``pydicom.uid`` as plain strings, imported on first
    use (importing this module must not import pydicom: ``modan-pacs index --help`` stays light)."""
    from pydicom import uid

    return _Uids(
        dicomdir=str(uid.MediaStorageDirectoryStorage),
        implicit_le=str(uid.ImplicitVRLittleEndian),
        explicit_le=str(uid.ExplicitVRLittleEndian),
        explicit_be=str(uid.ExplicitVRBigEndian),
        deflated=str(uid.DeflatedExplicitVRLittleEndian),
    )


def _walk_meta(src, available: int, partial: bool):
    """The file meta (group 0002) from byte 132 as ``{media_class, media_instance, transfer_syntax}``,
    or :data:`_BLOCK_TOO_SHORT` / None as :func:`_walk` returns them."""
    from pydicom.filereader import data_element_generator

    meta: dict[str, str | None] = {}
    for raw in data_element_generator(src, False, True, stop_when=_not_meta):
        vr = raw.VR
        if raw.value_tell + raw.length > available:
            return _BLOCK_TOO_SHORT if partial else None  # cut inside the meta: pydicom decides
        if vr is None or len(vr) != 2 or not vr.isupper():
            return None  # implicit VR file meta: pydicom re-reads it
        key = _META_TAGS.get(raw.tag)
        if key is not None:
            meta[key] = _meta_text(raw.value)
    return meta


def _walk_dataset(src, implicit: bool, available: int, partial: bool):
    """The wanted raw elements of the dataset up to the first of :data:`_STOP_TAGS`:
    ``(elems, end offset, stop tags met)``, or :data:`_BLOCK_TOO_SHORT`."""
    from pydicom.filereader import data_element_generator

    stopped: list[int] = []

    def stop_when(tag, vr, length) -> bool:
        if tag in _STOP_TAGS:
            stopped.append(tag)
            return True
        return False

    elems = {}
    for raw in data_element_generator(src, implicit, True, stop_when=stop_when, specific_tags=_tables()[2]):
        length = raw.length
        if partial and length != 0xFFFFFFFF and raw.value_tell + length > available:
            return _BLOCK_TOO_SHORT
        elems[int(raw.tag)] = raw
    return elems, src.tell(), stopped


def _walk(src, size: int, available: int, *, inflated: bool = False):
    """:func:`_scan_part10` on ``src`` holding the first ``available`` bytes of a ``size``-byte file.

    Returns a :class:`_Scan`, None (pydicom's full reader must decide), :data:`_BLOCK_TOO_SHORT`
    (walk a longer block), or, for a deflated file not yet ``inflated``, the offset of its dataset.
    """
    uids = _uids()
    partial = available < size
    src.seek(132)
    try:
        meta = _walk_meta(src, available, partial)
        if not isinstance(meta, dict):
            return meta
        syntax = meta.get("transfer_syntax")
        if syntax == uids.deflated and not inflated:
            return src.tell()
        if syntax is None or syntax == uids.explicit_be or syntax in _private_syntaxes():
            return None
        implicit = syntax == uids.implicit_le
        start = src.tell()
        if src.read(2) == b"\x00\x00":  # a command set (group 0000) before the dataset
            return None
        src.seek(start)
        walked = _walk_dataset(src, implicit, available, partial)
        if walked is _BLOCK_TOO_SHORT:
            return walked
        elems, end, stopped = walked
    except Exception:
        if partial:
            return _BLOCK_TOO_SHORT
        raise
    if not stopped:
        if partial:
            return _BLOCK_TOO_SHORT
    elif stopped[0] == 0x00041220:
        end = _DIRECTORY_RECORDS
    return _Scan(meta, elems, implicit, True, end, size)


def _inflate(fh, start: int) -> bytes:
    """The file's first ``start`` bytes (preamble and file meta) followed by its inflated dataset
    (Deflated Explicit VR Little Endian, PS3.5 A.5: raw deflate of everything after the file meta)."""
    import zlib

    fh.seek(0)
    head = fh.read(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(fh.read(), _MAX_INFLATED)
    except zlib.error as exc:
        raise _Reject(
            "truncated" if "incomplete" in str(exc) else "corrupt_header", f"deflated dataset cannot be inflated: {exc}"
        ) from None
    if inflater.unconsumed_tail:
        raise _Reject("corrupt_header", f"deflated dataset inflates to more than {_MAX_INFLATED >> 20} MiB")
    if not inflater.eof:
        raise _Reject("truncated", "deflated dataset ends before its end-of-stream marker")
    return head + body


def _private_syntaxes() -> list:
    from pydicom.uid import PrivateTransferSyntaxes

    return PrivateTransferSyntaxes


def _read_with_dcmread(fh, size: int, force: bool) -> _Scan:
    """pydicom's full reader (``specific_tags``, ``stop_before_pixels``) for the unusual files.

    Raises :class:`_Reject` when pydicom refuses the file.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(fh, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=force)
        end = fh.tell()
        file_meta = getattr(ds, "file_meta", None)
        meta: dict[str, str | None] = {}
        if file_meta is not None:
            meta["media_class"] = _text(file_meta.get("MediaStorageSOPClassUID"))
            meta["media_instance"] = _text(file_meta.get("MediaStorageSOPInstanceUID"))
            meta["transfer_syntax"] = _text(file_meta.get("TransferSyntaxUID"))
        if meta.get("transfer_syntax") == _uids().deflated:
            return _read_deflated(fh, meta)
        if "DirectoryRecordSequence" in ds:
            end = _DIRECTORY_RECORDS
        implicit, little = ds.original_encoding
        elems = {int(tag): ds.get_item(tag) for tag in ds.keys()}
    except _Reject:
        raise
    except InvalidDicomError as exc:
        raise _Reject("not_dicom", str(exc)) from None
    except (EOFError, struct.error) as exc:
        raise _Reject("truncated", f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise _Reject("not_dicom", f"pydicom could not parse it: {type(exc).__name__}: {exc}") from None
    return _Scan(meta, elems, implicit, little, end, size)


def _read_deflated(fh, meta: dict[str, str | None]) -> _Scan:
    """A deflated file by pydicom's own readers: its file meta reader finds where the dataset starts,
    :func:`_inflate` inflates it, and ``read_dataset`` reads that up to the pixel data.

    ``_read_file_meta_info`` is private in pydicom (``dcmread`` itself calls it; checked with pydicom
    3.0.x): ``dcmread`` inflates into a buffer it does not expose, so the offset of the pixel data in
    the inflated stream cannot be had from it.
    """
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    fh.seek(0)
    read_preamble(fh, True)
    _read_file_meta_info(fh)
    start = fh.tell()
    data = _inflate(fh, start)
    buffer = BytesIO(data)
    buffer.seek(start)
    ds = read_dataset(buffer, False, True, stop_when=_at_pixels, specific_tags=_tables()[2])
    end = buffer.tell()
    elems = {int(tag): ds.get_item(tag) for tag in ds.keys()}
    return _Scan(meta, elems, False, True, end, len(data), data)


def _fill(rec: dict[str, Any], elems: dict, meta: dict, implicit: bool, little: bool, salt: bytes) -> None:
    """Decode the wanted raw values into ``rec`` (raw bytes directly; pydicom for anything else)."""
    reader = _Values(elems, implicit, little)
    strings, ints, _, _ = _tables()
    for tag, column in strings.items():
        rec[column] = reader.text(tag)
    for tag, column in ints.items():
        value = reader.integer(tag)
        if value is not None and not -_INT32 <= value < _INT32:
            raise ValueError(f"{column} = {value} is out of range")
        rec[column] = value
    rec["patient_hash"] = patient_hash(reader.text(_tag("PatientID")), salt)
    rec["laterality"] = reader.text(_tag("ImageLaterality")) or reader.text(_tag("Laterality"))
    if _tag("AnatomicRegionSequence") in elems:
        regions = reader.dataset().get("AnatomicRegionSequence")
        if regions:
            item = regions[0]
            value = _text(item.get("CodeValue")) or _text(item.get("LongCodeValue"))
            scheme = _text(item.get("CodingSchemeDesignator"))
            if value:
                rec["anatomic_region_code"] = f"{scheme}:{value}" if scheme else value
            rec["anatomic_region_meaning"] = _text(item.get("CodeMeaning"))
    if rec["sop_class_uid"] is None and meta.get("media_class"):
        rec["sop_class_uid"] = meta["media_class"]
    tsyntax = meta.get("transfer_syntax")
    if tsyntax is None:
        uids = _uids()
        tsyntax = uids.implicit_le if implicit else (uids.explicit_le if little else uids.explicit_be)
    rec["transfer_syntax_uid"] = tsyntax


class _Values:
    """Raw element values -> Python values; pydicom converts what raw decoding cannot (charsets, SQ)."""

    def __init__(self, elems: dict, implicit: bool, little: bool) -> None:
        self.elems, self.implicit, self.little = elems, implicit, little
        self.encoding = _text_encoding(elems.get(0x00080005))
        self._ds = None

    def dataset(self):
        if self._ds is None:
            from pydicom.dataset import Dataset

            ds = Dataset(dict(self.elems))
            ds.set_original_encoding(self.implicit, self.little, None)
            self._ds = ds
        return self._ds

    def text(self, tag: int) -> str | None:
        raw = self.elems.get(tag)
        if raw is None:
            return None
        value = raw.value
        if isinstance(value, (bytes, bytearray)) and self.encoding is not None:
            return _text(value.decode(self.encoding, "replace"))
        return _text(self.dataset()[tag].value)

    def integer(self, tag: int) -> int | None:
        raw = self.elems.get(tag)
        if raw is None:
            return None
        value = raw.value
        if isinstance(value, (bytes, bytearray)):
            if not value:
                return None
            vr = getattr(raw, "VR", None)
            if vr in _US_VRS or (vr is None and len(value) in (2, 4) and tag in _tables()[3]):
                fmt = ("<" if self.little else ">") + ("H" if len(value) == 2 else "I")
                return struct.unpack(fmt, value[: struct.calcsize(fmt)])[0]
            text = value.decode("ascii", "replace").strip("\x00 ").strip()
            return int(float(text)) if text else None
        converted = self.dataset()[tag].value
        return int(converted) if converted not in (None, "") else None


_TAG_OF: dict[str, int] = {}
_US_VRS = {"US", "SS", "UL", "SL"}


def _tag(keyword: str) -> int:
    tag = _TAG_OF.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword

        tag = _TAG_OF[keyword] = tag_for_keyword(keyword)
    return tag


def _text_encoding(raw) -> str | None:
    """Python codec for raw text values, or None when pydicom must decode (multi-byte charsets)."""
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


@functools.cache
def _tables() -> tuple[dict[int, str], dict[int, str], list[int], frozenset[int]]:
    """Tag-keyed versions of the field tables (pydicom's dictionary is imported on first use)."""
    strings = {_tag(k): v for k, v in _STRING_FIELDS.items()}
    ints = {_tag(k): v for k, v in _INT_FIELDS.items()}
    wanted = sorted(_tag(k) for k in HEADER_TAGS)
    binary = frozenset(_tag(k) for k in ("Rows", "Columns", "BitsStored"))
    return strings, ints, wanted, binary


def _sop_class_name(uid: str | None) -> str:
    if not uid:
        return "unknown SOP class"
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else f"SOP class {uid}"


def quiet_worker() -> None:
    """Worker-process initializer: pydicom's warnings about odd files are not the user's business
    (every problem a file has ends up as an error reason)."""
    import warnings

    warnings.simplefilter("ignore")


def _raise_timeout(signum, frame) -> None:
    raise ReadTimeout


def read_rows(
    paths: list[str], salt: bytes, *, file_timeout: float | None = None, progress=None, slot: int = 0
) -> list[tuple]:
    """:func:`read_header` of each path as a tuple in :data:`PART_SCHEMA` column order (what a worker
    process sends back: tuples pickle smaller than dicts).

    Args:
        file_timeout: seconds one file may take; past that it becomes a ``timeout`` error row. The
            alarm (``SIGALRM``) interrupts Python code and blocking reads; it is armed only in the
            main thread of a process on a platform that has it.
        progress, slot: a shared ``array('d')`` where, before each file, ``progress[2 * slot]`` is set
            to its position in ``paths`` and ``progress[2 * slot + 1]`` to ``time.monotonic()``; -1
            when the list is done. The parent process reads it to name the file a dead or stuck
            worker held (:mod:`modan_pacs.ingest.workers`).
    """
    import signal
    import threading
    import time
    import warnings

    names = _PART_NAMES
    alarm = (
        file_timeout is not None
        and file_timeout > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = signal.signal(signal.SIGALRM, _raise_timeout) if alarm else None
        try:
            for i, path in enumerate(paths):
                if progress is not None:
                    progress[2 * slot], progress[2 * slot + 1] = i, time.monotonic()
                try:
                    if alarm:
                        signal.setitimer(signal.ITIMER_REAL, file_timeout)
                    try:
                        rec = read_header(path, salt)
                    finally:
                        if alarm:
                            signal.setitimer(signal.ITIMER_REAL, 0)
                except ReadTimeout:
                    rec = error_record(path, "timeout", f"reading the header took more than {file_timeout:g} s")
                rows.append(tuple(rec[c] for c in names))
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
    if progress is not None:  # (left pointing at the file if anything above raised)
        progress[2 * slot] = -1
    return rows


def error_record(path: str, reason: str, detail: str) -> dict[str, Any]:
    """The record of a file that could not be indexed (``reason`` from the module doc, or one of
    ``timeout`` and ``worker_crashed`` that the reading machinery adds)."""
    return _error(empty_record(path), reason, detail)


def error_row(path: str, reason: str, detail: str) -> tuple:
    """:func:`error_record` as a :func:`read_rows` tuple."""
    rec = error_record(path, reason, detail)
    return tuple(rec[c] for c in _PART_NAMES)


def rows_table(rows: list[tuple]) -> pa.Table:
    """Rows from :func:`read_rows` as an Arrow table of :data:`PART_SCHEMA`.

    A row whose values Arrow cannot store (a value a reader let through) becomes that file's
    ``corrupt_header`` error row instead of failing the whole chunk.
    """
    with contextlib.suppress(pa.ArrowException, TypeError, ValueError, OverflowError):
        return _table(rows)
    kept = []  # the fast path failed: find the rows Arrow refuses, one by one
    for row in rows:
        try:
            _table([row])
            kept.append(row)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            path = row[_PART_NAMES.index("path")]
            kept.append(
                error_row(str(path), "corrupt_header", f"a header value cannot be stored: {type(exc).__name__}: {exc}")
            )
    return _table(kept)


def _table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [()] * len(PART_SCHEMA)
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, PART_SCHEMA)], schema=PART_SCHEMA
    )


def raw_frame(records: list[dict[str, Any]]):
    """Raw records (dicts keyed by :data:`RAW_COLUMNS`, as a PACS query builds them) as a DataFrame
    of the raw schema: the columns in :data:`RAW_COLUMNS` order, integer columns as pandas' nullable
    ``Int64``, every other column ``object`` with None where a value is missing."""
    import pandas as pd

    frame = pd.DataFrame(records, columns=list(RAW_COLUMNS))
    for column, kind in RAW_COLUMNS.items():
        if pa.types.is_integer(kind):
            frame[column] = frame[column].astype("Int64")
        else:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def write_part(rows: list[tuple], part_path: str) -> pa.Table:
    """Write rows from :func:`read_rows` as one Parquet part file, atomically (temporary name, rename);
    returns the written table."""
    import pyarrow.parquet as pq

    table = rows_table(rows)
    atomic_write(part_path, lambda tmp: pq.write_table(table, tmp))
    return table
