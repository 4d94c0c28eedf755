"""Stage 5: MONAI transforms (the paper's two-view augmentation, downstream resize), datasets over
cache records, the pretraining DataLoader, and other image sources (miniRIN, generic CSV/folder).

Importing this package imports torch and MONAI.
"""

from modan_pacs.data.batch_augment import BatchTwoViewAugment, ViewParams, apply_view_params, draw_view_params
from modan_pacs.data.datasets import CacheRecordDataset, PretrainLoader, build_pretrain_loader, sample_seed
from modan_pacs.data.transforms import (
    LoadGrayImage,
    LoadGrayImaged,
    RandIntensityJitter,
    RandIntensityJitterd,
    RandHorizontalFlip,
    RandHorizontalFlipd,
    RandResizedCrop,
    RandResizedCropd,
    ResizeImage,
    ResizeImaged,
    QuantizeUint8d,
    TwoViewd,
    downstream_transform,
    two_view_transform,
    views_to_float,
)

__all__ = [
    "BatchTwoViewAugment",
    "CacheRecordDataset",
    "LoadGrayImage",
    "LoadGrayImaged",
    "PretrainLoader",
    "RandIntensityJitter",
    "RandIntensityJitterd",
    "RandHorizontalFlip",
    "RandHorizontalFlipd",
    "RandResizedCrop",
    "RandResizedCropd",
    "ResizeImage",
    "ResizeImaged",
    "QuantizeUint8d",
    "TwoViewd",
    "ViewParams",
    "apply_view_params",
    "build_pretrain_loader",
    "downstream_transform",
    "draw_view_params",
    "sample_seed",
    "two_view_transform",
    "views_to_float",
]
