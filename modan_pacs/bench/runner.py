"""``run_benchmark``: R repeats x k folds x regimes x initialisations, then the report.

Run folder (``out_dir``)::

    folds.csv, inner_val.csv                        the fixed partition (reused)
    <dataset>/config.yaml                           resolved settings (a resumed run must agree)
    <dataset>/duplicates.csv                        identical / near-duplicate pairs found (grouped)
    <dataset>/plan.json                             images, groups, duplicates, class balance per fold
    <dataset>/<regime>/<init>/repeat_NN/fold_K.csv  preds,labels (K = 1..k, the paper's format)
    <dataset>/<regime>/<init>/repeat_NN/fold_K.json epochs: train/val loss, epoch kept
    report/                                         tables.csv/md/json and figures

A fold whose CSV exists is skipped, so re-running the same command resumes an interrupted run.
Seeds: the training randomness of (repeat r, fold k) -- starting weights of random parts, head
initialisation, batch order -- is drawn from ``SeedSequence([seed, r, k])``; it is the same for
every initialisation and regime, so comparisons are paired.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from modan_pacs.errors import InputError
from modan_pacs.fileio import atomic_write
from modan_pacs.models.features import embed_cache as embed_cache_images
from modan_pacs.models.features import frozen_features

from .config import RESULT_FIELDS, BenchmarkConfig, load_benchmark_config
from .datasets import DownstreamDataset, load_dataset, preprocess
from .inits import InitSpec, build_initial_encoder, is_deterministic, parse_inits
from .splits import load_or_make_folds, load_or_make_inner
from .train import FitSettings, finetune, linear_probe_epochwise, linear_probe_on_features, make_head

logger = logging.getLogger(__name__)


def fold_seeds(seed: int, repeat: int, fold: int) -> tuple[int, int, int]:
    """(encoder init seed, head init seed, batch-order seed) of one repeat and fold."""
    a, b, c = np.random.SeedSequence([seed, repeat, fold]).generate_state(3)
    return int(a), int(b), int(c)


def fold_path(out_dir: Path, dataset: str, regime: str, init: str, repeat: int, fold: int) -> Path:
    """``<out>/<dataset>/<regime>/<init>/repeat_NN/fold_K.csv``."""
    return out_dir / dataset / regime / init / f"repeat_{repeat:02d}" / f"fold_{fold}.csv"


def write_predictions(path: Path, preds: np.ndarray, labels: np.ndarray) -> None:
    """Write a ``preds,labels`` CSV atomically (a killed run never leaves a half-written fold)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"preds": preds, "labels": labels.astype(int)})
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.8g"))


def _check_config(path: Path, cfg: BenchmarkConfig) -> None:
    """Write ``config.yaml``, or check that a resumed run uses the same result-relevant settings."""
    current = cfg.model_dump(mode="json")
    if path.is_file():
        saved = yaml.safe_load(path.read_text()) or {}
        diffs = [f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in RESULT_FIELDS if saved.get(k) != current[k]]
        if diffs:
            raise InputError(
                f"{path}: this run folder was made with other settings ({'; '.join(diffs)}); use another --out"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(current, sort_keys=False))


def _device(device: str | None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


class _FeatureStore:
    """Frozen-encoder features of every image, per initialisation whose encoder does not depend on
    the seed (checkpoints, ImageNet with summed conv1): computed once and shared by every fold and
    repeat. Seed-dependent encoders (scratch, random conv1) get theirs once per fold."""

    def __init__(self) -> None:
        self._features: dict[str, object] = {}

    def get(self, name: str, make):
        if name not in self._features:
            self._features[name] = make()
        return self._features[name]


def _named(data, name: str | None):  # noqa: ANN001, ANN202
    """``data`` renamed to ``name`` (csv datasets only: the others have their paper names)."""
    import dataclasses
    import re

    if name is None:
        return data
    if data.name != "csv":
        raise InputError(f"--name {name!r}: only a csv dataset takes a name (this one is {data.name!r})")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise InputError(f"--name {name!r}: letters, digits, '.', '_' or '-' only (it names a folder)")
    return dataclasses.replace(data, name=name)


NotifyCallback = Callable[[str, str], None]
"""``notify(kind, text)``: a line for the user; ``kind`` is ``"note"`` (about the data) or ``"info"``."""
ProgressCallback = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, description)``; ``stage`` is ``"load"`` (images preprocessed) or
``"folds"`` (folds trained; called before each fold with its description and after it)."""


def _log_notify(kind: str, text: str) -> None:
    logger.info("%s", text)


@dataclass
class BenchmarkPlan:
    """What a benchmark run will do (``--dry-run`` prints it; every run writes ``plan.json``)."""

    dataset: str
    n_images: int
    class_counts: dict[int, int]
    n_groups: int
    largest_group: int
    identical_pairs: int
    near_duplicate_pairs: int
    images_in_near_duplicates: int
    discordant_pairs: list[dict]
    folds: list[dict]
    """Per test fold: ``fold, images, class_0, class_1, positive_share, groups``."""
    inits: list[str]
    regimes: list[str]
    repeats: int
    trainings: int
    """Fold trainings planned (inits x regimes x repeats x folds)."""
    trainings_done: int
    notes: list[str] = field(default_factory=list)
    out_dir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str) + "\n"


def _fold_balance(partition: pd.DataFrame) -> list[dict]:
    rows = []
    for k, part in partition.groupby("fold"):
        counts = part["label"].value_counts().to_dict()
        rows.append(
            {
                "fold": int(k),
                "images": int(len(part)),
                "class_0": int(counts.get(0, 0)),
                "class_1": int(counts.get(1, 0)),
                "positive_share": round(float(part["label"].mean()), 4),
                "groups": int(part["group"].nunique()),
            }
        )
    return rows


def _make_plan(
    data: DownstreamDataset, partition: pd.DataFrame, specs: list[InitSpec], cfg: BenchmarkConfig, out: Path
) -> BenchmarkPlan:
    pairs = data.duplicates
    near = pairs[pairs["kind"] == "near"]
    present = set(data.records["item"])
    clash = pairs[pairs["label_a"] != pairs["label_b"]]
    tasks = [
        (s.name, g, r, k)
        for s in specs
        for g in cfg.regimes
        for r in range(1, cfg.repeats + 1)
        for k in range(1, cfg.folds + 1)
    ]
    done = sum(fold_path(out, data.name, g, name, r, k).is_file() for name, g, r, k in tasks)
    counts = partition["label"].value_counts().to_dict()
    return BenchmarkPlan(
        dataset=data.name,
        n_images=len(partition),
        class_counts={int(k): int(v) for k, v in sorted(counts.items())},
        n_groups=int(partition["group"].nunique()),
        largest_group=int(partition.groupby("group").size().max()),
        identical_pairs=int((pairs["kind"] == "identical").sum()),
        near_duplicate_pairs=len(near),
        images_in_near_duplicates=len((set(near["item_a"]) | set(near["item_b"])) & present),
        discordant_pairs=clash.to_dict(orient="records"),
        folds=_fold_balance(partition),
        inits=[s.name for s in specs],
        regimes=list(cfg.regimes),
        repeats=cfg.repeats,
        trainings=len(tasks),
        trainings_done=int(done),
        notes=list(data.notes),
        out_dir=str(out),
    )


def _config(config: BenchmarkConfig | str | Path | None) -> BenchmarkConfig:
    return config if isinstance(config, BenchmarkConfig) else load_benchmark_config(config)


def plan_benchmark(
    *,
    dataset: str,
    data_dir: str | Path | None = None,
    inits,
    out_dir: str | Path,
    config: BenchmarkConfig | str | Path | None = None,
    imagenet_weights: str | Path | None = None,
) -> BenchmarkPlan:
    """Load the data, make (or reuse) the partition and write ``folds.csv``, ``inner_val.csv``,
    ``<dataset>/duplicates.csv`` and ``<dataset>/plan.json`` -- everything but the training.

    ``config`` as in :func:`run_benchmark`.
    """
    cfg = _config(config)
    specs = parse_inits(inits, imagenet_weights=imagenet_weights)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset, data_dir, cfg)
    plan, _, _ = _prepare(data, cfg, specs, out)
    return plan


def _prepare(data: DownstreamDataset, cfg: BenchmarkConfig, specs: list[InitSpec], out: Path):
    """Config check, partition, inner splits, duplicates.csv and plan.json of one dataset."""
    _check_config(out / data.name / "config.yaml", cfg)
    partition = load_or_make_folds(out, data, cfg.folds, cfg.seed)
    inner = load_or_make_inner(out, data.name, partition, cfg.val_fraction, cfg.seed)
    data.duplicates.to_csv(out / data.name / "duplicates.csv", index=False)
    plan = _make_plan(data, partition, specs, cfg, out)
    (out / data.name / "plan.json").write_text(plan.to_json())
    return plan, partition, inner


def run_benchmark(
    *,
    dataset: str,
    data_dir: str | Path | None = None,
    inits: dict[str, str | Path | None] | list[str],
    out_dir: str | Path,
    config: BenchmarkConfig | str | Path | None = None,
    device: str | None = None,
    imagenet_weights: str | Path | None = None,
    reference: str | None = None,
    report: bool = True,
    embed_cache: str | Path | None = None,
    name: str | None = None,
    notify: NotifyCallback | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Run the paper's downstream protocol and write its report; returns ``out_dir``.

    Args:
        dataset: ``thyroid``, ``breast``, ``acl`` or ``csv``.
        data_dir: the dataset's folder (CSV file for ``csv``); None = ``$MODAN_PACS_DATA/<name>``.
        inits: ``{name: encoder.pt path}`` with ``None`` for ``scratch`` / ``imagenet`` (or
            ``{"imagenet": weights file}``), or a list of ``NAME=PATH`` / ``imagenet`` / ``scratch``.
        out_dir: the run folder (created; an existing one is resumed).
        config: every setting of the protocol (repeats, folds, regimes, epochs, ...): a
            :class:`~modan_pacs.bench.config.BenchmarkConfig` (build one with overrides by
            :func:`~modan_pacs.bench.config.load_benchmark_config`), a benchmark YAML (path or
            shipped name such as ``benchmark_authors.yaml``), or None for the shipped defaults.
        device: ``cpu``, ``cuda``, ``cuda:N``; None = CUDA when available.
        imagenet_weights: local torchvision ResNet-18 weights for ``imagenet``.
        reference: the method compared with the others in the report (default: the first
            checkpoint, else the first initialisation).
        report: write ``out_dir/report`` at the end.
        embed_cache: an image cache; with it the report adds a UMAP per pretrained encoder.
        name: the name of a ``csv`` dataset in folders and tables (default ``csv``).
        notify: receives the lines for the user (default: this module's logger at INFO);
            the CLI prints them (:data:`NotifyCallback`).
        progress: receives preprocessing and fold progress (:data:`ProgressCallback`); the CLI
            draws it as rich bars.

    Raises:
        InputError, ConfigError, DataNotFoundError: bad settings, files or data.
    """
    import torch

    notify = notify or _log_notify
    cfg = _config(config)
    specs = parse_inits(inits, imagenet_weights=imagenet_weights)
    names = [s.name for s in specs]
    if reference is not None and reference not in names:
        raise InputError(f"reference {reference!r} is not among the initialisations ({', '.join(names)})")
    reference = reference or next((s.name for s in specs if s.kind == "checkpoint"), names[0])
    dev = _device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    data = _named(load_dataset(dataset, data_dir, cfg), name)
    plan, partition, inner = _prepare(data, cfg, specs, out)
    for note in data.notes:
        notify("note", f"{data.name}: {note}")
    counts = plan.class_counts
    notify(
        "info",
        f"{data.name}: {plan.n_images} images ({counts.get(0, 0)} class 0 / {counts.get(1, 0)} class 1), "
        f"{plan.n_groups} groups ({plan.near_duplicate_pairs} near-duplicate and "
        f"{plan.identical_pairs} identical pairs "
        f"joined, {len(plan.discordant_pairs)} label-discordant), {cfg.folds} folds; device {dev}",
    )

    tasks = [
        (spec, regime, r, k)
        for spec in specs
        for regime in cfg.regimes
        for r in range(1, cfg.repeats + 1)
        for k in range(1, cfg.folds + 1)
    ]
    todo = [t for t in tasks if not fold_path(out, data.name, t[1], t[0].name, t[2], t[3]).is_file()]
    notify(
        "info",
        f"{len(tasks)} trainings planned ({len(specs)} init(s) x {len(cfg.regimes)} regime(s) "
        f"x {cfg.repeats} repeat(s) "
        f"x {cfg.folds} folds), {len(todo)} to run",
    )
    if len(todo) < len(tasks):
        notify("info", f"resuming: {len(tasks) - len(todo)} of {len(tasks)} folds already done")
    if todo:
        loading = f"loading {data.name} ({len(data)} images)"
        images = preprocess(
            data,
            cfg.image_size,
            progress=(lambda done, total: progress("load", done, total, loading)) if progress else None,
        )
        labels = torch.tensor(partition["label"].to_numpy(dtype=np.int64), dtype=torch.long)
        fold_of = partition["fold"].to_numpy()
        store = _FeatureStore()
        for done, (spec, regime, r, k) in enumerate(todo):
            description = f"{data.name} {regime} {spec.name} repeat {r} fold {k}"
            if progress:
                progress("folds", done, len(todo), description)
            test = fold_of == k
            val = np.array(inner[k], dtype=bool)  # a writable copy (pandas may hand out read-only arrays)
            train = ~test & ~val
            preds, result = _run_fold(spec, regime, cfg, images, labels, train, val, test, (r, k), store, dev)
            path = fold_path(out, data.name, regime, spec.name, r, k)
            write_predictions(path, preds, labels[test].numpy())
            record = {
                "kept_epoch": result.kept_epoch,
                "n_train": int(train.sum()),
                "n_val": int(val.sum()),
                "n_test": int(test.sum()),
                "history": result.history,
            }
            path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
            if progress:
                progress("folds", done + 1, len(todo), description)
    if report:
        from modan_pacs.report import build_report

        pretrained = {s.name: s.path for s in specs if s.kind == "checkpoint"}
        if embed_cache is not None:
            for spec in specs:
                if spec.kind == "imagenet":
                    pretrained[spec.name] = build_initial_encoder(
                        spec, imagenet_conv1=cfg.imagenet_conv1, imagenet_norm=cfg.imagenet_norm
                    )
        embeddings = (
            embed_cache_images(embed_cache, pretrained, seed=cfg.seed, device=str(dev))
            if embed_cache is not None
            else None
        )
        build_report(
            out, reference=reference, out_dir=out / "report", embeddings=embeddings, order=names, seed=cfg.seed
        )
        notify("info", f"report: {out / 'report' / 'tables.md'}")
    return out


def _run_fold(
    spec: InitSpec,
    regime: str,
    cfg: BenchmarkConfig,
    images,
    labels,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    repeat_fold: tuple[int, int],
    store: _FeatureStore,
    device,
):
    """Train and predict one fold of one (init, regime, repeat)."""
    import torch

    encoder_seed, head_seed, order_seed = fold_seeds(cfg.seed, *repeat_fold)
    generator = torch.Generator().manual_seed(order_seed)

    def fresh_encoder():
        torch.manual_seed(encoder_seed)
        return build_initial_encoder(
            spec, imagenet_conv1=cfg.imagenet_conv1, scratch_stem=cfg.scratch_stem, imagenet_norm=cfg.imagenet_norm
        )

    # the protocol's optimisation settings; fine-tuning and linear probing differ only in the rate
    settings = FitSettings(
        lr=cfg.lr if regime == "finetune" else cfg.probe_lr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        step_size=cfg.step_size,
        gamma=cfg.gamma,
        best_epoch=cfg.best_epoch,
        eval_batch_size=cfg.feature_batch_size,
    )
    if regime == "finetune":
        encoder = fresh_encoder()
        torch.manual_seed(head_seed)
        head = make_head(cfg.head)
        return finetune(
            encoder,
            head,
            x_train=images[train],
            y_train=labels[train],
            x_val=images[val],
            y_val=labels[val],
            x_test=images[test],
            settings=settings,
            generator=generator,
            device=device,
        )
    if cfg.probe_path == "features":
        if is_deterministic(spec, cfg.imagenet_conv1):
            features = store.get(
                spec.name, lambda: frozen_features(fresh_encoder(), images, device, cfg.feature_batch_size)
            )
        else:
            features = frozen_features(fresh_encoder(), images, device, cfg.feature_batch_size)
        torch.manual_seed(head_seed)
        return linear_probe_on_features(
            features,
            train=train,
            val=val,
            test=test,
            labels=labels,
            settings=settings,
            generator=generator,
            device=device,
        )
    encoder = fresh_encoder()
    torch.manual_seed(head_seed)
    return linear_probe_epochwise(
        encoder,
        x_train=images[train],
        y_train=labels[train],
        x_val=images[val],
        y_val=labels[val],
        x_test=images[test],
        settings=settings,
        generator=generator,
        device=device,
        bn_mode=cfg.probe_bn,
    )
