"""End to end: the MRNet layout on generated volumes, and real BUSI images with every output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from modan_pacs.bench import run_benchmark
from modan_pacs.bench.config import load_benchmark_config
from modan_pacs.bench.datasets import load_dataset
from modan_pacs.models import build_encoder, encoder_state_dict
from modan_pacs.report.stats import TABLE_COLUMNS


def make_mrnet(root, n_train=12, n_valid=6, depth=7):
    """MRNet layout: {train,valid}/{axial,coronal,sagittal}/NNNN.npy and {split}-acl.csv without header."""
    rng = np.random.default_rng(0)
    exam = 0
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for _ in range(n):
            label = exam % 2
            for plane in ("axial", "coronal", "sagittal"):
                volume = rng.integers(0, 120, (depth, 24, 24), dtype=np.uint8)
                volume[:, 8:16, 8:16] += np.uint8(100 * label)  # a visible "tear"
                (root / split / plane).mkdir(parents=True, exist_ok=True)
                np.save(root / split / plane / f"{exam:04d}.npy", volume)
            rows.append(f"{exam:04d},{label}")
            exam += 1
        (root / f"{split}-acl.csv").write_text("\n".join(rows) + "\n")
    return root


def test_mrnet_layout_slice_policies_and_tiny_run(tmp_path):
    root = make_mrnet(tmp_path / "mrnet")
    middle = load_dataset("acl", root, load_benchmark_config())
    assert len(middle) == 18 and set(middle.records["slice"]) == {3}
    every = load_dataset("acl", root, load_benchmark_config(slice_policy="all", plane="axial"))
    assert len(every) == 18 * 7 and every.records["group"].nunique() == 18
    center = load_dataset("acl", root, load_benchmark_config(slice_policy="center:3"))
    assert sorted(set(center.records["slice"])) == [2, 3, 4]

    cfg = load_benchmark_config(
        repeats=1,
        folds=3,
        regimes=["linear"],
        epochs=1,
        batch_size=4,
        image_size=16,
        slice_policy="center:2",
        scratch_stem="authors",
    )
    out = run_benchmark(dataset="acl", data_dir=root, inits=["scratch"], out_dir=tmp_path / "run", config=cfg)
    folds = pd.read_csv(out / "folds.csv")
    folds["exam"] = folds["item"].str.split("#").str[0]
    assert folds.groupby("exam")["fold"].nunique().max() == 1  # slices of an exam stay in one fold
    for k in (1, 2, 3):
        frame = pd.read_csv(out / "acl" / "linear" / "scratch" / "repeat_01" / f"fold_{k}.csv")
        assert list(frame.columns) == ["preds", "labels"]
        assert len(frame) == (folds["fold"] == k).sum()
    assert (out / "report" / "tables.csv").is_file()


def _tiny_cache(shared_data, path):
    from PIL import Image

    from modan_pacs.labels import Vocabulary
    from modan_pacs.pixels import write_cache

    vocab = Vocabulary.load()
    images, rows = [], []
    for folder, modality, anatomy in (("busi/benign", "US", "breast"), ("pool_mr_brain_figshare", "MR", "brain")):
        files = sorted(p for p in (shared_data / folder).rglob("*.png"))[:8]
        for f in files:
            images.append(np.asarray(Image.open(f).convert("L").resize((32, 32))))
            rows.append(
                {
                    "cache_row": len(rows),
                    "source": str(f),
                    "slice_index": 0,
                    "modality_label": modality,
                    "anatomy_label": anatomy,
                }
            )
    manifest = pd.DataFrame(rows)
    write_cache(path, np.stack(images), vocab.encode_frame(manifest), manifest, vocab)
    return path


@pytest.mark.data
@pytest.mark.slow
def test_busi_end_to_end_every_output_and_resume(shared_data, tmp_path):
    from modan_pacs.cli.main import main

    torch.manual_seed(0)
    encoder_path = tmp_path / "encoder.pt"
    torch.save(encoder_state_dict(build_encoder("authors")), encoder_path)
    cache = _tiny_cache(shared_data, tmp_path / "cache")
    out = tmp_path / "run"
    args = [
        "benchmark",
        "--dataset",
        "breast",
        "--data-dir",
        str(shared_data / "busi"),
        "--init",
        f"modan={encoder_path}",
        "--init",
        "scratch",
        "--scratch-stem",
        "authors",
        "--out",
        str(out),
        "--repeats",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "16",
        "--subsample",
        "30",
        "--embed-cache",
        str(cache),
    ]
    assert main(args) == 0
    for regime in ("finetune", "linear"):
        for init in ("modan", "scratch"):
            for k in range(1, 6):
                frame = pd.read_csv(out / "breast" / regime / init / "repeat_01" / f"fold_{k}.csv")
                assert list(frame.columns) == ["preds", "labels"] and frame["preds"].between(0, 1).all()
    report = out / "report"
    tables = pd.read_csv(report / "tables.csv", keep_default_na=False)
    assert list(tables.columns) == TABLE_COLUMNS and len(tables) == 4
    assert (tables[tables.method == "modan"].p_one_sided == "").all()
    for name in (
        "tables.md",
        "tables.json",
        "repeat_auc.png",
        "roc_breast_finetune.png",
        "roc_breast_linear.png",
        "umap_modan.png",
    ):
        assert (report / name).stat().st_size > 0, name
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "breast").rglob("fold_*.csv")}
    args = args[: args.index("--embed-cache")]  # the resumed run skips the UMAP (already checked)
    assert main(args) == 0  # resumed: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in (out / "breast").rglob("fold_*.csv")} == mtimes
    args[args.index("--epochs") + 1] = "2"
    assert main(args) != 0  # other settings in the same run folder are refused
