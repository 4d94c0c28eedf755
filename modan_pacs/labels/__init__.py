"""Stage 2: the label vocabulary and the multi-hot modality ⊕ anatomy labels (ModAn-MulSupCon).

The names are imported on first use (PEP 562): ``Vocabulary`` does not need pandas, so
``modan-pacs index`` can load and check the vocabulary before its header-reading workers start and
import pandas (for :func:`label_frame`) while they read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {"ANATOMY_SOURCES": "vocabulary", "Vocabulary": "vocabulary", "label_frame": "assign"}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from modan_pacs.labels.assign import label_frame
    from modan_pacs.labels.vocabulary import ANATOMY_SOURCES, Vocabulary


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'modan_pacs.labels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"modan_pacs.labels.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
