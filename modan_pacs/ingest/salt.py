"""The secret salt of the PatientID hash, kept in a file OUTSIDE every index.

Resolution order: an explicit path (``--salt-file``), ``$MODAN_PACS_SALT_FILE``, then
``~/.config/modan-pacs/salt``. A missing file is created with 32 random bytes (hex) and mode 0600,
so the same salt keeps patient hashes stable across runs and indexes of one site.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from modan_pacs.errors import InputError

SALT_ENV = "MODAN_PACS_SALT_FILE"


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
        forbidden_dir: an index folder the salt must not live in (the salt would leak with the index).

    Raises:
        InputError: the salt file is inside ``forbidden_dir``, is empty, or cannot be read/created.
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
    return salt
