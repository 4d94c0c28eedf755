"""Where the project's optional external material lives.

``../shared`` beside the checkout holds real images (``data/``) and the paper's reference
predictions (``reference/``). A user's fresh clone has none of it; ``MODAN_PACS_SHARED``
points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """The shared folder if it exists: ``$MODAN_PACS_SHARED``, else ``../shared`` beside the repo."""
    env = os.environ.get("MODAN_PACS_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for path in candidates:
        if path.is_dir():
            return path
    return None


def shared_data_dir() -> Path | None:
    """``shared/data`` (real images with ``metadata.csv``), or None when absent."""
    root = shared_dir()
    if root is not None and (root / "data").is_dir():
        return root / "data"
    return None


def reference_predictions_dir() -> Path | None:
    """``shared/reference/paper_predictions`` (the paper's per-fold CSVs), or None when absent."""
    root = shared_dir()
    if root is not None and (root / "reference" / "paper_predictions").is_dir():
        return root / "reference" / "paper_predictions"
    return None


def config_path(name: str) -> Path:
    """Path of a shipped config file (``configs/NAME`` in the checkout, ``modan_pacs.configs`` when installed).

    Raises:
        FileNotFoundError: no shipped config has that name.
    """
    from importlib.resources import files

    path = Path(str(files("modan_pacs.configs") / name))
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no shipped config named {name!r}; available: {', '.join(available)}")
    return path
