"""Heads' shapes, and the exported encoder loading into torchvision's resnet18 and load_encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.models import EncoderWithHead, build_encoder, build_head, encoder_state_dict, load_encoder


@pytest.mark.parametrize(
    ("name", "out_dim", "expected"),
    [("none", None, 512), ("linear", None, 1000), ("mlp", None, 128), ("classifier", 9, 9)],
)
def test_head_output_sizes(name, out_dim, expected):
    head = build_head(name, out_dim=out_dim)
    assert head(torch.randn(3, 512)).shape == (3, expected)


def test_mlp_is_512_2048_128():
    head = build_head("mlp")
    assert [m.weight.shape for m in head if isinstance(m, nn.Linear)] == [(2048, 512), (128, 2048)]


def test_bad_heads():
    with pytest.raises(ConfigError, match="did you mean 'linear'"):
        build_head("linaer")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_head("classifier", out_dim=1)


@pytest.mark.parametrize("stem", ["paper", "authors", "paper-nopool"])
def test_exported_encoder_loads_into_torchvision_and_load_encoder(tmp_path, stem):
    torch.manual_seed(0)
    model = EncoderWithHead(build_encoder(stem), build_head("mlp")).eval()
    path = tmp_path / "encoder.pt"
    torch.save(encoder_state_dict(model.encoder), path)
    state = torch.load(path, weights_only=True)
    assert not any(k.startswith(("fc.", "head.")) for k in state)

    reference = resnet18(weights=None)
    kernel, stride, padding = (7, 2, 3) if stem == "authors" else (3, 1, 1)
    reference.conv1 = nn.Conv2d(1, 64, kernel, stride, padding, bias=False)
    if stem == "paper-nopool":
        reference.maxpool = nn.Identity()  # the paper stem keeps torchvision's max-pool
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    reference.fc = nn.Identity()
    reference.eval()

    if stem == "paper-nopool":  # the weights cannot tell the max-pool: the run's config.yaml does
        (tmp_path / "config.yaml").write_text("model:\n  stem: paper-nopool\nlabels:\n  unknown_anatomy: distinct\n")
    loaded = load_encoder(path).eval()
    assert loaded.stem == stem
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ours = model.encoder(x)
        torch.testing.assert_close(reference(x), ours)
        torch.testing.assert_close(loaded(x), ours)


def test_a_run_config_from_before_the_max_pool_fix_reads_paper_as_nopool(tmp_path):
    torch.manual_seed(0)
    old = build_encoder("paper-nopool").eval()
    torch.save(encoder_state_dict(old), tmp_path / "encoder.pt")
    (tmp_path / "config.yaml").write_text(
        "model:\n  stem: paper\n  head: none\nloss:\n  name: mulsupcon\n"
    )  # no labels section
    loaded = load_encoder(tmp_path / "encoder.pt").eval()
    assert loaded.stem == "paper-nopool"
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old(x))
    (tmp_path / "config.yaml").write_text("model:\n  stem: paper\nlabels:\n  unknown_anatomy: distinct\n")
    assert load_encoder(tmp_path / "encoder.pt").stem == "paper"


def test_load_encoder_stem_must_fit_the_weights(tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save(encoder_state_dict(build_encoder("authors")), path)
    with pytest.raises(InputError, match="stem 'paper' does not fit its 7x7"):
        load_encoder(path, stem="paper")
    assert load_encoder(path).stem == "authors"


def test_load_encoder_rejects_other_architecture(tmp_path):
    path = tmp_path / "rgb.pt"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(InputError, match="input channels"):
        load_encoder(path)
