"""Self-describing encoders and the export folder: every format loads and gives the project encoder's outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).parent.parent / "train"))
from cache_factory import generated_cache  # noqa: E402

import modan_pacs  # noqa: E402
from modan_pacs.errors import InputError  # noqa: E402
from modan_pacs.export import PROGRAM_NAME, TORCHVISION_RGB_NAME, WEIGHTS_NAME, export_encoder  # noqa: E402
from modan_pacs.models import build_encoder, encoder_state_dict  # noqa: E402
from modan_pacs.paths import REPO_ROOT, config_path  # noqa: E402
from modan_pacs.train import load_config, pretrain  # noqa: E402

TINY = ["data.size=32", "schedule.warmup_epochs=0", "train.epochs=1", "train.batch_size=8"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return generated_cache(tmp_path_factory.mktemp("cache") / "cache", n=16, size=32)


@pytest.fixture(scope="module", params=["authors", "paper"])
def run(request, cache, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp(f"run_{request.param}") / "run"
    pretrain(load_config(config_path("pretrain_tiny.yaml"), [*TINY, f"model.stem={request.param}"]), cache, out)
    return out


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_encoder_and_checkpoint_carry_metadata_as_plain_types(run, cache):
    config = yaml.safe_load((run / "config.yaml").read_text())
    labels = np.load(cache / "labels.npy")
    for path in (run / "encoder.pt", run / "checkpoints" / "last.pt"):
        saved = torch.load(path, map_location="cpu", weights_only=True)  # metadata of plain types only
        meta = saved["meta"]
        assert meta["architecture"] == "resnet18" and meta["stem"] == config["model"]["stem"]
        assert meta["in_channels"] == 1 and meta["input_size"] == 32 and meta["feature_dim"] == 512
        assert meta["intensity"]["from_uint8"] == "x / 255"
        assert meta["labels"]["names"] == modan_pacs.labels.Vocabulary.load(cache / "vocabulary.yaml").label_names
        assert meta["labels"]["counts"] == labels.sum(axis=0).astype(int).tolist()
        assert meta["labels"]["n_images"] == 16
        assert meta["config"] == config
        assert meta["epochs_done"] == 1
        assert meta["code_version"]["package"] == modan_pacs.__version__
        if (REPO_ROOT / ".git").exists():
            head = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
            assert meta["code_version"]["git_commit"] == head and isinstance(meta["code_version"]["dirty"], bool)
    assert torch.load(run / "encoder.pt", weights_only=True)["format"] == "modan-pacs-encoder"


def test_load_encoder_in_one_line_from_file_run_folder_and_export_folder(run, tmp_path):
    export_encoder(run, tmp_path / "export", program=False)
    x = torch.rand(3, 1, 32, 32)
    reference = features(modan_pacs.models.load_encoder(run / "encoder.pt"), x)
    for path in (run / "encoder.pt", run, tmp_path / "export", str(run / "checkpoints" / "last.pt")):
        model = modan_pacs.load_encoder(path)
        assert isinstance(model, nn.Module) and not model.training
        torch.testing.assert_close(features(model, x), reference, rtol=0, atol=0)
        assert model.meta["stem"] in ("paper", "authors")
        assert model.meta["labels"]["n_images"] == 16


def test_export_formats_give_the_project_encoders_outputs(run, tmp_path):
    result = export_encoder(run, tmp_path / "export")
    out = result.out_dir
    ours = modan_pacs.load_encoder(run)
    stem = ours.meta["stem"]
    x = torch.rand(3, 1, 32, 32)
    expected = features(ours, x)

    from safetensors.torch import load_file

    state = load_file(out / WEIGHTS_NAME)
    assert state.keys() == encoder_state_dict(ours).keys()

    for single_file in (out / WEIGHTS_NAME, out / PROGRAM_NAME):
        loaded = modan_pacs.load_encoder(single_file)
        torch.testing.assert_close(features(loaded, x) if single_file.suffix != ".pt2" else loaded(x), expected)
        assert loaded.meta["stem"] == stem and loaded.meta["labels"]["n_images"] == 16

    program = torch.export.load(out / PROGRAM_NAME).module()  # torch alone
    with torch.no_grad():
        torch.testing.assert_close(program(x), expected)
        other = torch.rand(5, 1, 32, 32)  # any batch
        torch.testing.assert_close(program(other), features(ours, other))
        if stem == "paper":  # trained side 32 > 16 (paper stem's stride with its max-pool): the side is dynamic too
            other = torch.rand(2, 1, 48, 40)
            torch.testing.assert_close(program(other), features(ours, other))

    config = json.loads((out / "config.json").read_text())
    assert config["stem"] == stem and config["in_chans"] == 1 and config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert config["program_input"]["side"] == ("any side >= 17" if stem == "paper" else "32 only")
    assert config["modan_pacs"]["labels"]["n_images"] == 16
    card = (out / "README.md").read_text()
    assert (
        "## Training data" in card and "| modality | CT | 8 | 50.0% |" in card and "## Intended use and limits" in card
    )
    assert "| anatomy | knee |" not in card and "no training image: " in card and "anatomy:knee" in card
    assert (out / TORCHVISION_RGB_NAME).is_file() == (stem == "authors")


@pytest.mark.parametrize("run", ["authors"], indirect=True)  # stock torchvision/timm ResNet-18 have this stem only
def test_authors_stem_loads_into_torchvision_and_timm(run, tmp_path):
    ours = modan_pacs.load_encoder(run)
    assert ours.meta["stem"] == "authors"
    out = export_encoder(run, tmp_path / "export", program=False).out_dir
    from safetensors.torch import load_file
    from torchvision.models import resnet18

    x = torch.rand(3, 1, 32, 32)
    expected = features(ours, x)
    stock = resnet18(weights=None)
    stock.fc = nn.Identity()
    stock.load_state_dict(load_file(out / TORCHVISION_RGB_NAME))  # strict: every key of the stock model
    torch.testing.assert_close(features(stock, x.expand(-1, 3, -1, -1)), expected, rtol=1e-4, atol=1e-5)

    one = resnet18(weights=None)
    one.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    one.fc = nn.Identity()
    one.load_state_dict(load_file(out / WEIGHTS_NAME))
    torch.testing.assert_close(features(one, x), expected, rtol=0, atol=0)

    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", in_chans=1, num_classes=0, pretrained=False)
    model.load_state_dict(load_file(out / WEIGHTS_NAME))  # strict: timm's key names are torchvision's
    torch.testing.assert_close(features(model, x), expected, rtol=0, atol=0)


def test_model_card_includes_report_and_old_encoders_export_with_a_note(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("paper")
    torch.save(encoder_state_dict(encoder), tmp_path / "encoder.pt")  # an encoder.pt of before metadata
    report = tmp_path / "report"
    report.mkdir()
    pd.DataFrame(
        [
            {
                "dataset": "thyroid",
                "regime": "finetune",
                "method": "modan",
                "mean_auc": 0.71234,
                "std_auc": 0.01,
                "n_repeats": 3,
                "p_one_sided": None,
                "p_two_sided": None,
            },
        ]
    ).to_csv(report / "tables.csv", index=False)
    result = export_encoder(tmp_path / "encoder.pt", tmp_path / "export", report=report, program=False)
    card = (result.out_dir / "README.md").read_text()
    assert "| thyroid | finetune | modan | 0.7123 | 0.0100 | 3 |" in card
    assert "training data and code version unknown" in card
    assert result.meta["stem"] == "paper" and result.meta["labels"] is None
    x = torch.rand(2, 1, 24, 24)
    torch.testing.assert_close(features(modan_pacs.load_encoder(result.out_dir), x), features(encoder, x))


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    from modan_pacs.cli.main import main

    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "no such encoder file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither a run folder"):
        modan_pacs.load_encoder(tmp_path / "empty")
    (tmp_path / "empty" / "checkpoints").mkdir()
    (tmp_path / "empty" / "checkpoints" / "last.pt").touch()
    with pytest.raises(InputError, match="no encoder.pt yet"):
        modan_pacs.load_encoder(tmp_path / "empty")


def test_monai_bundle_parses_loads_and_passes_monais_own_check(run, tmp_path, monkeypatch):
    from monai.bundle import ConfigParser, verify_net_in_out

    out = export_encoder(run, tmp_path / "export", program=False, monai_bundle=True).out_dir / "monai_bundle"
    monkeypatch.chdir(out)  # bundle_root "." as MONAI's tools run it
    parser = ConfigParser()
    parser.read_config(out / "configs" / "inference.json")
    parser.read_meta(out / "configs" / "metadata.json")
    network = parser.get_parsed_content("network")
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(network.cpu()(x), features(modan_pacs.load_encoder(run), x))
    assert parser.get("_meta_#network_data_format#inputs#image#spatial_shape") == [32, 32]
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(out / "configs" / "metadata.json"),
        config_file=str(out / "configs" / "inference.json"),
        device="cpu",
    )
    assert (out / "docs" / "README.md").read_text().startswith("---")


def test_card_numbers_show_a_dash_for_missing_values():
    import numpy as np

    from modan_pacs.export.card import _number

    assert [_number(v) for v in (None, float("nan"), np.float64("nan"), np.float32("nan"))] == ["–"] * 4
    assert (_number(0.5), _number(np.float32(0.25), 3)) == ("0.5000", "0.250")
