"""Features of a frozen encoder: the one place they are computed (downstream linear probing, the
report's UMAP figures). Reports receive :class:`CacheEmbeddings`; they never run an encoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def frozen_features(encoder: nn.Module, x: torch.Tensor, device, batch_size: int = 128) -> torch.Tensor:
    """``(N, 512)`` features of ``x`` (``(N, 1, H, W)`` float) by ``encoder`` in eval mode (BatchNorm
    statistics untouched), in chunks of ``batch_size`` on ``device``; returned on the CPU as float32."""
    encoder = encoder.to(device).eval()
    return torch.cat([encoder(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


@dataclass
class CacheEmbeddings:
    """Features of the same cache images by several encoders: ``features[name]`` is ``(N, 512)``,
    row i the image whose ``modality/anatomy`` is ``groups[i]``."""

    features: dict[str, np.ndarray]
    groups: list[str]


def cache_groups(manifest) -> list[str]:
    """``modality/anatomy`` of every cache row (``unknown`` for an empty group)."""
    from modan_pacs.fileio import is_missing

    def clean(value) -> str:
        return "unknown" if is_missing(value) or value == "" else str(value)

    return [f"{clean(m)}/{clean(a)}" for m, a in zip(manifest["modality_label"], manifest["anatomy_label"])]


def embed_cache(
    cache_dir: str | Path,
    encoders: dict[str, str | Path | nn.Module],
    *,
    max_images: int = 2000,
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 64,
) -> CacheEmbeddings:
    """Features of (up to ``max_images``, sampled with ``seed``) images of an image cache by each encoder.

    Args:
        cache_dir: a cache written by ``modan-pacs cache`` (:func:`modan_pacs.pixels.load_cache`).
        encoders: name -> encoder file (``encoder.pt``) or an ``nn.Module`` mapping ``(B,1,H,W)->(B,512)``.
        device: None = CUDA when available.
    """
    from modan_pacs.models import load_encoder
    from modan_pacs.pixels import load_cache

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cache = load_cache(cache_dir)
    rows = np.arange(len(cache))
    if len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_images, replace=False))
    images = torch.from_numpy(np.asarray(cache.images[rows], dtype=np.float32) / 255.0)[:, None]
    features = {}
    for name, encoder in encoders.items():
        model = load_encoder(encoder) if isinstance(encoder, (str, Path)) else encoder
        features[name] = frozen_features(model, images, device, batch_size).numpy()
    return CacheEmbeddings(features=features, groups=cache_groups(cache.manifest.iloc[rows]))
