"""Walk an export folder: every regular file (any name, with or without ``.dcm``), nested,
plus the files that DICOMDIRs reference but that are missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# modan-pacs' own bookkeeping that lives inside a folder users index: the resume log `modan-pacs
# pull` keeps at the root of its STORE (modan_pacs.pacs.store.LOG_NAME). Skipped only at the root
# of the walk and only when it is a JSON-lines file, so a user's file of that name elsewhere is not.
OWN_LOG = "pull_log.jsonl"


def _is_own_log(entry: os.DirEntry) -> bool:
    try:
        with open(entry.path, "rb") as fh:
            return fh.read(1) in (b"{", b"")
    except OSError:
        return False


def iter_files(root: Path, *, exclude: tuple[Path, ...] = ()) -> Iterator[tuple[str, int, float] | tuple[str, None, str]]:
    """Yield ``(path, size, mtime)`` for each regular file under ``root`` (sorted, depth first).

    Directories that cannot be listed yield ``(path, None, reason_detail)`` so the caller can
    record them as errors. Symlinked directories are not followed (no loops); ``exclude`` folders
    (the index being written) and a ``pull`` STORE's own resume log (:data:`OWN_LOG` at the root)
    are skipped.
    """
    root = Path(root)
    excluded = {str(p.absolute()) for p in exclude}
    if root.is_file():
        st = root.stat()
        yield str(root.absolute()), st.st_size, st.st_mtime
        return
    top = str(root.absolute())
    stack = [top]
    while stack:
        folder = stack.pop()
        if folder in excluded:
            continue
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            yield folder, None, "permission denied listing folder"
            continue
        except OSError as exc:
            yield folder, None, f"cannot list folder: {exc.strerror or exc}"
            continue
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                elif entry.is_file():
                    if entry.name == OWN_LOG and folder == top and _is_own_log(entry):
                        continue
                    st = entry.stat()
                    yield entry.path, st.st_size, st.st_mtime
            except OSError:
                continue  # vanished while walking
        stack.extend(reversed(subdirs))


def dicomdir_missing_files(dicomdir: Path) -> list[str]:
    """Files a DICOMDIR references (ReferencedFileID) that do not exist; [] if it cannot be parsed."""
    from pydicom import dcmread

    try:
        ds = dcmread(dicomdir, force=True)
        records = ds.DirectoryRecordSequence
    except Exception:
        return []
    base = dicomdir.parent
    missing = []
    for record in records:
        ref = record.get("ReferencedFileID")
        if not ref:
            continue
        parts = [ref] if isinstance(ref, str) else list(ref)
        target = base.joinpath(*parts)
        if not target.exists():
            # Media file IDs are upper case; a case-insensitive filesystem copy may differ.
            alt = base.joinpath(*[p.lower() for p in parts])
            if not alt.exists():
                missing.append(str(target))
    return missing
