"""A seeded corpus of broken DICOM files made from the real files pydicom and pydicom-data install.

:func:`write_fuzz_corpus` writes ``n`` mutants (round-robin over the kinds in :data:`KINDS` and the
source files, so every kind is present) plus a FIFO and a symbolic link loop, and returns the
identifying values of the source files (PatientName, PatientID, ...) so a test can check that
none of them reaches any output byte. Used by ``tests/ingest/test_ingest_fuzz.py`` and
``benchmarks/fuzz_bench.py``::

    .venv/bin/python tests/ingest/fuzz_corpus.py OUT_DIR [--n 1000] [--seed 0]
"""

from __future__ import annotations

import io
import os
import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

_MAX_SOURCE_BYTES = 200_000  # small sources keep the corpus a few tens of MB
_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
)
_SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.3.4.5.6.7",
    "",
]
_CHARSETS = ["ISO_IR 999", "ISO 2022 IR 87", "ISO_IR 192", "GB18030", "\\\\", "ISO 2022 IR 149\\ISO_IR 13", "\x00\x00"]


def source_files() -> list[Path]:
    """Real Part-10 files pydicom can read, from pydicom's and pydicom-data's test data (sorted)."""
    import data_store
    from pydicom.data import get_testdata_file

    roots = [Path(get_testdata_file("CT_small.dcm")).parent, Path(data_store.__file__).parent / "data"]
    out = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.stat().st_size > _MAX_SOURCE_BYTES:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            meta = getattr(ds, "file_meta", None)
            if meta is None or not meta.get("TransferSyntaxUID"):
                continue
            if "SOPInstanceUID" in ds or meta.get("MediaStorageSOPClassUID") == "1.2.840.10008.1.3.10":  # DICOMDIRs too
                out.append(path)
    return out


def identifying_values(paths: list[Path]) -> set[str]:
    """Identifying values of the sources, at least 6 characters long (shorter ones, like '1CT1',
    would turn up by chance in pixel bytes); each PatientName also by its components."""
    values: set[str] = set()
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
        for keyword in _IDENTIFYING:
            try:
                value = ds.get(keyword)
            except Exception:
                continue
            for item in value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]:
                text = str(item or "").strip()
                values |= {text, *text.split("^")}
    # pydicom's DICOMDIR test tree is laid out by PatientID (dicomdirtests/77654033/...): folder names
    # are a user's own layout, stored as paths (the index's `path`, a DICOMDIR's missing references),
    # so values that are folder names of the sources are not looked for.
    folders = {part for path in paths for part in path.parent.parts}
    return {v.strip() for v in values if len(v.strip()) >= 6 and v.strip() not in folders}


# ----------------------------------------------------------------------------------------------
# Mutations. Each takes (rng, raw bytes of the source, its path) and returns the mutant's bytes.


def _element_offsets(data: bytes) -> list[tuple[int, int, str | None, int]]:
    """(element start, value start, VR, length) of the top-level elements, file meta included."""
    out = []
    fp = io.BytesIO(data)
    fp.seek(132)
    try:
        for raw in pydicom.filereader.data_element_generator(fp, False, True, stop_when=lambda t, v, l: t >> 16 != 2):
            out.append((raw.value_tell - (12 if raw.VR in _LONG_VRS else 8), raw.value_tell, raw.VR, raw.length))
        meta_end = fp.tell()
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        implicit = ds.original_encoding[0]
        fp.seek(meta_end)
        if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.1.99":
            for raw in pydicom.filereader.data_element_generator(fp, implicit, True):
                head = 8 if implicit or raw.VR not in _LONG_VRS else 12
                out.append((raw.value_tell - head, raw.value_tell, None if implicit else raw.VR, raw.length))
                if raw.tag == 0x7FE00010:
                    break
    except Exception:
        pass
    return out


_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _byte_flips(rng: random.Random, data: bytes, path: Path) -> bytes:
    out = bytearray(data)
    region = min(len(out), rng.choice([512, 2048, 8192, len(out)]))
    for _ in range(rng.randint(1, 40)):
        out[rng.randrange(region)] ^= 1 << rng.randrange(8)
    return bytes(out)


def _huge_length(rng: random.Random, data: bytes, path: Path) -> bytes:
    elements = _element_offsets(data)
    if not elements:
        return _byte_flips(rng, data, path)
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        start, value, vr, _length = rng.choice(elements)
        if value - start == 12 or vr is None:  # 4-byte length
            out[value - 4 : value] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, len(data) * 3]))
        else:
            out[value - 2 : value] = struct.pack("<H", rng.choice([0xFFFF, 0xFFFE, 0x8001]))
    return bytes(out)


def _truncation(rng: random.Random, data: bytes, path: Path) -> bytes:
    return data[: rng.randrange(1, max(2, len(data)))]


def _rewrite(data: bytes, edit: Callable[[Dataset], None]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        edit(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _wrong_syntax(rng: random.Random, data: bytes, path: Path) -> bytes:
    """The file meta rewritten to claim another transfer syntax; the dataset bytes unchanged."""
    fp = io.BytesIO(data)
    fp.seek(132)
    try:
        meta = pydicom.filereader._read_file_meta_info(fp)
    except Exception:
        return _byte_flips(rng, data, path)
    rest = data[fp.tell() :]
    meta.TransferSyntaxUID = UID(rng.choice([s for s in _SYNTAXES if s != meta.get("TransferSyntaxUID")]))
    buffer = io.BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=False)
    return data[:132] + buffer.getvalue() + rest


def _nested_sequences(rng: random.Random, data: bytes, path: Path) -> bytes:
    """Deeply nested undefined-length sequences spliced in right after the file meta."""
    depth = rng.choice([20, 200, 3000])
    opening = (
        struct.pack("<HH", 0x0008, 0x1115)
        + b"SQ\x00\x00"
        + b"\xff\xff\xff\xff"
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    if rng.random() < 0.3:
        closing = b""  # never closed
    elements = _element_offsets(data)
    meta_end = next((start for start, _, _, _ in elements if data[start : start + 2] != b"\x02\x00"), 132)
    return data[:meta_end] + opening * depth + closing * depth + data[meta_end:]


def _bad_charset(rng: random.Random, data: bytes, path: Path) -> bytes:
    marker = "Q" * 24

    def edit(ds: Dataset) -> None:
        ds.SpecificCharacterSet = rng.choice(_CHARSETS)
        ds.SeriesDescription = marker
        ds.StudyDescription = marker.lower()

    try:
        out = _rewrite(data, edit)
    except Exception:
        return _byte_flips(rng, data, path)
    junk = bytes(rng.choice([0x1B, 0x24, 0x42, 0x80, 0xC3, 0xFF, 0xED, 0xA0, 0x00]) for _ in range(24))
    return out.replace(marker.encode(), junk).replace(marker.lower().encode(), junk[::-1])


def _long_strings(rng: random.Random, data: bytes, path: Path) -> bytes:
    size = rng.randrange(10_000, 64_000) & ~1

    def edit(ds: Dataset) -> None:
        text = "".join(rng.choice("ABCxyz 0123^\\-_") for _ in range(size))
        setattr(
            ds,
            rng.choice(
                [
                    "SeriesDescription",
                    "StudyDescription",
                    "ProtocolName",
                    "BodyPartExamined",
                    "Modality",
                    "Manufacturer",
                ]
            ),
            text,
        )

    try:
        return _rewrite(data, edit)
    except Exception:
        return _byte_flips(rng, data, path)


def _nuls(rng: random.Random, data: bytes, path: Path) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return b"\x00" * rng.randrange(1, 4096)
    if choice == 1:  # a NUL-filled stretch over part of the header
        start = rng.randrange(128, max(129, min(len(data), 4096)))
        return data[:start] + b"\x00" * rng.randrange(1, 512) + data[start + 256 :]

    def edit(ds: Dataset) -> None:
        ds.SeriesDescription = "AX\x00\x00 T1\x00"
        ds.BodyPartExamined = "\x00CHEST\x00"
        ds.SOPInstanceUID = ds.SOPInstanceUID + "\x00" if choice == 2 else "\x00" * 8

    try:
        return _rewrite(data, edit)
    except Exception:
        return _byte_flips(rng, data, path)


def _meta_vr(rng: random.Random, data: bytes, path: Path) -> bytes:
    """A file-meta element's VR replaced by one pydicom does not know (the UA case)."""
    out = bytearray(data)
    for start, value, vr, _ in _element_offsets(data):
        if data[start : start + 2] == b"\x02\x00" and vr and rng.random() < 0.5:
            out[start + 4 : start + 6] = rng.choice([b"UA", b"ZZ", b"\x00\x01", b"ox"])
    return bytes(out)


KINDS: dict[str, Callable[[random.Random, bytes, Path], bytes]] = {
    "flip": _byte_flips,
    "length": _huge_length,
    "cut": _truncation,
    "syntax": _wrong_syntax,
    "nested": _nested_sequences,
    "charset": _bad_charset,
    "long": _long_strings,
    "nul": _nuls,
    "metavr": _meta_vr,
}


def write_fuzz_corpus(out: Path, n: int = 1000, seed: int = 0) -> dict:
    """Write ``n`` mutants into ``out`` (nested folders, names without patient data), a FIFO and a
    symbolic link loop. Returns ``{"files": [...], "sources": [...], "identifying": {...}}``."""
    with warnings.catch_warnings():  # pydicom warns about the sources' oddities while mutating them
        warnings.simplefilter("ignore")
        return _write(Path(out), n, seed)


def _write(out: Path, n: int, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sources = source_files()
    blobs = {p: p.read_bytes() for p in sources}
    kinds = list(KINDS)
    files = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        src = sources[(i // len(kinds) * 7 + i) % len(sources)]
        try:
            data = KINDS[kind](rng, blobs[src], src)
        except Exception:  # a mutation that could not apply to this source: flip bytes instead
            data = _byte_flips(rng, blobs[src], src)
        target = out / kind / f"{i // 100:02d}" / (f"m{i:05d}.dcm" if i % 3 else f"m{i:05d}")
        if src.name.startswith("DICOMDIR"):  # the index parses a DICOMDIR in full in its main process
            target = target.with_suffix("") / "DICOMDIR"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files.append(target)
    os.mkfifo(out / "fifo.dcm")
    (out / "loop_a").symlink_to(out / "loop_b")
    (out / "loop_b").symlink_to(out / "loop_a")
    return {"files": files, "sources": sources, "identifying": identifying_values(sources)}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = write_fuzz_corpus(args.out, args.n, args.seed)
    print(f"{len(result['files'])} mutants of {len(result['sources'])} real files in {args.out}")
