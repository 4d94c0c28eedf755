"""The pretraining DataLoader: batch layout, DDP sharding, reproducibility from seed + epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from modan_pacs.data import build_pretrain_loader, views_to_float
from modan_pacs.errors import InputError
from modan_pacs.labels import Vocabulary
from modan_pacs.pixels import load_cache, write_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    vocab = Vocabulary.load()
    n, k = 32, len(vocab.label_names)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 40, 40), dtype=np.uint8)
    labels = np.zeros((n, k), np.float32)
    labels[np.arange(n), rng.integers(0, k, n)] = 1
    manifest = pd.DataFrame(
        {
            "cache_row": np.arange(n),
            "source": [f"img{i}" for i in range(n)],
            "slice_index": 0,
            "modality_label": "CT",
            "anatomy_label": None,
        }
    )
    out = tmp_path_factory.mktemp("cache")
    write_cache(out, images, labels, manifest, vocab)
    return load_cache(out)


def _collect(loader):
    return [{k: v.clone() for k, v in batch.items()} for batch in loader]


def test_batch_layout(cache):
    loader = build_pretrain_loader(cache, batch_size=5, size=24, workers=0, seed=1)
    batches = _collect(loader)
    assert len(batches) == 32 // 5  # drop_last
    b = batches[0]
    assert set(b) == {"view1", "view2", "labels", "index"}
    assert b["view1"].shape == (5, 1, 24, 24) and b["view2"].shape == (5, 1, 24, 24)
    assert b["view1"].dtype == torch.uint8 and b["labels"].dtype == torch.float32  # uint8 views by default
    assert b["index"].shape == (5,) and b["index"].dtype == torch.int64
    torch.testing.assert_close(b["labels"], torch.from_numpy(cache.labels[b["index"].numpy()]))


def test_uint8_views_are_the_float_views_rounded(cache):
    """uint8 transport: the same draws as float32 views, each pixel within half a grey level."""
    as_u8 = _collect(build_pretrain_loader(cache, batch_size=8, size=24, workers=0, seed=5))
    as_f32 = _collect(build_pretrain_loader(cache, batch_size=8, size=24, workers=0, seed=5, view_dtype="float32"))
    for u, f in zip(as_u8, as_f32):
        assert torch.equal(u["index"], f["index"])
        for key in ("view1", "view2"):
            assert f[key].dtype == torch.float32
            restored = views_to_float(u[key])
            assert restored.dtype == torch.float32 and float(restored.min()) >= 0.0 and float(restored.max()) <= 1.0
            assert float((restored - f[key]).abs().max()) <= 0.5 / 255 + 1e-5
            # rounded, not truncated: equal to round(255 x) except where float rounding of the two
            # computations (grey levels vs [0, 1]) falls on either side of a .5 tie
            rounded = torch.round(f[key] * 255).to(torch.int16)
            diff = (u[key].to(torch.int16) - rounded).abs()
            # (bilinear weights of 1/2 between two integer levels make exact .5 ties common: 0.24 % here)
            assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-2
    with pytest.raises(InputError, match="view_dtype"):
        build_pretrain_loader(cache, batch_size=8, size=24, view_dtype="float16")


def test_fake_two_rank_sampler_is_disjoint_and_complete(cache):
    seen = []
    for rank in (0, 1):
        loader = build_pretrain_loader(
            cache, batch_size=4, size=16, seed=7, distributed=True, num_replicas=2, rank=rank
        )
        seen.append(torch.cat([b["index"] for b in loader]).tolist())
    assert len(seen[0]) == len(seen[1]) == 16
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(32))


def test_reproducible_from_seed_and_epoch_and_independent_of_workers(cache):
    a = _collect(build_pretrain_loader(cache, batch_size=8, size=16, seed=3, workers=0))
    b = _collect(build_pretrain_loader(cache, batch_size=8, size=16, seed=3, workers=2))
    for x, y in zip(a, b, strict=True):
        for key in x:
            assert torch.equal(x[key], y[key]), key
    loader = build_pretrain_loader(cache, batch_size=8, size=16, seed=3)
    loader.set_epoch(1)
    epoch1 = _collect(loader)
    resumed = _collect(build_pretrain_loader(cache, batch_size=8, size=16, seed=3, epoch_seed=1))
    assert not torch.equal(epoch1[0]["index"], a[0]["index"])  # reshuffled
    for x, y in zip(epoch1, resumed, strict=True):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["view1"], y["view1"])
    other = _collect(build_pretrain_loader(cache, batch_size=8, size=16, seed=4))
    assert not torch.equal(other[0]["view1"], a[0]["view1"])


def test_views_of_a_sample_do_not_depend_on_rank(cache):
    single = {}
    for batch in build_pretrain_loader(cache, batch_size=4, size=16, seed=2, drop_last=False):
        for i, idx in enumerate(batch["index"].tolist()):
            single[idx] = batch["view1"][i]
    loader = build_pretrain_loader(cache, batch_size=4, size=16, seed=2, distributed=True, num_replicas=2, rank=1)
    for batch in loader:
        for i, idx in enumerate(batch["index"].tolist()):
            assert torch.equal(batch["view1"][i], single[idx])


def test_errors(cache):
    with pytest.raises(InputError):
        build_pretrain_loader(cache, batch_size=0, size=16)
    with pytest.raises(InputError):
        build_pretrain_loader(cache, batch_size=4, size=16, distributed=True)  # no process group


def test_sample_views_equal_the_transform_seeded_by_sample_seed(cache):
    from modan_pacs.data import sample_seed, two_view_transform

    loader = build_pretrain_loader(cache, batch_size=4, size=16, seed=5, epoch_seed=2)
    t = two_view_transform(16, drop_source=True, view_dtype="uint8")  # the loader's default views
    t.set_random_state(seed=sample_seed(5, 2, 3))
    expected = t({"image": torch.from_numpy(cache.images[3][None].copy())})  # the cached uint8 row, as the loader
    got = loader.dataset[3]
    assert torch.equal(got["view1"], expected["view1"]) and torch.equal(got["view2"], expected["view2"])


def test_persistent_workers_follow_set_epoch(cache):
    workers = build_pretrain_loader(cache, batch_size=8, size=16, seed=6, workers=2)
    assert workers.persistent_workers
    main = build_pretrain_loader(cache, batch_size=8, size=16, seed=6, workers=0)
    for epoch in (0, 1, 2):
        workers.set_epoch(epoch)
        main.set_epoch(epoch)
        for x, y in zip(_collect(workers), _collect(main), strict=True):
            assert (
                torch.equal(x["index"], y["index"])
                and torch.equal(x["view1"], y["view1"])
                and torch.equal(x["view2"], y["view2"])
            )
    # dataset[(epoch, row)] is the sample of that epoch whatever the dataset's own epoch
    main.dataset.set_epoch(0)
    direct = main.dataset[(2, 5)]
    main.dataset.set_epoch(2)
    assert torch.equal(direct["view1"], main.dataset[5]["view1"])
