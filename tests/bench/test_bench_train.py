"""The downstream recipe checked directly: deep-copied best epoch, eval-mode frozen BatchNorm,
fast and epochwise linear probing agreeing, ImageNet conv1 summing, init parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modan_pacs.bench.inits import imagenet_encoder, parse_init
from modan_pacs.bench.train import (
    FitSettings,
    finetune,
    fit,
    linear_probe_epochwise,
    linear_probe_on_features,
    make_head,
)
from modan_pacs.errors import InputError
from modan_pacs.models import build_encoder, frozen_features


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


def _fit_linear(epochs: int, best: str, x, y, xv, yv):
    torch.manual_seed(0)
    head = nn.Linear(4, 2)
    settings = FitSettings(lr=0.5, epochs=epochs, batch_size=8, step_size=100, best_epoch=best)
    result = fit(
        module=head,
        forward=head,
        train_mode=head.train,
        eval_mode=head.eval,
        params=list(head.parameters()),
        x_train=x,
        y_train=y,
        x_val=xv,
        y_val=yv,
        settings=settings,
        generator=torch.Generator().manual_seed(1),
        device="cpu",
    )
    return head, result


def test_best_epoch_is_a_deep_copy_not_the_last_epoch():
    x, y = _toy()
    xv, yv = x[:10], 1 - y[:10]  # validation labels flipped: validation loss grows as training succeeds
    after_one, _ = _fit_linear(1, "deep-copy", x, y, xv, yv)
    best, result = _fit_linear(6, "deep-copy", x, y, xv, yv)
    last, last_result = _fit_linear(6, "last", x, y, xv, yv)
    losses = [h["val_loss"] for h in result.history]
    assert result.kept_epoch == int(np.argmin(losses)) + 1 == 1
    assert torch.equal(best.weight, after_one.weight) and torch.equal(best.bias, after_one.bias)
    assert last_result.kept_epoch == 6 and not torch.allclose(last.weight, after_one.weight)


def _encoder_and_data():
    torch.manual_seed(0)
    encoder = build_encoder("authors")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 16, 16, generator=g)
    y = torch.tensor([0, 1] * 12)
    return encoder, x, y


def _bn_state(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "weight" in k}


def test_frozen_encoder_eval_mode_keeps_batchnorm_and_fast_path_matches_epochwise():
    encoder, x, y = _encoder_and_data()
    before = _bn_state(encoder)
    settings = FitSettings(lr=1e-2, epochs=3, batch_size=8, step_size=2)
    train, val, test = np.arange(24) < 14, (np.arange(24) >= 14) & (np.arange(24) < 18), np.arange(24) >= 18
    features = frozen_features(encoder, x, "cpu")
    torch.manual_seed(5)
    fast, fast_res = linear_probe_on_features(
        features,
        train=train,
        val=val,
        test=test,
        labels=y,
        settings=settings,
        generator=torch.Generator().manual_seed(3),
        device="cpu",
    )
    torch.manual_seed(5)
    slow, slow_res = linear_probe_epochwise(
        encoder,
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        settings=settings,
        generator=torch.Generator().manual_seed(3),
        device="cpu",
        bn_mode="eval",
    )
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    assert [h["val_loss"] for h in fast_res.history] == pytest.approx(
        [h["val_loss"] for h in slow_res.history], abs=1e-5
    )
    after = _bn_state(encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)  # statistics and weights untouched
    # the authors' train-mode BatchNorm changes the "frozen" encoder's statistics
    torch.manual_seed(5)
    linear_probe_epochwise(
        encoder,
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        settings=settings,
        generator=torch.Generator().manual_seed(3),
        device="cpu",
        bn_mode="train",
    )
    changed = _bn_state(encoder)
    assert any(not torch.equal(before[k], changed[k]) for k in before if "running_mean" in k)
    assert all(torch.equal(before[k], changed[k]) for k in before if k.endswith("weight"))


def test_finetune_updates_encoder_and_identity_head_scores():
    encoder, x, y = _encoder_and_data()
    before = encoder.conv1.weight.detach().clone()
    settings = FitSettings(lr=1e-3, epochs=1, batch_size=8)
    preds, result = finetune(
        encoder,
        make_head("identity"),
        x_train=x[:16],
        y_train=y[:16],
        x_val=x[16:20],
        y_val=y[16:20],
        x_test=x[20:],
        settings=settings,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
    )
    assert preds.shape == (4,) and np.all((preds > 0) & (preds < 1))
    assert not torch.equal(before, encoder.conv1.weight)
    assert len(result.history) == 1


def test_imagenet_conv1_sum_equals_three_equal_channels(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    rgb = resnet18(weights=None).eval()
    path = tmp_path / "r18.pth"
    torch.save(rgb.state_dict(), path)
    gray = imagenet_encoder(path, conv1="sum", norm="none").eval()
    rgb.fc = nn.Identity()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)
        random = imagenet_encoder(path, conv1="random").eval()
        assert not torch.allclose(random(x), gray(x))
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="not torchvision ResNet-18"):
        imagenet_encoder(bad)


def test_imagenet_normalisation_folded_into_conv1_and_bn1(tmp_path):
    """A grey image through the folded 1-channel stem equals torchvision's model fed the ImageNet-
    normalised three-channel image: conv1 + bn1 exactly away from the padded border, and the whole
    encoder's features closely (only the 3-pixel border of conv1 differs)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    rgb = resnet18(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as pretrained weights have
        rgb.bn1.running_mean.uniform_(-1, 1)
        rgb.bn1.running_var.uniform_(0.5, 2)
    rgb.eval()
    path = tmp_path / "r18.pth"
    torch.save(rgb.state_dict(), path)
    folded = imagenet_encoder(path, conv1="sum", norm="fold").eval()
    raw = imagenet_encoder(path, conv1="sum", norm="none").eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = torch.rand(2, 1, 64, 64)
    normalised = (x.repeat(1, 3, 1, 1) - mean) / std
    with torch.no_grad():
        want = rgb.bn1(rgb.conv1(normalised))
        got = folded.bn1(folded.conv1(x))
        torch.testing.assert_close(got[..., 2:-2, 2:-2], want[..., 2:-2, 2:-2], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(raw.bn1(raw.conv1(x))[..., 2:-2, 2:-2], want[..., 2:-2, 2:-2], atol=1e-2)
        rgb.fc = nn.Identity()
        full_want, full_got = rgb(normalised), folded(x)
        corr = torch.corrcoef(torch.stack([full_want.flatten(), full_got.flatten()]))[0, 1]
        assert corr > 0.99
    with pytest.raises(InputError, match="imagenet_norm"):
        imagenet_encoder(path, norm="bogus")


def test_parse_init_messages(tmp_path):
    with pytest.raises(InputError, match="nothing is downloaded"):
        parse_init("imagenet")
    with pytest.raises(InputError, match="not found"):
        parse_init(f"modan={tmp_path / 'missing.pt'}")
    with pytest.raises(InputError, match="NAME=PATH"):
        parse_init("modan")
    assert parse_init("scratch").kind == "scratch"
