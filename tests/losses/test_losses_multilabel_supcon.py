"""MulSupCon (Eq. 3) against a slow per-pair loop, an exact hand value, invariances and SGD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modan_pacs.errors import ConfigError
from modan_pacs.losses import (
    MultiLabelSupConLoss,
    build_loss,
    jaccard_similarity,
    multilabel_supcon_loss,
)


def slow_mulsupcon(features: torch.Tensor, labels: torch.Tensor, temperature: float, threshold: float) -> torch.Tensor:
    """Eq. 3 written as loops over anchors and candidate pairs, Jaccard from Python sets."""
    n_images, n_views, _ = features.shape
    views = [(i, v) for i in range(n_images) for v in range(n_views)]
    z = [F.normalize(features[i, v], dim=0) for i, v in views]
    active = [{k for k in range(labels.shape[1]) if labels[i, k] == 1} for i in range(n_images)]
    total, counted = 0.0, 0
    for a, (image_a, _) in enumerate(views):
        denominator = sum(torch.exp(z[a] @ z[k] / temperature) for k in range(len(views)) if k != a)
        terms = []
        for p, (image_p, _) in enumerate(views):
            if p == a:
                continue
            if image_p == image_a:
                weight = 1.0
            else:
                union = active[image_a] | active[image_p]
                weight = len(active[image_a] & active[image_p]) / len(union) if union else 0.0
            if weight >= threshold:
                terms.append(weight * torch.log(torch.exp(z[a] @ z[p] / temperature) / denominator))
        if terms:
            total = total - sum(terms) / len(terms)
            counted += 1
    return total / counted


def two_hot(n: int, n_modality: int = 3, n_anatomy: int = 9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, n_modality + n_anatomy)
    labels[torch.arange(n), torch.randint(0, n_modality, (n,), generator=g)] = 1
    labels[torch.arange(n), n_modality + torch.randint(0, n_anatomy, (n,), generator=g)] = 1
    return labels


@pytest.mark.parametrize("n_views", [1, 2, 3])
def test_matches_slow_loop_value_and_gradients(n_views, similarity_path):
    torch.manual_seed(0)
    labels = two_hot(7, n_modality=2, n_anatomy=3)
    labels[3] = 0  # an image without labels
    features = torch.randn(7, n_views, 5, dtype=torch.float64, requires_grad=True)
    fast = multilabel_supcon_loss(features, labels, temperature=0.2, threshold=0.3)
    (grad_fast,) = torch.autograd.grad(fast, features)
    slow = slow_mulsupcon(features, labels, 0.2, 0.3)
    (grad_slow,) = torch.autograd.grad(slow, features)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-6)
    torch.testing.assert_close(grad_fast.double(), grad_slow, rtol=1e-4, atol=1e-6)


def test_exact_value_on_hand_made_case(similarity_path):
    # image 0: both views e1, labels {0, 1}; image 1: both views e2, labels {0, 2}; Jaccard 1/3 >= 0.3
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    features = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2])])
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    t = 0.5
    # every anchor: own other view has logit 1/T = 2, two views of the other image 0; denominator e^2 + 2
    log_den = math.log(math.exp(2.0) + 2.0)
    expected = -((2.0 - log_den) + 2 * (1 / 3) * (0.0 - log_den)) / 3
    assert multilabel_supcon_loss(features, labels, temperature=t, threshold=0.3).item() == pytest.approx(
        expected, rel=1e-6
    )
    # with tau above 1/3 the other image is a negative: only the own view remains a positive
    assert multilabel_supcon_loss(features, labels, temperature=t, threshold=0.5).item() == pytest.approx(
        -(2.0 - log_den), rel=1e-6
    )


def test_jaccard_binary_matches_sets_and_soft_matches_min_max():
    labels = two_hot(6)
    labels[2] = 0
    labels[4] = 0
    jac = jaccard_similarity(labels)
    for i in range(6):
        for j in range(6):
            a, b = set(labels[i].nonzero().flatten().tolist()), set(labels[j].nonzero().flatten().tolist())
            assert jac[i, j].item() == pytest.approx(len(a & b) / len(a | b) if a | b else 0.0)
    soft = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    jac_soft = jaccard_similarity(soft)
    for i in range(5):
        for j in range(5):
            expected = torch.minimum(soft[i], soft[j]).sum() / torch.maximum(soft[i], soft[j]).sum()
            assert jac_soft[i, j].item() == pytest.approx(expected.item(), rel=1e-6)


def test_soft_labels_at_zero_one_equal_binary_path():
    torch.manual_seed(3)
    features = torch.randn(6, 2, 8)
    labels = two_hot(6)
    almost = labels * (1 - 1e-7) + 0.0  # forces the soft path, same Jaccard up to 1e-7
    assert multilabel_supcon_loss(features, almost, 0.1, 0.3).item() == pytest.approx(
        multilabel_supcon_loss(features, labels, 0.1, 0.3).item(), rel=1e-5
    )


def test_permutation_invariance(similarity_path):
    torch.manual_seed(1)
    features, labels = torch.randn(10, 2, 16), two_hot(10, seed=1)
    perm = torch.randperm(10)
    base = multilabel_supcon_loss(features, labels)
    assert multilabel_supcon_loss(features[perm], labels[perm]).item() == pytest.approx(base.item(), rel=1e-5)
    # swapping the order of the views changes nothing either
    assert multilabel_supcon_loss(features.flip(1), labels).item() == pytest.approx(base.item(), rel=1e-5)


def test_sgd_steps_lower_it():
    torch.manual_seed(2)
    features = torch.randn(16, 2, 8, requires_grad=True)
    labels = two_hot(16, seed=2)
    loss_fn = MultiLabelSupConLoss(temperature=0.1, threshold=0.3)
    optimizer = torch.optim.SGD([features], lr=0.5)
    values = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(features, labels)
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < values[0] - 0.1


def test_all_zero_labels_give_no_nan(similarity_path):
    torch.manual_seed(4)
    features = torch.randn(5, 2, 8, requires_grad=True)
    loss = multilabel_supcon_loss(features, torch.zeros(5, 12))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()
    # single view and no shared labels: no anchor has a positive -> 0, finite zero gradients
    features1 = torch.randn(3, 1, 8, requires_grad=True)
    loss1 = multilabel_supcon_loss(features1, torch.eye(3))
    loss1.backward()
    assert loss1.item() == 0.0 and torch.equal(features1.grad, torch.zeros_like(features1))


def test_large_logits_are_stable(similarity_path):
    features = torch.randn(8, 2, 4) * 1e3
    loss = multilabel_supcon_loss(features, two_hot(8), temperature=1e-3)
    assert torch.isfinite(loss)


def test_bad_input_is_a_clear_value_error():
    with pytest.raises(ValueError, match="labels has batch 6 but features has batch 8"):
        multilabel_supcon_loss(torch.randn(8, 2, 4), torch.zeros(6, 3))
    with pytest.raises(ValueError, match=r"\(N images, V views, D dims\)"):
        multilabel_supcon_loss(torch.randn(8, 4), torch.zeros(8, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multilabel_supcon_loss(torch.randn(2, 2, 4), torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        MultiLabelSupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="threshold"):
        MultiLabelSupConLoss(threshold=1.5)


def test_registry_builds_and_suggests():
    assert isinstance(build_loss("mulsupcon", temperature=0.07, threshold=0.3), MultiLabelSupConLoss)
    with pytest.raises(ConfigError, match="did you mean 'mulsupcon'"):
        build_loss("mulsupcom")
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        build_loss("mulsupcon", temprature=0.1)
    with pytest.raises(ConfigError, match="temperature must be a positive"):
        build_loss("ntxent", temperature=-1.0)
