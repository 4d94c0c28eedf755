"""The cache's QA montage: what pretraining will see, and what screening left out, on one page.

``CACHE/montage.png`` has one row per (modality, anatomy) label pair of the cache, with up to
``per_pair`` cached images sampled (seeded) from that pair and the pair's image count, then a
strip of excluded inputs, a few per exclusion code, each titled with its code. An excluded input
is decoded here once, for its thumbnail only (without screening); one with no pixels at all (a
structured report) is drawn as an empty tile. Look at it before trusting a pretraining set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["write_montage"]


def _excluded_thumbnail(path: str, slice_index, size: int) -> np.ndarray | None:
    from modan_pacs.pixels.build import native_stderr_silenced
    from modan_pacs.pixels.decode import display_frames, fit_square, read_dicom_frames

    # the slice index is a frame of the file, or a position in its series (then the file has one frame)
    for frames in ([int(slice_index)] if pd.notna(slice_index) else [], "middle"):
        try:
            with native_stderr_silenced():  # the C decoders' complaints about this file are known: it was excluded
                decoded, raw = read_dicom_frames(path, frames or "middle")
            return fit_square(display_frames(decoded, raw=raw)[0], size)
        except Exception:  # a thumbnail is best effort: the tile says the input has no decodable pixels
            continue
    return None


def _sample_excluded(errors: pd.DataFrame, per_code: int) -> pd.DataFrame:
    excluded = errors[errors["status"] == "excluded"]
    return excluded.groupby("code", sort=True, group_keys=False).head(per_code)


def write_montage(
    cache_dir: str | Path,
    *,
    per_pair: int = 6,
    per_code: int = 2,
    max_pairs: int = 24,
    seed: int = 0,
    out: str | Path | None = None,
) -> Path:
    """Draw ``cache_dir/montage.png`` (or ``out``; see module docstring); returns its path.

    Raises:
        DataNotFoundError / InputError: ``cache_dir`` is not a complete cache (:func:`load_cache`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modan_pacs.pixels.cache import load_cache

    cache_dir = Path(cache_dir)
    cache = load_cache(cache_dir)
    errors_path = cache_dir / "errors.parquet"
    errors = (
        pd.read_parquet(errors_path)
        if errors_path.is_file()
        else pd.DataFrame(columns=["path", "status", "code", "slice_index"])
    )
    if "status" not in errors.columns:
        errors = errors.assign(status="error", code="decode_error", slice_index=None)
    manifest = cache.manifest.assign(
        pair=cache.manifest["modality_label"].fillna("?").astype(str)
        + " / "
        + cache.manifest["anatomy_label"].fillna("?").astype(str)
    )
    counts = manifest["pair"].value_counts()
    pairs = sorted(counts.index)[:max_pairs]
    excluded = _sample_excluded(errors, per_code)
    n_rows = len(pairs) + (1 if len(excluded) else 0) or 1
    n_cols = max(per_pair, len(excluded), 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.75 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    rng = np.random.default_rng(seed)
    for r, pair in enumerate(pairs):
        rows = manifest.index[manifest["pair"] == pair].to_numpy()
        chosen = np.sort(rng.choice(rows, size=min(per_pair, len(rows)), replace=False))
        for c, row in enumerate(chosen):
            axes[r, c].imshow(cache.images[row], cmap="gray", vmin=0, vmax=255)
            axes[r, c].set_title(f"{pair} ({counts[pair]})" if c == 0 else f"row {row}", fontsize=7, loc="left")
    if len(excluded):
        r = len(pairs)
        for c, item in enumerate(excluded.itertuples(index=False)):
            thumb = _excluded_thumbnail(str(item.path), item.slice_index, cache.size)
            axes[r, c].imshow(
                thumb if thumb is not None else np.zeros((cache.size, cache.size)), cmap="gray", vmin=0, vmax=1
            )
            axes[r, c].set_title(
                str(item.code) + ("" if thumb is not None else " (no pixels)"),
                fontsize=7,
                loc="left",
                color="firebrick",
            )
    if not pairs and not len(excluded):
        axes[0, 0].text(0.5, 0.5, "empty cache", ha="center", va="center")
    n_excluded = int((errors["status"] == "excluded").sum())
    title = f"{len(cache)} cached images in {len(counts)} label pairs; {n_excluded} inputs excluded"
    fig.suptitle(title + (" (last row: a sample of them, by reason)" if len(excluded) else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    out = Path(out) if out is not None else cache_dir / "montage.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
