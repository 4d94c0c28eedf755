"""The local STORE that pulls write into: UID-named folders, atomic writes, and a pull log.

Layout: ``STORE/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A UID is used as a
name only when it is a well-formed DICOM UID (digits and dots, at most 64 characters, no empty
component); anything else (``/``, ``..``, spaces, NUL, a leading dot, ...) becomes
``x_<sanitised>-<sha256 prefix>``, which holds no separator and no dot, so no UID can name a path
outside STORE. Every final path is also checked to lie inside STORE before writing.

Writes go to a hidden temporary file in the target folder and are renamed into place
(``os.replace``), so a crash never leaves a partial ``.dcm``; files an external receiver (dcmtk's
getscu) wrote into a hidden ``.incoming-*`` folder of the store are renamed into place once known
complete. ``STORE/pull_log.jsonl`` records each
arrival or failure (UIDs, relative path, bytes, reason, time); it holds no patient data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modan_pacs.errors import InputError, PacsError

LOG_NAME = "pull_log.jsonl"
INCOMING_PREFIX = ".incoming-"  # folders an external receiver (getscu) writes into
_VALID_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_UNSAFE = re.compile(r"[^0-9A-Za-z]+")


def safe_uid_name(uid: Any) -> str:
    """A file-system-safe name for a UID: the UID itself when well-formed, else a hashed form."""
    text = "" if uid is None else str(uid)
    stripped = text.strip("\x00 ")
    if stripped and len(stripped) <= 64 and _VALID_UID.match(stripped):
        return stripped
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    readable = _UNSAFE.sub("_", text)[:40].strip("_")
    return f"x_{readable}-{digest}" if readable else f"x-{digest}"


class Store:
    """A STORE folder: where instances go, which have arrived, and the pull log.

    Thread-safe: several retrieval threads and the storage SCP's threads write concurrently.
    """

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        self.root = Path(root).resolve()
        self.log_path = self.root / LOG_NAME
        self._lock = threading.Lock()
        self._arrived: dict[str, str] = {}
        self._folders: set[Path] = set()
        self._log_fd: int | None = None
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"--out {root}: cannot create the store folder ({exc.strerror})") from None
        self._read_log()
        if create:
            self._remove_stale_temporaries()

    @classmethod
    def existing(cls, root: str | Path) -> Store:
        """A read-only view of a store (possibly not there yet): what has arrived. Creates nothing."""
        return cls(root, create=False)

    def _read_log(self) -> None:
        if not self.log_path.is_file():
            return
        for number, line in enumerate(self.log_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-append; the file check below still holds
            if record.get("status") == "arrived" and (self.root / record.get("path", "")).is_file():
                self._arrived[record["sop_instance_uid"]] = record["path"]

    def _remove_stale_temporaries(self) -> None:
        for tmp in self.root.glob("*/*/.*.part"):
            tmp.unlink(missing_ok=True)
        for folder in self.root.glob(f"{INCOMING_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)

    def path_for(self, study_uid: Any, series_uid: Any, sop_uid: Any) -> Path:
        """Final path of one instance; raises if it would not lie inside STORE.

        :func:`safe_uid_name` never yields a separator, ``.`` or ``..``, so the three names cannot
        leave STORE; the check below restates that without a ``resolve()`` (several ``lstat``
        calls per file on the hot path).
        """
        names = (safe_uid_name(study_uid), safe_uid_name(series_uid), f"{safe_uid_name(sop_uid)}.dcm")
        if any(os.sep in n or (os.altsep and os.altsep in n) or n in ("", ".", "..") for n in names):
            raise PacsError(f"refusing to write {names}: not a plain name inside the store {self.root}")
        return self.root.joinpath(*names)

    def has(self, sop_uid: str) -> bool:
        """Whether this instance already arrived (in the log and on disk)."""
        with self._lock:
            return sop_uid in self._arrived

    def arrived_paths(self) -> dict[str, Path]:
        """SOP Instance UID -> file, for every instance that arrived (in the log and on disk)."""
        with self._lock:
            return {uid: self.root / relative for uid, relative in self._arrived.items()}

    @property
    def arrived(self) -> set[str]:
        with self._lock:
            return set(self._arrived)

    def write(self, study_uid: Any, series_uid: Any, sop_uid: Any, data: bytes | Sequence[bytes]) -> tuple[Path, bool]:
        """Write one encoded DICOM file atomically; returns ``(path, new)`` (``new`` False if it was already there).

        ``data`` is the file's bytes, or its parts in order (written without joining them).
        """
        path, key, there = self._target(study_uid, series_uid, sop_uid)
        if there:
            return path, False
        folder = path.parent
        parts = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else tuple(data)
        tmp = folder / f".{path.stem}.{os.getpid()}.{threading.get_ident()}.part"
        with open(tmp, "wb") as handle:
            handle.writelines(parts)
        os.replace(tmp, path)
        self._arrival(study_uid, series_uid, key, path, sum(len(p) for p in parts))
        return path, True

    def move_in(self, study_uid: Any, series_uid: Any, sop_uid: Any, source: Path) -> tuple[Path, bool]:
        """Rename a complete file received elsewhere in the store (:meth:`incoming_folder`) into place.

        Returns ``(path, new)``; when the instance was already there, ``source`` is removed.
        """
        path, key, there = self._target(study_uid, series_uid, sop_uid)
        if there:
            source.unlink(missing_ok=True)
            return path, False
        size = source.stat().st_size
        os.replace(source, path)
        self._arrival(study_uid, series_uid, key, path, size)
        return path, True

    def incoming_folder(self) -> Path:
        """A new hidden folder inside the store for an external receiver (getscu) to write into.

        Inside the store, so :meth:`move_in` is a rename on one file system; left-overs of a run
        that was killed are removed when the store is next opened.
        """
        return Path(tempfile.mkdtemp(prefix=INCOMING_PREFIX, dir=self.root))

    def _target(self, study_uid: Any, series_uid: Any, sop_uid: Any) -> tuple[Path, str, bool]:
        """``(final path, SOP UID key, already there)``; when not there, its folder exists afterwards."""
        path = self.path_for(study_uid, series_uid, sop_uid)
        key = str(sop_uid)
        with self._lock:
            if key in self._arrived and path.is_file():
                return path, key, True
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        return path, key, False

    def _arrival(self, study_uid: Any, series_uid: Any, key: str, path: Path, size: int) -> None:
        self.record(
            status="arrived",
            sop_instance_uid=key,
            series_instance_uid=str(series_uid),
            study_instance_uid=str(study_uid),
            path=str(path.relative_to(self.root)),
            bytes=size,
        )

    def record(self, *, status: str, sop_instance_uid: str | None, **fields: Any) -> None:
        """Append one record (``arrived`` or ``failed``) to the pull log."""
        entry = {"status": status, "sop_instance_uid": sop_instance_uid, **fields, "time": time.time()}
        line = (json.dumps(entry, default=str) + "\n").encode()
        with self._lock:
            if self._log_fd is None:
                self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._log_fd, line)  # one write of one whole line, appended
            if status == "arrived" and sop_instance_uid is not None:
                self._arrived[sop_instance_uid] = fields["path"]

    def close(self) -> None:
        """Close the pull log (the store can still be read; a later record reopens it)."""
        with self._lock:
            if self._log_fd is not None:
                os.close(self._log_fd)
                self._log_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_log_fd", None) is not None:
            os.close(self._log_fd)

    def read_log(self):
        """The pull log as a DataFrame (one row per record)."""
        import pandas as pd

        if not self.log_path.is_file():
            return pd.DataFrame(columns=["status", "sop_instance_uid", "path", "bytes", "reason", "time"])
        return pd.read_json(self.log_path, lines=True, dtype=False)
