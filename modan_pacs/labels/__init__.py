"""Stage 2: the label vocabulary and the multi-hot modality ⊕ anatomy labels (ModAn-MulSupCon)."""

from modan_pacs.labels.assign import label_frame
from modan_pacs.labels.vocabulary import ANATOMY_SOURCES, Vocabulary

__all__ = ["ANATOMY_SOURCES", "Vocabulary", "label_frame"]
