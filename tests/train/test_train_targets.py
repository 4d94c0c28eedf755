"""Unknown anatomy never a match by default; the full modality x anatomy supervised target."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cache_factory import write_test_cache  # noqa: E402

from modan_pacs.errors import ConfigError, InputError  # noqa: E402
from modan_pacs.losses import IGNORE_INDEX, MultiLabelSupConLoss, SupConLoss, jaccard_similarity  # noqa: E402
from modan_pacs.train.targets import (  # noqa: E402
    UnknownAsDistinct,
    class_targets,
    drop_unknown_anatomy,
    unknown_as_distinct,
    wrap_loss_for_unknown,
)

NAMES = ["modality:CT", "modality:MR", "anatomy:lung", "anatomy:abdomen", "anatomy:brain"]
ANATOMY = slice(2, 5)


def _rows(*labels: tuple[str, str | None]) -> torch.Tensor:
    out = torch.zeros(len(labels), len(NAMES))
    for i, (m, a) in enumerate(labels):
        out[i, NAMES.index(f"modality:{m}")] = 1
        if a is not None:
            out[i, NAMES.index(f"anatomy:{a}")] = 1
    return out


def _slow_jaccard_distinct(labels: list[tuple[str, str | None]]) -> np.ndarray:
    """From the definition: sets of values, each unknown anatomy a value of its own ("?i")."""
    sets = [{f"m:{m}", f"a:{a}" if a is not None else f"a:?{i}"} for i, (m, a) in enumerate(labels)]
    return np.array([[len(s & t) / len(s | t) for t in sets] for s in sets])


def test_unknown_anatomy_is_not_a_match_by_default():
    pairs = [("CT", None), ("CT", None), ("CT", "lung"), ("CT", "abdomen"), ("MR", None), ("MR", "brain")]
    labels = _rows(*pairs)
    today = jaccard_similarity(labels)
    assert today[0, 1] == 1.0  # {CT, ?} vs {CT, ?} under "match": a full positive
    distinct = jaccard_similarity(unknown_as_distinct(labels, ANATOMY))
    assert distinct[0, 1] == pytest.approx(1 / 3)  # like {CT, lung} vs {CT, abdomen}
    assert distinct[2, 3] == pytest.approx(1 / 3) and distinct[0, 2] == pytest.approx(1 / 3)
    assert distinct[0, 4] == 0 and distinct[4, 5] == pytest.approx(1 / 3)
    assert torch.all(distinct.diagonal() == 1)  # an image (and so its two views) still matches itself
    np.testing.assert_allclose(distinct.numpy(), _slow_jaccard_distinct(pairs), atol=1e-6)
    # known-anatomy pairs are untouched
    known = [2, 3, 5]
    torch.testing.assert_close(distinct[known][:, known], today[known][:, known])


def test_wrapped_losses_see_distinct_unknowns():
    torch.manual_seed(0)
    labels = _rows(("CT", None), ("CT", None), ("CT", "lung"), ("MR", "brain"))
    features = torch.randn(4, 2, 16)
    mul = MultiLabelSupConLoss(0.07, 0.3)
    wrapped = wrap_loss_for_unknown(mul, "distinct", NAMES)
    assert isinstance(wrapped, UnknownAsDistinct)
    torch.testing.assert_close(wrapped(features, labels), mul(features, unknown_as_distinct(labels, ANATOMY)))
    assert not torch.allclose(wrapped(features, labels), mul(features, labels))
    # SupCon: two unknown-anatomy CT images are no longer "identical labels"
    sup = wrap_loss_for_unknown(SupConLoss(0.07), "distinct", NAMES)
    assert not torch.allclose(sup(features, labels), SupConLoss(0.07)(features, labels))
    assert wrap_loss_for_unknown(mul, "match", NAMES) is mul
    with pytest.raises(ConfigError, match="unknown_anatomy"):
        wrap_loss_for_unknown(mul, "ignore", NAMES)
    with pytest.raises(ConfigError, match="anatomy_group 'region'"):
        wrap_loss_for_unknown(mul, "distinct", NAMES, "region")


def test_full_label_classes_and_unknown_policies():
    labels = _rows(("CT", "lung"), ("CT", None), ("MR", "brain"), ("CT", "lung"), ("MR", None)).numpy()
    got = class_targets(labels, NAMES, label_group="modality+anatomy")
    assert got.class_names == ["CT/lung", "MR/brain"]
    assert got.targets.tolist() == [0, IGNORE_INDEX, 1, 0, IGNORE_INDEX]
    match = class_targets(labels, NAMES, label_group="modality+anatomy", unknown_anatomy="match")
    assert match.class_names == ["CT/lung", "CT/unknown", "MR/brain", "MR/unknown"]
    assert match.targets.tolist() == [0, 1, 2, 0, 3]
    assert class_targets(labels, NAMES, label_group="anatomy").targets.tolist() == [0, IGNORE_INDEX, 2, 0, IGNORE_INDEX]
    with pytest.raises(ConfigError, match="'organ' is not a label group"):
        class_targets(labels, NAMES, label_group="modality+organ")


def test_drop_keeps_known_anatomy_rows_read_lazily(tmp_path):
    from modan_pacs.pixels import load_cache

    images = np.arange(6 * 8 * 8, dtype=np.uint8).reshape(6, 8, 8)
    path = write_test_cache(
        tmp_path / "c", images, ["CT", "CT", "MR", "US", "CT", "MR"], ["lung", None, "brain", None, "lung", "brain"]
    )
    cache = load_cache(path)
    kept = drop_unknown_anatomy(cache)
    assert len(kept) == 4 and kept.size == 8
    np.testing.assert_array_equal(kept.images[1], images[2])
    np.testing.assert_array_equal(kept.labels, np.asarray(cache.labels)[[0, 2, 4, 5]])
    none = write_test_cache(tmp_path / "n", images[:2], ["CT", "CT"], [None, None])
    with pytest.raises(InputError, match="no image has a known anatomy"):
        drop_unknown_anatomy(load_cache(none))
