"""The secret salt of the PatientID hash, kept in a file OUTSIDE every index.

Resolution order: an explicit path (``--salt-file``), ``$MODAN_PACS_SALT_FILE``, then
``~/.config/modan-pacs/salt``. A missing file is created with 32 random bytes (hex) and mode 0600,
so the same salt keeps patient hashes stable across runs and indexes of one site.

One salt per index: an index folder records a fingerprint of its salt in ``salt_fingerprint.txt``
(a SHA-256 of a fixed label and the salt, cut to 16 hex digits: it identifies the salt without
revealing it, and the salt's 32 random bytes cannot be searched from it). A later run into that
folder with another salt would give one patient two hashes in one index, so it is refused with a
line that says which salt file the run used and how to pass the right one (``--salt-file`` or
``$MODAN_PACS_SALT_FILE``). An index written before fingerprints existed gets one on its next run.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from modan_pacs.errors import InputError
from modan_pacs.fileio import atomic_write

SALT_ENV = "MODAN_PACS_SALT_FILE"
FINGERPRINT_FILE = "salt_fingerprint.txt"
_FINGERPRINT_LABEL = b"modan-pacs salt fingerprint v1\0"


def default_salt_path() -> Path:
    """``$MODAN_PACS_SALT_FILE`` if set, else ``~/.config/modan-pacs/salt``."""
    env = os.environ.get(SALT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "modan-pacs" / "salt"


def load_or_create_salt(path: str | Path | None = None, *, forbidden_dir: str | Path | None = None) -> bytes:
    """The salt bytes from ``path`` (see module doc), creating the file (0600) if absent.

    Args:
        path: salt file, or None for :func:`default_salt_path`.
        forbidden_dir: the index folder the salt is for: the salt must not live in it (it would leak
            with the index), and it must match the folder's salt fingerprint (:func:`bind_salt_to_index`).

    Raises:
        InputError: the salt file is inside ``forbidden_dir``, is empty, cannot be read/created, or
            is not the salt the index in ``forbidden_dir`` was built with.
    """
    salt_path = Path(path).expanduser() if path is not None else default_salt_path()
    salt_path = salt_path.absolute()
    if forbidden_dir is not None:
        out = Path(forbidden_dir).expanduser().absolute()
        if salt_path == out or out in salt_path.parents:
            raise InputError(f"salt file {salt_path} is inside the index folder {out}; keep it outside (--salt-file)")
    if not salt_path.exists():
        try:
            salt_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(salt_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # created concurrently by another process: read it below
        except OSError as exc:
            raise InputError(f"cannot create salt file {salt_path}: {exc.strerror or exc}") from None
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    try:
        salt = salt_path.read_bytes().strip()
    except OSError as exc:
        raise InputError(f"cannot read salt file {salt_path}: {exc.strerror or exc}") from None
    if not salt:
        raise InputError(f"salt file {salt_path} is empty; delete it to get a new one (patient hashes will change)")
    if forbidden_dir is not None:
        bind_salt_to_index(forbidden_dir, salt, salt_path)
    return salt


def salt_fingerprint(salt: bytes) -> str:
    """``sha256:`` + 16 hex digits identifying ``salt`` without revealing it (module doc)."""
    return "sha256:" + hashlib.sha256(_FINGERPRINT_LABEL + salt).hexdigest()[:16]


def _holds_index(folder: Path) -> bool:
    """The folder holds patient hashes: a finished index or a run's part files."""
    return (folder / "index.parquet").is_file() or any((folder / ".ingest").glob("part-*.parquet"))


def bind_salt_to_index(index_dir: str | Path, salt: bytes, salt_path: str | Path) -> str:
    """Record ``salt``'s fingerprint in ``index_dir``, or check it against the one recorded there.

    A recorded fingerprint of another salt is replaced only while the folder holds no patient
    hash yet (no ``index.parquet``, no part files), e.g. after a run that found no image.

    Returns:
        The fingerprint.

    Raises:
        InputError: the index in ``index_dir`` was built with another salt (one line: the salt
            file used, the fingerprints, how to pass the right salt file).
    """
    folder = Path(index_dir).expanduser().absolute()
    record = folder / FINGERPRINT_FILE
    fingerprint = salt_fingerprint(salt)
    try:
        recorded = record.read_text(encoding="utf-8").strip() if record.is_file() else None
    except OSError as exc:
        raise InputError(f"cannot read {record}: {exc.strerror or exc}") from None
    if recorded == fingerprint:
        return fingerprint
    if recorded and _holds_index(folder):
        raise InputError(
            f"index {folder} was built with another salt "
            f"(fingerprint {recorded}; the salt file {Path(salt_path)} has {fingerprint}): "
            f"pass the salt file it was built with, --salt-file PATH or ${SALT_ENV}, or index into a new folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(record, lambda tmp: tmp.write_text(fingerprint + "\n", encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot write {record}: {exc.strerror or exc}") from None
    return fingerprint
