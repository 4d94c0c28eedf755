"""Near-duplicate images: the same scene under another file name (re-exports, adjacent frames).

Two images are near-duplicates when the Pearson correlation of their small thumbnails reaches a
threshold: each image is resized to ``size x size`` grey levels (PIL bilinear, antialiased), z-scored (mean 0,
standard deviation 1) and flattened, so the correlation of two images is the dot product of their
thumbnails divided by ``size**2``. Shifts of a few pixels, new compression, brightness and
contrast changes, noise and added calipers or text keep it high; a different scene of the same
organ does not.

Default: 32-px thumbnails, threshold 0.93. On the real BUSI set (780 images) the pairs at or above
0.95 were, viewed side by side, all the same scene (re-saved copies, adjacent frames of one sweep,
with or without measurement marks); between 0.92 and 0.95 about half were; below 0.92 none of
those viewed was. 0.93 errs towards merging (a wrong merge only makes a group coarser, a missed
near-duplicate leaks a scene into the test fold): it finds 241 pairs, and the largest group it
builds holds 7 images; at 0.90 the chains grow into one group of 88.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

#: defaults documented above (``BenchmarkConfig.near_duplicate_threshold`` / ``near_duplicate_size``)
DEFAULT_THRESHOLD = 0.93
DEFAULT_SIZE = 32
PAIR_COLUMNS = ["item_a", "item_b", "label_a", "label_b", "correlation", "kind"]


def thumbnail(image: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The z-scored ``size x size`` thumbnail of a 2-D (or ``(1, H, W)``) image, flattened, float32.

    A constant image (no contrast) gives all zeros: it correlates with nothing (byte-identical
    copies are caught by the file digest instead).
    """
    from PIL import Image

    plane = np.asarray(image, dtype=np.float32)
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2:
        raise ValueError(f"thumbnail expects a 2-D image, got shape {plane.shape}")
    small = np.asarray(
        Image.fromarray(plane, mode="F").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64
    ).ravel()
    small -= small.mean()
    sd = small.std()
    return (small / sd if sd > 0 else np.zeros_like(small)).astype(np.float32)


def correlated_pairs(thumbnails: np.ndarray, threshold: float, *, block: int = 2048) -> pd.DataFrame:
    """Pairs ``i < j`` whose thumbnail correlation is at least ``threshold``.

    Args:
        thumbnails: ``(N, D)`` z-scored rows (:func:`thumbnail`).
        threshold: correlation in ``(0, 1]``.
        block: rows per matrix product (memory: ``block x N`` floats).

    Returns:
        a frame ``i, j, correlation`` (ints, float), sorted by ``i, j``.
    """
    thumbs = np.asarray(thumbnails, dtype=np.float32)
    n, dim = thumbs.shape
    found_i, found_j, found_c = [], [], []
    for start in range(0, n, block):
        corr = thumbs[start : start + block] @ thumbs.T / dim  # (b, N): row start+r against every image
        rows, cols = np.nonzero(corr >= threshold)
        keep = cols > rows + start  # upper triangle only: each pair once, no self-pairs
        found_i.append(rows[keep] + start)
        found_j.append(cols[keep])
        found_c.append(corr[rows[keep], cols[keep]])
    frame = pd.DataFrame(
        {
            "i": np.concatenate(found_i) if found_i else np.zeros(0, np.int64),
            "j": np.concatenate(found_j) if found_j else np.zeros(0, np.int64),
            "correlation": np.concatenate(found_c).astype(np.float64) if found_c else np.zeros(0),
        }
    )
    return frame.sort_values(["i", "j"], kind="stable").reset_index(drop=True)


def find_near_duplicates(
    items: Sequence[str],
    labels: Sequence[int],
    load: Callable[[int], np.ndarray],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    size: int = DEFAULT_SIZE,
) -> pd.DataFrame:
    """Near-duplicate pairs among ``items`` (``load(i)`` gives image i as a 2-D array).

    Returns:
        a frame with :data:`PAIR_COLUMNS` (``kind`` = ``near``), one row per pair, sorted.
    """
    thumbs = (
        np.stack([thumbnail(load(i), size) for i in range(len(items))]) if len(items) else np.zeros((0, size * size))
    )
    pairs = correlated_pairs(thumbs, threshold)
    items, labels = list(items), list(labels)
    return pd.DataFrame(
        {
            "item_a": [items[i] for i in pairs["i"]],
            "item_b": [items[j] for j in pairs["j"]],
            "label_a": [int(labels[i]) for i in pairs["i"]],
            "label_b": [int(labels[j]) for j in pairs["j"]],
            "correlation": pairs["correlation"].round(6),
            "kind": "near",
        },
        columns=PAIR_COLUMNS,
    )


def identical_pairs(items: Sequence[str], labels: Sequence[int], digests: Sequence[str | None]) -> pd.DataFrame:
    """Pairs of byte-identical files (equal digests), each listed against the first of its digest."""
    frame = pd.DataFrame({"item": list(items), "label": list(labels), "digest": list(digests)}).dropna(
        subset=["digest"]
    )
    rows = []
    for _, members in frame.groupby("digest", sort=False):
        if len(members) < 2:
            continue
        first = members.iloc[0]
        for _, other in members.iloc[1:].iterrows():
            rows.append((first["item"], other["item"], int(first["label"]), int(other["label"]), 1.0, "identical"))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def discordant(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs whose two images carry different labels."""
    return pairs[pairs["label_a"] != pairs["label_b"]].reset_index(drop=True)
