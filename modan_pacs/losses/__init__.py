"""Pretraining losses: MulSupCon (Eq. 3), SupCon (Eq. 2), NT-Xent / SimCLR (Eq. 1), cross-entropy.

The contrastive losses take ``features (N, V, D)`` (``V`` views of ``N`` images) and share one
computation (:func:`weighted_contrastive_loss`) fed different positive masks and weights.
"""

from .contrastive import weighted_contrastive_loss
from .cross_entropy import IGNORE_INDEX, CrossEntropyLoss, group_targets
from .multilabel_supcon import MultiLabelSupConLoss, jaccard_similarity, multilabel_supcon_loss
from .registry import CONTRASTIVE, LOSSES, build_loss
from .supcon import NTXentLoss, SupConLoss, nt_xent_loss, same_label_mask, supcon_loss

__all__ = [
    "CONTRASTIVE",
    "IGNORE_INDEX",
    "LOSSES",
    "CrossEntropyLoss",
    "MultiLabelSupConLoss",
    "NTXentLoss",
    "SupConLoss",
    "build_loss",
    "group_targets",
    "jaccard_similarity",
    "multilabel_supcon_loss",
    "nt_xent_loss",
    "same_label_mask",
    "supcon_loss",
    "weighted_contrastive_loss",
]
