"""``modan-pacs demo``: the whole journey on an embedded default, on a CPU, in minutes.

Stages (each one resumes or skips when its output is already complete, so the demo can be run
twice without harm):

1. ``export/``: a generated PACS export with realistic, messy headers (:func:`generate_export`)
   plus a copy of the real DICOM files that pydicom and pydicom-data install (some of which are
   deliberately broken: they land in ``index/errors.parquet``).
2. ``index/``: ``modan-pacs index export`` (headers -> labelled, PHI-free index).
3. ``cache/``: ``modan-pacs cache`` (decode once, small images).
4. ``runs/modan/``: ModAn-MulSupCon pretraining (``configs/pretrain_tiny.yaml``: a few epochs;
   the demo uses the authors' 7x7 stride-2 stem so that 64-px images train fast on a CPU).
5. ``downstream/``: a generated benign-vs-malignant lesion set (:mod:`modan_pacs.demo.downstream`).
6. ``benchmark/``: the paper's protocol (1 repeat, 5 folds, fine-tune and linear probe),
   scratch versus the fresh checkpoint, ending with ``benchmark/report/``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console


@dataclass
class DemoSettings:
    """Sizes of the demo; the defaults fit a 2-core CPU in a few minutes."""

    n_patients: int = 40
    image_size: int = 64
    stem: str = "authors"  # 7x7 stride-2 stem: ~16x fewer FLOPs than the paper stem at the same size
    pretrain_epochs: int = 10
    pretrain_batch: int = 32
    downstream_images: int = 160
    bench_epochs: int = 5
    bench_repeats: int = 1
    # the authors' probe rate: in 5 epochs the paper's 1e-4 leaves a linear probe near the class prior
    # (docs/RESULTS.md, "Linear probing")
    linear_lr: float = 1e-3
    workers: int = 2
    seed: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _copy_real_dicom(dest: Path) -> int:
    from modan_pacs.demo.export import real_dicom_sources

    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, src in enumerate(real_dicom_sources()):
        target = dest / f"{i:04d}_{src.name}"
        if not target.exists():
            shutil.copyfile(src, target)
        n += 1
    return n


def cache_index_once(index_dir: Path, cache_dir: Path, *, size: int, workers: int, montage: bool = False) -> int:
    """Build the cache of an index (images ``size`` pixels square), or keep the finished one a
    previous run left; returns its rows."""
    from modan_pacs.pixels import load_cache
    from modan_pacs.pixels.build import CacheSettings, build_cache_from_index

    if (cache_dir / "images.npy").is_file() and not (cache_dir / ".partial").exists():
        return len(load_cache(cache_dir))
    return build_cache_from_index(
        index_dir, cache_dir, CacheSettings(size=size), workers=workers, montage=montage
    ).n_rows


def run_demo(
    out_dir: str | Path = "demo_out", *, settings: DemoSettings | None = None, console: Console | None = None
) -> Path:
    """Run every stage into ``out_dir`` and return the report folder."""
    from modan_pacs.bench import run_benchmark
    from modan_pacs.bench.config import load_benchmark_config
    from modan_pacs.demo.downstream import generate_lesion_dataset
    from modan_pacs.demo.export import generate_export
    from modan_pacs.ingest import build_index
    from modan_pacs.paths import config_path
    from modan_pacs.train import pretrain
    from modan_pacs.train.config import load_config

    s = settings or DemoSettings()
    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def stage(name: str, message: str):
        console.rule(f"[bold]{name}[/]: {message}")
        return time.perf_counter()

    t = stage("1/6 export", "generated PACS export + pydicom's real DICOM files")
    export = out / "export"
    stamp = export / ".demo-export-complete"
    if not stamp.exists():
        generate_export(export / "site_a_generated", n_patients=s.n_patients, seed=s.seed)
        n_real = _copy_real_dicom(export / "pydicom_real")
        stamp.write_text(f"{n_real}\n")
    console.print(f"export at {export}")
    s.stage_seconds["export"] = time.perf_counter() - t

    t = stage("2/6 index", "headers -> labelled, PHI-free index")
    report = build_index(export, out / "index", workers=s.workers, salt_file=out / "salt")
    tables = report.tables
    console.print(
        f"{len(tables.frame)} images indexed, {len(tables.errors)} files recorded in errors.parquet, "
        f"{report.n_read} read this run, {report.n_unchanged} unchanged"
    )
    console.print(
        tables.frame.groupby(["modality_label", "anatomy_label"], dropna=False).size().rename("images").to_string()
    )
    s.stage_seconds["index"] = time.perf_counter() - t

    t = stage("3/6 cache", f"decode once into {s.image_size}x{s.image_size} uint8 arrays")
    n_cached = cache_index_once(out / "index", out / "cache", size=s.image_size, workers=s.workers, montage=True)
    console.print(f"{n_cached} cached images; QA montage {out / 'cache' / 'montage.png'}")
    s.stage_seconds["cache"] = time.perf_counter() - t

    t = stage("4/6 pretrain", f"ModAn-MulSupCon, {s.pretrain_epochs} epochs on the CPU")
    run = out / "runs" / "modan"
    cfg = load_config(
        config_path("pretrain_tiny.yaml"),
        overrides=[
            f"train.epochs={s.pretrain_epochs}",
            f"train.batch_size={s.pretrain_batch}",
            f"data.size={s.image_size}",
            f"seed={s.seed}",
            f"model.stem={s.stem}",
        ],
    )
    if not (run / "encoder.pt").exists() or (run / "checkpoints" / "last.pt").exists():
        result = pretrain(cfg, out / "cache", run, resume=(run / "checkpoints" / "last.pt").exists())
        if result.history:
            console.print(f"loss {result.history[0]['loss']:.3f} -> {result.history[-1]['loss']:.3f}")
    s.stage_seconds["pretrain"] = time.perf_counter() - t

    t = stage("5/6 downstream data", "generated ultrasound-like lesions, benign vs malignant")
    labels_csv = generate_lesion_dataset(out / "downstream", n_images=s.downstream_images, size=64, seed=s.seed)
    s.stage_seconds["downstream"] = time.perf_counter() - t

    t = stage("6/6 benchmark", "paper protocol: 5 folds, fine-tune + linear probe, scratch vs ModAn")
    bench = run_benchmark(
        dataset="csv",
        data_dir=labels_csv,
        inits={"modan-mulsupcon": run / "encoder.pt", "scratch": None},
        out_dir=out / "benchmark",
        config=load_benchmark_config(
            repeats=s.bench_repeats,
            epochs=s.bench_epochs,
            linear_lr=s.linear_lr,
            batch_size=16,
            image_size=s.image_size,
            seed=s.seed,
            scratch_stem=s.stem,
        ),
        device="cpu",
        reference="modan-mulsupcon",
        embed_cache=out / "cache",
        notify=lambda kind, text: console.print(text, style="dim" if kind == "note" else None, markup=False),
    )
    s.stage_seconds["benchmark"] = time.perf_counter() - t
    report_dir = Path(bench) / "report"
    table = report_dir / "tables.md"
    if table.is_file():
        console.print(table.read_text())
    console.print("seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in s.stage_seconds.items()))
    console.print(f"[bold green]report:[/] {report_dir}")
    return report_dir
