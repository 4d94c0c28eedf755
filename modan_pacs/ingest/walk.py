"""Walk an export folder: every regular file (any name, with or without ``.dcm``), nested,
plus the files that DICOMDIRs reference but that are missing."""

from __future__ import annotations

import errno
import os
import stat
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


def iter_files(
    root: Path, *, exclude: tuple[Path, ...] = ()
) -> Iterator[tuple[str, int, float] | tuple[str, None, tuple[str, str]]]:
    """Yield ``(path, size, mtime)`` for each regular file under ``root`` (sorted, depth first).

    What cannot be indexed yields ``(path, None, (reason, detail))`` so the caller can record it as
    an error: a folder that cannot be listed (``permission_denied`` / ``unreadable``), a FIFO,
    socket or device (``special_file``, never opened: reading a FIFO would wait for a writer), a
    symbolic link that points nowhere or into a loop (``unreadable``). Symlinked directories are
    not followed (no loops; they are skipped); a symlink to a regular file is read under the link's
    path. ``exclude`` folders (the index being written) and a ``pull`` STORE's own resume log
    (:data:`OWN_LOG` at the root) are skipped.
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
            yield folder, None, ("permission_denied", "permission denied listing folder")
            continue
        except OSError as exc:
            yield folder, None, ("unreadable", f"cannot list folder: {exc.strerror or exc}")
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
                elif (problem := _not_a_file(entry)) is not None:
                    yield entry.path, None, problem
            except OSError:  # a link into a loop (ELOOP from is_file), or an entry that vanished
                if (problem := _not_a_file(entry)) is not None:
                    yield entry.path, None, problem
        stack.extend(reversed(subdirs))


def _not_a_file(entry: os.DirEntry) -> tuple[str, str] | None:
    """``(reason, detail)`` for a directory entry that is neither a folder nor a regular file;
    None for a symbolic link to a folder (not followed, by design) and for an entry that vanished."""
    try:
        return _what_is_it(entry)
    except OSError:
        return None


def _what_is_it(entry: os.DirEntry) -> tuple[str, str] | None:
    if entry.is_symlink():
        try:
            target = os.stat(entry.path)
        except OSError as exc:
            what = "a symbolic link loop" if exc.errno == errno.ELOOP else "a dangling symbolic link"
            return "unreadable", f"{what}: {exc.strerror or exc}"
        if stat.S_ISDIR(target.st_mode):
            return None
        mode = target.st_mode
    else:
        mode = entry.stat(follow_symlinks=False).st_mode
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return "special_file", f"{kind}, not read"


def dicomdir_missing_files(dicomdir: Path) -> list[str]:
    """Files a DICOMDIR references (ReferencedFileID) that do not exist; [] if it cannot be parsed."""
    import warnings

    from pydicom import dcmread

    try:
        with warnings.catch_warnings():  # pydicom's warnings quote raw values of a corrupt DICOMDIR
            warnings.simplefilter("ignore")
            ds = dcmread(dicomdir, force=True)
            records = list(ds.DirectoryRecordSequence)
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
