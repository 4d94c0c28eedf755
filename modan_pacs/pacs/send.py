"""C-STORE files to a PACS (used to load test servers and benchmarks, and to push a STORE back).

pynetdicom never transcodes, so each dataset needs a presentation context whose transfer syntax is
exactly the file's; we propose one context per (SOP class, transfer syntax) pair found in the files
and split the files over several associations when more than 128 pairs are needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modan_pacs.errors import PacsError
from modan_pacs.pacs.association import PacsSettings, open_association


@dataclass
class SendReport:
    """Outcome of :func:`send_files`: paths stored, and ``(path, reason)`` for the others."""

    stored: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def send_files(settings: PacsSettings, paths: Iterable[str | Path]) -> SendReport:
    """C-STORE each file; unreadable files and non-success statuses are reported, not raised.

    Raises:
        PacsError: the association could not be opened, or it dropped mid-way.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError
    from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

    report = SendReport()
    groups: dict[tuple[str, str], list[tuple[Path, object]]] = {}
    for raw in paths:
        path = Path(raw)
        try:
            ds = dcmread(path)
            key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        except (InvalidDicomError, AttributeError, OSError, ValueError) as exc:
            report.failed.append((path, f"not sendable: {type(exc).__name__}: {exc}"))
            continue
        groups.setdefault(key, []).append((path, ds))

    keys = sorted(groups)
    for start in range(0, len(keys), 128):
        chunk = keys[start : start + 128]
        assoc = open_association(settings, [(sop, [ts]) for sop, ts in chunk], purpose="C-STORE")
        try:
            for key in chunk:
                for path, ds in groups[key]:
                    if not assoc.is_established:
                        raise PacsError(f"C-STORE to {settings.label}: association dropped while sending {path}")
                    status = assoc.send_c_store(ds)
                    code = getattr(status, "Status", None)
                    if code is None:
                        report.failed.append((path, "no response (timeout or abort)"))
                        assoc.abort()
                        assoc = open_association(settings, [(s, [t]) for s, t in chunk], purpose="C-STORE")
                    elif code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING):
                        report.stored.append(path)
                    else:
                        report.failed.append((path, f"status 0x{code:04X}"))
        finally:
            if assoc.is_established:
                assoc.release()
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m modan_pacs.pacs.send --host H --port P --called-aet AET FILE_OR_DIR...``: C-STORE files."""
    import argparse

    from modan_pacs.pacs.association import make_settings

    parser = argparse.ArgumentParser(description="C-STORE DICOM files (or every file under folders) to a PACS.")
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4242)
    parser.add_argument("--called-aet", default="ORTHANC")
    parser.add_argument("--calling-aet", default="MODANPACS")
    parser.add_argument("--retries", type=int, default=2, help="connection retries (exponential backoff from 1 s)")
    args = parser.parse_args(argv)
    files = [p for root in args.paths for p in (sorted(root.rglob("*")) if root.is_dir() else [root]) if p.is_file()]
    settings = make_settings(
        host=args.host,
        port=args.port,
        called_aet=args.called_aet,
        calling_aet=args.calling_aet,
        retries=args.retries,
        backoff=1.0,
        dimse_timeout=10,
    )
    try:
        report = send_files(settings, files)
    except PacsError as exc:
        print(f"error: {exc}")
        return exc.exit_code
    print(f"stored {len(report.stored)} of {len(files)} files on {settings.label}; {len(report.failed)} not sent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
