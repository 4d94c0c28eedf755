"""Augmentation on the device (``augment_on=device``) against the CPU path: the same distributions
of crop, flip and jitter (two-sample KS / binomial tests over many draws), the same pixels for the
same parameters, determinism per (seed, epoch, row), and the loader's hand-over of cached images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from modan_pacs.data import (
    DRAWS_PER_VIEW,
    BatchTwoViewAugment,
    ViewParams,
    apply_view_params,
    build_pretrain_loader,
    draw_view_params,
    sample_seed,
    two_view_transform,
)
from modan_pacs.errors import InputError

N_SAMPLES = 1500  # x 2 views per path
SPATIAL = (64, 48)  # a non-square source exercises both crop bounds


def cpu_path_params(
    n: int, spatial: tuple[int, int], seed: int = 0, view_dtype: str = "uint8", scale=(0.2, 1.0)
) -> dict[str, np.ndarray]:
    """The parameters the CPU path (``two_view_transform`` in the workers) draws for ``n`` samples x 2 views,
    read back from its transforms after each view (exactly what ``TwoViewd`` calls)."""
    t = two_view_transform(8, scale=scale, view_dtype=view_dtype)
    crop_d, flip_d, jitter_d = t.view_transform.transforms[:3]
    image = torch.zeros(1, *spatial, dtype=torch.uint8)
    out: dict[str, list] = {k: [] for k in ("boxes", "flip", "jitter", "brightness", "contrast", "contrast_first")}
    for row in range(n):
        t.set_random_state(seed=sample_seed(seed, 0, row))
        for _ in range(2):
            t.view_transform({"image": image})
            jitter = jitter_d.jitter
            out["boxes"].append(crop_d.cropper._box)
            out["flip"].append(bool(flip_d.flipper._do_transform))
            out["jitter"].append(bool(jitter._do_transform))
            out["brightness"].append(jitter._factors[0] if jitter._do_transform else np.nan)
            out["contrast"].append(jitter._factors[1] if jitter._do_transform else np.nan)
            out["contrast_first"].append(jitter._order == (1, 0) if jitter._do_transform else False)
    return {k: np.asarray(v) for k, v in out.items()}


def device_path_params(n: int, spatial: tuple[int, int], seed: int = 1, scale=(0.2, 1.0)) -> dict[str, np.ndarray]:
    p = draw_view_params([sample_seed(seed, 0, row) for row in range(n)], spatial, scale=scale)
    jitter = p.jitter.reshape(-1).numpy()
    return {
        "boxes": p.boxes.reshape(-1, 4).numpy(),
        "flip": p.flip.reshape(-1).numpy(),
        "jitter": jitter,
        "brightness": np.where(jitter, p.brightness.reshape(-1).numpy(), np.nan),
        "contrast": np.where(jitter, p.contrast.reshape(-1).numpy(), np.nan),
        "contrast_first": p.contrast_first.reshape(-1).numpy() & jitter,
    }


def crop_statistics(boxes: np.ndarray, spatial: tuple[int, int]) -> dict[str, np.ndarray]:
    height, width = spatial
    top, left, h, w = boxes.T.astype(float)
    return {
        "area fraction": h * w / (height * width),
        "aspect ratio": w / h,
        "top position": (top + 0.5) / (height - h + 1),  # uniform integer in [0, H - h] -> (0, 1)
        "left position": (left + 0.5) / (width - w + 1),
    }


@pytest.fixture(scope="module")
def both_paths() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return cpu_path_params(N_SAMPLES, SPATIAL), device_path_params(N_SAMPLES, SPATIAL)


def test_crop_scale_ratio_and_position_distributions_match(both_paths):
    cpu, dev = both_paths
    a, b = crop_statistics(cpu["boxes"], SPATIAL), crop_statistics(dev["boxes"], SPATIAL)
    for name in a:
        result = stats.ks_2samp(a[name], b[name])
        assert result.pvalue > 1e-3, (name, result)
    # the scale bounds hold on both paths (integer rounding can leave a hair outside [0.2, 1])
    assert 0.18 < b["area fraction"].min() and b["area fraction"].max() <= 1.0


def test_the_crop_comparison_has_power():
    """torchvision's default scale (0.08, 1) is told apart from the paper's (0.2, 1) by the same test."""
    cpu = cpu_path_params(600, SPATIAL)
    dev = device_path_params(600, SPATIAL, scale=(0.08, 1.0))
    a, b = crop_statistics(cpu["boxes"], SPATIAL), crop_statistics(dev["boxes"], SPATIAL)
    assert stats.ks_2samp(a["area fraction"], b["area fraction"]).pvalue < 1e-3


def test_flip_and_jitter_rates_and_factor_ranges_match(both_paths):
    cpu, dev = both_paths
    n = 2 * N_SAMPLES
    for name, p in (("flip", 0.5), ("jitter", 0.8)):
        for path in (cpu, dev):
            assert stats.binomtest(int(path[name].sum()), n, p).pvalue > 1e-3, (name, path[name].mean())
        table = [[cpu[name].sum(), n - cpu[name].sum()], [dev[name].sum(), n - dev[name].sum()]]
        assert stats.chi2_contingency(table).pvalue > 1e-3, (name, table)
    for name in ("brightness", "contrast"):
        a, b = cpu[name][~np.isnan(cpu[name])], dev[name][~np.isnan(dev[name])]
        assert 0.6 <= b.min() and b.max() <= 1.4
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name
        assert stats.kstest(b, stats.uniform(0.6, 0.8).cdf).pvalue > 1e-3, name
    for path in (cpu, dev):  # random order of the two jitter steps: half of the jittered views
        jittered = int(path["jitter"].sum())
        assert stats.binomtest(int(path["contrast_first"].sum()), jittered, 0.5).pvalue > 1e-3


def test_same_parameters_give_the_cpu_paths_pixels():
    """Given the CPU path's own draws, the batched ops reproduce its float32 views (roi_align vs
    antialiased interpolate: within 0.01 on average, a few grey levels at the crop border)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:80] / 96
    image = torch.from_numpy(
        np.clip(120 + 80 * np.sin(6 * xx) * np.cos(4 * yy) + 10 * rng.standard_normal((96, 80)), 0, 255).astype(
            np.uint8
        )
    )[None]
    for size in (32, 64, 128):  # shrinking and enlarging crops
        t = two_view_transform(size, view_dtype="float32")
        crop_d, flip_d, jitter_d = t.view_transform.transforms[:3]
        for row in range(6):
            t.set_random_state(seed=sample_seed(3, 0, row))
            view = t.view_transform({"image": image})["image"]
            j = jitter_d.jitter
            params = ViewParams(
                boxes=torch.tensor([[crop_d.cropper._box]]),
                flip=torch.tensor([[bool(flip_d.flipper._do_transform)]]),
                jitter=torch.tensor([[bool(j._do_transform)]]),
                brightness=torch.tensor([[j._factors[0]]]),
                contrast=torch.tensor([[j._factors[1]]]),
                contrast_first=torch.tensor([[j._order == (1, 0)]]),
            )
            device_view = apply_view_params(image[None], params, size)[0, 0]
            diff = (device_view - view).abs()
            assert diff.mean() < 0.01 and diff.max() < 0.15, (size, row, diff.mean().item(), diff.max().item())


def _batch(rows: list[int], epoch: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "image": images[rows],
        "index": torch.tensor(rows),
        "epoch": torch.full((len(rows),), epoch),
        "labels": torch.zeros(len(rows), 2),
    }


def test_views_depend_only_on_seed_epoch_and_row():
    images = torch.randint(0, 256, (6, 1, 40, 40), dtype=torch.uint8)
    aug = BatchTwoViewAugment(24, seed=5)
    a = aug(_batch([0, 1, 2, 3], 0, images), "cpu")
    b = aug(_batch([3, 5, 1], 0, images), "cpu")  # other batch composition and order
    assert torch.equal(a["view1"][1], b["view1"][2]) and torch.equal(a["view2"][3], b["view2"][0])
    assert not torch.equal(a["view1"][1], a["view2"][1])  # the two views differ
    later = aug(_batch([1], 1, images), "cpu")
    assert not torch.equal(later["view1"][0], a["view1"][1])  # another epoch, other views
    other_seed = BatchTwoViewAugment(24, seed=6)(_batch([1], 0, images), "cpu")
    assert not torch.equal(other_seed["view1"][0], a["view1"][1])
    assert a["view1"].dtype == torch.float32 and 0 <= a["view1"].min() and a["view1"].max() <= 1
    assert set(a) == {"view1", "view2", "index", "epoch", "labels"}


def test_bad_batches_and_parameters_are_clear_errors():
    aug = BatchTwoViewAugment(8)
    with pytest.raises(InputError, match=r"needs batch keys \['epoch'\]"):
        aug({"image": torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "index": torch.arange(2)}, "cpu")
    with pytest.raises(ValueError, match="scale must satisfy"):
        BatchTwoViewAugment(8, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="jitter_prob must be in"):
        BatchTwoViewAugment(8, jitter_prob=1.5)
    params = draw_view_params([1, 2], (8, 8))
    with pytest.raises(InputError, match="batch 3 but the view parameters have 2"):
        apply_view_params(torch.zeros(3, 1, 8, 8), params, 4)


def test_device_loader_hands_over_cached_uint8_images(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from cache_factory import generated_cache

    from modan_pacs.pixels import load_cache

    cache = load_cache(generated_cache(tmp_path / "cache", n=12, size=20))
    loader = build_pretrain_loader(cache, batch_size=4, size=16, seed=7, epoch_seed=2, augment_on="device")
    batch = next(iter(loader))
    assert set(batch) == {"image", "labels", "index", "uniforms"}
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 1, 20, 20)
    assert batch["uniforms"].shape == (4, 2, DRAWS_PER_VIEW)
    rows = batch["index"].numpy()
    assert np.array_equal(batch["image"][:, 0].numpy(), np.asarray(cache.images)[rows])
    # the workers' numbers are those the augmenter draws itself from (seed, epoch, row)
    aug = BatchTwoViewAugment(16, seed=7)
    from_workers = aug(batch, "cpu")
    drawn_here = aug({**{k: v for k, v in batch.items() if k != "uniforms"}, "epoch": torch.full((4,), 2)}, "cpu")
    assert torch.equal(from_workers["view1"], drawn_here["view1"]) and torch.equal(
        from_workers["view2"], drawn_here["view2"]
    )
    workers = build_pretrain_loader(cache, batch_size=4, size=16, seed=7, epoch_seed=2, augment_on="device", workers=1)
    assert all(torch.equal(a["uniforms"], b["uniforms"]) for a, b in zip(loader, workers, strict=True))
    with pytest.raises(InputError, match="augment_on must be one of"):
        build_pretrain_loader(cache, batch_size=4, size=16, augment_on="gpu")


def test_fallback_crop_matches_the_cpu_path():
    """When no attempt fits (a 2 x 200 strip), both paths take the largest centred crop within the ratio."""
    from modan_pacs.data import RandResizedCrop

    cpu = RandResizedCrop(8)
    cpu.set_random_state(seed=0)
    cpu.randomize((2, 200))
    boxes = draw_view_params([1, 2, 3], (2, 200)).boxes.reshape(-1, 4)
    assert cpu._box == (0, 98, 2, 3)
    assert all(tuple(b.tolist()) == cpu._box for b in boxes)
