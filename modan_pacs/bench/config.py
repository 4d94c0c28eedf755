"""The benchmark config: one typed schema (pydantic, unknown keys refused), validated once.

Precedence: keyword arguments / CLI options > a YAML file (``--config``) > the shipped
``configs/benchmark.yaml`` (the paper's recipe with the authors' bugs fixed). The authors' own
choices are named values of these fields (``configs/benchmark_authors.yaml`` sets all of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modan_pacs.errors import InputError
from modan_pacs.slice_policy import SLICE_POLICY_FORMS, parse_slice_policy
from modan_pacs.yamlconfig import read_yaml_mapping, validate_model

REGIMES = ("finetune", "linear")
TIRADS_ORDER = ("1", "2", "3", "4a", "4b", "4c", "5")
PLANES = ("axial", "coronal", "sagittal")


class BenchmarkConfig(BaseModel):
    """Every setting of a benchmark run; written as ``<dataset>/config.yaml`` in the run folder."""

    model_config = ConfigDict(extra="forbid")

    # protocol
    repeats: int = Field(10, ge=1)
    """Repeats of the whole k-fold run (only the training randomness changes between repeats)."""
    folds: int = Field(5, ge=2)
    regimes: list[Literal["finetune", "linear"]] = ["finetune", "linear"]
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    """Share of each training part held out (stratified, grouped) to pick the best epoch."""
    seed: int = 0
    """Seeds the partition, the inner validation splits and every fold's training."""

    # recipe (paper, Table 3)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=2)
    image_size: int = Field(224, ge=8)
    lr: float = Field(1e-4, gt=0)
    """Adam learning rate (paper: 1e-4 for both regimes)."""
    linear_lr: float | None = Field(None, gt=0)
    """Adam learning rate of linear probing; None = ``lr`` (authors' code: 1e-3)."""
    step_size: int = Field(5, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)

    # the authors' bugs, fixed by default; their behaviour as named options
    head: Literal["linear", "identity"] = "linear"
    """Fine-tuning head: a real 512->2 linear layer, or ``identity`` (authors, bug 1: cross-entropy
    over the 512 raw features, scored by softmax(512)[:, 1])."""
    best_epoch: Literal["deep-copy", "last"] = "deep-copy"
    """Model kept: the best epoch by validation loss (deep copy), or ``last`` (authors, bug 2)."""
    probe_bn: Literal["eval", "train"] = "eval"
    """BatchNorm of the frozen encoder during probing: ``eval`` or ``train`` (authors, bug 3)."""
    probe_path: Literal["features", "epochwise"] = "features"
    """Linear probing: features computed once per encoder (fast path), or a frozen forward pass
    every epoch (needed for ``probe_bn: train``)."""
    imagenet_conv1: Literal["sum", "random"] = "sum"
    """ImageNet init: RGB kernels summed into one channel, or ``random`` new conv1 (authors, bug 4)."""
    imagenet_norm: Literal["fold", "none"] = "fold"
    """ImageNet init with summed conv1: ``fold`` ImageNet's per-channel mean/std into conv1 and
    bn1's running mean (a grey image in [0, 1] is then seen as the normalised RGB image torchvision's
    weights were trained on), or ``none`` (the [0, 1] grey image as it is; before 2026-12)."""
    scratch_stem: Literal["paper", "authors", "paper-nopool"] = "paper"
    """Stem of the ``scratch`` encoder (paper 3x3 stride 1, or torchvision's 7x7 stride 2 + max-pool)."""

    # grouping (leak-free folds)
    near_duplicates: bool = True
    """Group near-duplicate images (same scene, adjacent frames); false = only case ids and
    identical files group (before 2026-12)."""
    near_duplicate_threshold: float = Field(0.93, gt=0, le=1)
    """Images whose z-scored thumbnails correlate at least this much are near-duplicates."""
    near_duplicate_size: int = Field(32, ge=4, le=256)
    """Thumbnail side of the near-duplicate test."""
    discordant_duplicates: Literal["keep", "drop"] = "keep"
    """Identical or near-duplicate pairs with different labels: ``keep`` (listed, grouped) or ``drop`` both images."""

    # datasets
    breast_normal: Literal["negative", "drop"] = "negative"
    """breast: BUSI's normal images as class 0 (the paper's 779 images), or ``drop`` them."""
    tirads_cutoff: str = "4a"
    """thyroid: TI-RADS at or above which a nodule is malignant (2, 3, 4a, 4b, 4c, 5)."""
    ddti_crop: bool = False
    """thyroid, original DDTI layout: crop each image to its annotated nodule's bounding box."""
    plane: Literal["axial", "coronal", "sagittal"] = "sagittal"
    """acl: MRNet plane."""
    slice_policy: str = "middle"
    """acl: ``middle`` (one central slice per exam), ``center:K`` (K central slices), ``even:N`` (N spread
    slices) or ``all`` (grammar: :mod:`modan_pacs.slice_policy`)."""
    positive_label: str | None = None
    """csv: the label value meaning class 1 when labels are not 0/1."""
    subsample: int | None = Field(None, ge=10)
    """Use a stratified random subset of this many images (quick trials)."""
    feature_batch_size: int = Field(128, ge=1)
    """Batch size of feature extraction and prediction (memory only; results do not depend on it)."""

    @field_validator("tirads_cutoff", mode="before")
    @classmethod
    def _tirads(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in TIRADS_ORDER[1:]:
            raise ValueError(f"tirads_cutoff must be one of {', '.join(TIRADS_ORDER[1:])}; got {value!r}")
        return text

    @field_validator("slice_policy")
    @classmethod
    def _slices(cls, value: str) -> str:
        try:
            parse_slice_policy(value)
        except InputError:
            raise ValueError(f"slice_policy must be one of: {SLICE_POLICY_FORMS}; got {value!r}") from None
        return value

    @field_validator("regimes")
    @classmethod
    def _regimes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one regime (finetune, linear) is needed")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkConfig:
        if self.probe_bn == "train" and self.probe_path == "features":
            raise ValueError(
                "probe_bn: train changes the encoder's statistics every batch; it needs probe_path: epochwise"
            )
        return self

    @property
    def probe_lr(self) -> float:
        return self.linear_lr if self.linear_lr is not None else self.lr


#: fields that change the numbers a finished fold holds (a resumed run must agree on them)
RESULT_FIELDS: tuple[str, ...] = (
    "folds",
    "val_fraction",
    "seed",
    "epochs",
    "batch_size",
    "image_size",
    "lr",
    "linear_lr",
    "step_size",
    "gamma",
    "head",
    "best_epoch",
    "probe_bn",
    "imagenet_conv1",
    "imagenet_norm",
    "scratch_stem",
    "tirads_cutoff",
    "near_duplicates",
    "near_duplicate_threshold",
    "near_duplicate_size",
    "discordant_duplicates",
    "breast_normal",
    "ddti_crop",
    "plane",
    "slice_policy",
    "positive_label",
    "subsample",
)


def load_benchmark_config(path: str | Path | None = None, **overrides: Any) -> BenchmarkConfig:
    """Shipped defaults < ``path`` (YAML) < ``overrides`` (None values are ignored).

    Raises:
        InputError: ``path`` is neither a file nor the name of a shipped config.
        ConfigError: unreadable file, unknown key (with a suggestion) or invalid value
            (:mod:`modan_pacs.yamlconfig` formats them).
    """
    from modan_pacs.paths import config_path

    data = read_yaml_mapping(config_path("benchmark.yaml"), what="benchmark")
    source = "benchmark.yaml"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            try:
                path = config_path(str(path))  # a shipped name such as benchmark_authors.yaml
            except FileNotFoundError:
                pass  # read_yaml_mapping names the missing file
        data.update(read_yaml_mapping(path, what="benchmark"))
        source = str(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_model(BenchmarkConfig, data, source, what="benchmark")
