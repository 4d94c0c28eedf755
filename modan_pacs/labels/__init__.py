"""Stage 2: the label vocabulary and the multi-hot modality ⊕ anatomy labels (ModAn-MulSupCon).

The names are imported on first use (PEP 562): ``Vocabulary`` does not need pandas, so
``modan-pacs index`` can load and check the vocabulary before its header-reading workers start and
import pandas (for :func:`label_frame`) while they read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modan_pacs.lazy import lazy_names

_WHERE = {"ANATOMY_SOURCES": "vocabulary", "Vocabulary": "vocabulary", "label_frame": "assign"}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from modan_pacs.labels.assign import label_frame
    from modan_pacs.labels.vocabulary import ANATOMY_SOURCES, Vocabulary


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
