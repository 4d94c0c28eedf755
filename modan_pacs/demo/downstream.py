"""A generated downstream task for the demo: ultrasound-like lesions, benign vs malignant.

The demo must run on data the project makes itself, so this writes small PNG images of speckled,
ultrasound-like fields with one hypoechoic lesion each. Benign lesions are smooth, wider than tall
ellipses; malignant ones are irregular (spiculated margin), taller than wide and cast a posterior
acoustic shadow — the classic BI-RADS / TI-RADS cues, so an encoder has something real to learn.
Output: ``DIR/images/*.png`` and ``DIR/labels.csv`` (``path,label,patient_id``) for
``modan-pacs benchmark --dataset csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from modan_pacs.fileio import atomic_write


def _lesion_image(rng: np.random.Generator, size: int, malignant: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # tissue background: depth-dependent gain with Rayleigh speckle
    tissue = (0.55 + 0.25 * rng.random()) * (1.0 - 0.35 * yy)
    cy, cx = rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.7)
    radius = rng.uniform(0.10, 0.18)
    if malignant:  # taller than wide, spiculated
        ry, rx = radius * rng.uniform(1.1, 1.5), radius * rng.uniform(0.7, 0.95)
    else:  # wider than tall, smooth
        ry, rx = radius * rng.uniform(0.6, 0.85), radius * rng.uniform(1.1, 1.4)
    angle = np.arctan2(yy - cy, xx - cx)
    margin = 1.0
    if malignant:
        n_spikes = int(rng.integers(6, 12))
        margin = 1.0 + 0.25 * np.abs(np.sin(n_spikes * angle / 2 + rng.uniform(0, np.pi))) ** 3
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / margin
    inside = 1.0 / (1.0 + np.exp(np.minimum((r - 1.0) * (12.0 if malignant else 30.0), 50.0)))
    field = tissue * (1.0 - (0.75 + 0.15 * rng.random()) * inside)
    if malignant:  # posterior acoustic shadowing below the lesion
        below = (yy > cy) & (np.abs(xx - cx) < rx * 0.9)
        field = np.where(below, field * (0.55 + 0.2 * rng.random()), field)
    else:  # posterior acoustic enhancement
        below = (yy > cy + ry) & (np.abs(xx - cx) < rx * 0.8)
        field = np.where(below, np.minimum(field * 1.25, 1.0), field)
    speckle = rng.rayleigh(scale=0.8, size=field.shape).astype(np.float32)
    image = np.clip(field * speckle, 0.0, 1.0)
    return (image * 255).astype(np.uint8)


def generate_lesion_dataset(
    out_dir: str | Path, *, n_images: int = 160, malignant_fraction: float = 0.4, size: int = 64, seed: int = 0
) -> Path:
    """Write ``n_images`` lesion PNGs and ``labels.csv``; return the CSV path. Idempotent for a seed.

    Raises:
        ValueError: ``n_images`` < 10 or ``malignant_fraction`` outside (0, 1).
    """
    if n_images < 10:
        raise ValueError(f"n_images must be >= 10 for 5-fold cross-validation, got {n_images}")
    if not 0.0 < malignant_fraction < 1.0:
        raise ValueError(f"malignant_fraction must be in (0, 1), got {malignant_fraction}")
    out_dir = Path(out_dir)
    csv_path = out_dir / "labels.csv"
    if csv_path.is_file():
        existing = pd.read_csv(csv_path)
        if len(existing) == n_images and all((out_dir / p).is_file() for p in existing["path"]):
            return csv_path
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_malignant = int(round(n_images * malignant_fraction))
    labels = np.array([1] * n_malignant + [0] * (n_images - n_malignant))
    rng.shuffle(labels)
    rows = []
    for i, label in enumerate(labels):
        name = f"images/lesion_{i:04d}.png"
        Image.fromarray(_lesion_image(rng, size, bool(label))).save(out_dir / name)
        rows.append({"path": name, "label": int(label), "patient_id": f"case{i // 2:04d}"})
    atomic_write(csv_path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    return csv_path
