"""Tiny caches for the trainer's tests, written with numpy/pandas per the cache contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from modan_pacs.labels import Vocabulary


def write_test_cache(
    directory: Path,
    images: np.ndarray,
    modality: list[str | None],
    anatomy: list[str | None],
    extra: dict | None = None,
) -> Path:
    """``images.npy`` (N, S, S) uint8, ``labels.npy`` (N, K) float32 multi-hot from the shipped vocabulary."""
    vocab = Vocabulary.load()
    names = vocab.label_names
    labels = np.zeros((len(images), len(names)), dtype=np.float32)
    for i, (m, a) in enumerate(zip(modality, anatomy)):
        if m is not None:
            labels[i, names.index(f"modality:{m}")] = 1
        if a is not None:
            labels[i, names.index(f"anatomy:{a}")] = 1
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
    np.save(directory / "labels.npy", labels)
    manifest = pd.DataFrame(
        {
            "cache_row": np.arange(len(images)),
            "source": [f"generated/{i}" for i in range(len(images))],
            "slice_index": 0,
            "modality_label": modality,
            "anatomy_label": anatomy,
            **(extra or {}),
        }
    )
    manifest.to_parquet(directory / "manifest.parquet", index=False)
    vocab.save(directory / "vocabulary.yaml")
    pd.DataFrame({"path": pd.Series(dtype="string"), "reason": pd.Series(dtype="string")}).to_parquet(
        directory / "errors.parquet"
    )
    return directory


def generated_cache(directory: Path, n: int = 32, size: int = 24, seed: int = 0) -> Path:
    """Images whose texture depends on the modality (stripe orientation) and anatomy (blob place)."""
    rng = np.random.default_rng(seed)
    kinds = [("CT", "brain"), ("CT", "lung"), ("MR", "brain"), ("US", "thyroid")]
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, modality, anatomy = [], [], []
    for i in range(n):
        m, a = kinds[i % len(kinds)]
        stripes = np.sin(2 * np.pi * 4 * (xx if m == "CT" else yy if m == "MR" else xx + yy))
        cx, cy = {"brain": (0.3, 0.3), "lung": (0.7, 0.4), "thyroid": (0.5, 0.75)}[a]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
        img = 0.35 * stripes + blob + 0.15 * rng.standard_normal((size, size))
        images.append(np.clip((img + 1) / 2.5 * 255, 0, 255).astype(np.uint8))
        modality.append(m)
        anatomy.append(a)
    return write_test_cache(directory, np.stack(images), modality, anatomy)
