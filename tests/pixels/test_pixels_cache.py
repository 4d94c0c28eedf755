"""write_cache / load_cache: exact round trip and contract checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modan_pacs.errors import DataNotFoundError, InputError
from modan_pacs.labels import Vocabulary
from modan_pacs.pixels import load_cache, write_cache


def _parts(n=7, s=12):
    vocab = Vocabulary.load()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, s, s), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, len(vocab.label_names))).astype(np.float32)
    manifest = pd.DataFrame(
        {
            "cache_row": np.arange(n),
            "source": [f"1.2.3.{i}" for i in range(n)],
            "slice_index": np.arange(n) % 3,
            "modality_label": ["CT"] * n,
            "anatomy_label": ["brain"] * (n - 1) + [None],
            "target": np.arange(n) % 2,
        }
    )
    return images, labels, manifest, vocab


def test_round_trip_exact(tmp_path):
    images, labels, manifest, vocab = _parts()
    write_cache(tmp_path, images, labels, manifest, vocab, errors=[{"path": "/x.dcm", "reason": "truncated"}])
    cache = load_cache(tmp_path)
    assert isinstance(cache.images, np.memmap) and cache.images.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(cache.images), images)
    np.testing.assert_array_equal(cache.labels, labels)
    assert cache.labels.dtype == np.float32
    pd.testing.assert_frame_equal(cache.manifest, manifest)
    assert cache.vocabulary.label_names == vocab.label_names
    assert len(cache) == 7 and cache.size == 12
    errors = pd.read_parquet(tmp_path / "errors.parquet")
    # a row without status is an error with the generic code
    assert errors.to_dict("records") == [
        {"path": "/x.dcm", "reason": "truncated", "status": "error", "code": "decode_error", "slice_index": None}
    ]
    # memory-mappable with plain numpy
    assert np.load(tmp_path / "images.npy", mmap_mode="r").shape == (7, 12, 12)


def test_contract_violations_raise(tmp_path):
    images, labels, manifest, vocab = _parts()
    with pytest.raises(InputError, match="uint8"):
        write_cache(tmp_path, images.astype(np.float32), labels, manifest, vocab)
    with pytest.raises(InputError, match="columns"):
        write_cache(tmp_path, images, labels[:, :3], manifest, vocab)
    with pytest.raises(InputError, match="slice_index"):
        write_cache(tmp_path, images, labels, manifest.drop(columns="slice_index"), vocab)
    with pytest.raises(InputError, match="rows"):
        write_cache(tmp_path, images, labels, manifest.iloc[:3], vocab)
    with pytest.raises(DataNotFoundError):
        load_cache(tmp_path / "nope")
    (tmp_path / "partial").mkdir()
    np.save(tmp_path / "partial" / "images.npy", images)
    with pytest.raises(DataNotFoundError, match="labels.npy"):
        load_cache(tmp_path / "partial")
