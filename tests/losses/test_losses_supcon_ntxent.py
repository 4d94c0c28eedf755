"""SupCon and NT-Xent: same core, other positive masks; checked against direct formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modan_pacs.losses import (
    IGNORE_INDEX,
    CrossEntropyLoss,
    group_targets,
    multilabel_supcon_loss,
    nt_xent_loss,
    supcon_loss,
)


def simclr_cross_entropy(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent as written by Chen et al.: 2N-way cross-entropy, partner as the target."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def khosla_supcon(z1: torch.Tensor, z2: torch.Tensor, classes: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon as in Khosla et al.'s reference code (mean of log-prob over positives)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    y = torch.cat([classes, classes])
    logits = z @ z.T / temperature
    eye = torch.eye(len(y), dtype=torch.bool)
    mask = (y[:, None] == y[None, :]) & ~eye
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    return (-(log_prob * mask).sum(1) / mask.sum(1)).mean()


def test_nt_xent_equals_simclr_cross_entropy_value_and_grad(similarity_path):
    torch.manual_seed(0)
    z1 = torch.randn(9, 16, requires_grad=True)
    z2 = torch.randn(9, 16, requires_grad=True)
    ours = nt_xent_loss(torch.stack([z1, z2], dim=1), temperature=0.1)
    ref = simclr_cross_entropy(z1, z2, 0.1)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    g_ours = torch.autograd.grad(ours, [z1, z2])
    g_ref = torch.autograd.grad(ref, [z1, z2])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_nt_xent_is_mulsupcon_with_empty_labels(similarity_path):
    torch.manual_seed(1)
    features = torch.randn(6, 2, 8)
    assert nt_xent_loss(features, 0.2).item() == pytest.approx(
        multilabel_supcon_loss(features, torch.zeros(6, 4), 0.2, 0.3).item(), rel=1e-6
    )


def test_supcon_equals_reference_and_mulsupcon_with_one_hot(similarity_path):
    torch.manual_seed(2)
    classes = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0])
    z1, z2 = torch.randn(8, 12), torch.randn(8, 12)
    features = torch.stack([z1, z2], dim=1)
    ours = supcon_loss(features, classes, temperature=0.07)
    assert ours.item() == pytest.approx(khosla_supcon(z1, z2, classes, 0.07).item(), rel=1e-5)
    one_hot = F.one_hot(classes, 4).float()
    # one-hot labels: Jaccard is 1 for equal classes, 0 otherwise -> MulSupCon with tau 1 is SupCon
    assert supcon_loss(features, one_hot, 0.07).item() == pytest.approx(ours.item(), rel=1e-6)
    assert multilabel_supcon_loss(features, one_hot, 0.07, threshold=1.0).item() == pytest.approx(ours.item(), rel=1e-6)


def test_supcon_multi_hot_positives_need_identical_rows(similarity_path):
    torch.manual_seed(3)
    features = torch.randn(4, 2, 6)
    labels = torch.tensor([[1.0, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0]])
    # identical-row SupCon == MulSupCon with tau = 1 (Jaccard 1 <=> identical non-empty rows)
    assert supcon_loss(features, labels, 0.1).item() == pytest.approx(
        multilabel_supcon_loss(features, labels, 0.1, 1.0).item(), rel=1e-6
    )


def test_group_targets_and_cross_entropy_drop_empty_rows():
    labels = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 1]])
    targets = group_targets(labels, slice(3, 5))
    assert targets.tolist() == [0, IGNORE_INDEX, 1]
    logits = torch.randn(3, 2)
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([0, 1]))
    assert CrossEntropyLoss()(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    assert CrossEntropyLoss()(logits, torch.full((3,), IGNORE_INDEX)).item() == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.0)
