"""Stage 5: MONAI transforms (the paper's two-view augmentation, downstream resize), datasets over
cache records, the pretraining DataLoader, and other image sources (miniRIN, generic CSV/folder).

Importing this package imports torch and MONAI.
"""

from modan_pacs.data.batch_augment import (
    DRAWS_PER_VIEW,
    BatchTwoViewAugment,
    ViewParams,
    ViewUniformsd,
    apply_view_params,
    draw_view_params,
    params_from_uniforms,
    view_uniforms,
)
from modan_pacs.data.datasets import CacheRecordDataset, PretrainLoader, build_pretrain_loader, sample_seed
from modan_pacs.data.transforms import (
    LoadGrayImage,
    LoadGrayImaged,
    QuantizeUint8d,
    RandHorizontalFlip,
    RandHorizontalFlipd,
    RandIntensityJitter,
    RandIntensityJitterd,
    RandResizedCrop,
    RandResizedCropd,
    ResizeImage,
    ResizeImaged,
    TwoViewd,
    downstream_transform,
    two_view_transform,
    views_to_float,
)

__all__ = [
    "DRAWS_PER_VIEW",
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
    "ViewUniformsd",
    "apply_view_params",
    "build_pretrain_loader",
    "downstream_transform",
    "draw_view_params",
    "params_from_uniforms",
    "sample_seed",
    "two_view_transform",
    "view_uniforms",
    "views_to_float",
]
