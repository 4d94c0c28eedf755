"""The pretraining config: one typed schema, validated once.

Precedence: ``key=value`` overrides (CLI) > the YAML file > the defaults below. Unknown or
misspelt keys are errors with a "did you mean" suggestion; each component gets only its own
section (``build_loss(**cfg.loss)``, ``build_head(cfg.model.head)``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modan_pacs.errors import ConfigError
from modan_pacs.yamlconfig import format_validation_error, primary_error, read_yaml_mapping


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    stem: Literal["paper", "authors", "paper-nopool"] = "paper"
    """``paper``: 3x3 stride-1 first conv, max-pool kept (the paper's text); ``authors``: 7x7 stride 2 with
    max-pool (their code); ``paper-nopool``: 3x3 stride 1 without max-pool (this project before 2026-12)."""
    head: Literal["none", "linear", "mlp"] = "linear"
    """Embedding head the contrastive loss sees: ``linear`` 512->1000 (the authors' code: torchvision's
    ``fc``; signed), ``mlp`` 512->2048->ReLU->128 (SimCLR's projection), or ``none`` (the 512-d
    post-ReLU features, all cosines >= 0). Downstream always uses the 512-d pooled features. With
    loss ``cross_entropy`` a 512 -> n_classes classifier is the head and this field is not used."""
    sync_batchnorm: bool = False
    """Under DDP, convert BatchNorm to SyncBatchNorm (global-batch statistics)."""


class LossConfig(BaseModel):
    """``name`` plus that loss's own parameters (checked against the loss, e.g. ``temperature``)."""

    model_config = ConfigDict(extra="allow")
    name: str = "mulsupcon"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _buildable(self) -> LossConfig:
        from modan_pacs.losses import build_loss

        build_loss(self.name, **self.params)  # ConfigError names the bad key
        return self


class SupervisedConfig(_Section):
    label_group: str | None = None
    """Cross-entropy target: the class is the argmax of this label group's columns (e.g. ``anatomy``)."""
    column: str | None = None
    """Alternative target: a column of the cache manifest (e.g. ``target`` for miniRIN165)."""

    @model_validator(mode="after")
    def _one_target(self) -> SupervisedConfig:
        if self.label_group is not None and self.column is not None:
            raise ValueError("give supervised.label_group or supervised.column, not both")
        return self


class LabelsConfig(_Section):
    unknown_anatomy: Literal["distinct", "match", "drop"] = "distinct"
    """An image whose header names no anatomy: ``distinct`` (its unknown anatomy matches no other
    image's), ``match`` (all unknowns of a modality are one class: Jaccard 1.0), ``drop`` (left out).
    See :mod:`modan_pacs.train.targets`."""
    anatomy_group: str = "anatomy"
    """The label group ``unknown_anatomy`` is about."""


class OptimizerConfig(_Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(_Section):
    name: Literal["step", "cosine", "constant"] = "step"
    warmup_epochs: float = Field(3, ge=0)
    """Linear warm-up length in epochs (may be fractional); updated every iteration."""
    warmup_start_lr: float = Field(0.01, ge=0)
    milestones: list[int] = [700, 800, 900]
    """Epochs after which the step schedule multiplies the rate by ``gamma``."""
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0)
    """Final rate of the cosine schedule."""


class DataConfig(_Section):
    size: int = Field(224, ge=8)
    """Side of the square augmented views."""
    workers: int = Field(0, ge=0)
    """DataLoader worker processes (0 = in the main process)."""
    view_dtype: Literal["uint8", "float32"] = "uint8"
    """Dtype of the views the workers hand over: uint8 (a quarter of the bytes, float32 ``x / 255``
    made on the device; within half a grey level of the float views) or float32."""
    augment_on: Literal["cpu", "device"] = "cpu"
    """Where the two-view augmentation runs: ``cpu`` = per sample in the DataLoader workers;
    ``device`` = the workers hand over the cached uint8 images (and each sample's random numbers)
    and the crop, flip and jitter run
    batched on the training device (same distributions, seeded per ``(seed, epoch, row)``)."""


class TrainConfig(_Section):
    epochs: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=2)
    """GLOBAL batch (images); under DDP each of W processes loads ``batch_size / W``."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """Mixed precision (autocast). ``auto``: on CUDA bf16 where supported, else fp16 with a
    GradScaler; off on the CPU. ``bf16`` / ``fp16``: on every device, the CPU included."""
    channels_last: Literal["auto"] | bool = "auto"
    """channels-last memory format of the model and its inputs: ``auto`` = on CUDA only;
    ``true`` / ``false`` on every device."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (on every device; inductor builds C++ kernels on the CPU)."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the gradient norm to this value (None = no clipping)."""
    log_every: int = Field(10, ge=1)
    """Steps between TensorBoard scalar writes."""

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class PretrainConfig(_Section):
    """Everything a pretraining run needs; written back as ``config.yaml`` in the run folder."""

    seed: int = 0
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    supervised: SupervisedConfig = SupervisedConfig()
    labels: LabelsConfig = LabelsConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _consistent(self) -> PretrainConfig:
        from modan_pacs.losses import CONTRASTIVE

        has_target = self.supervised.label_group is not None or self.supervised.column is not None
        if self.loss.name in CONTRASTIVE and has_target:
            raise ValueError(f"supervised.* is only used with loss 'cross_entropy', not {self.loss.name!r}")
        if self.loss.name not in CONTRASTIVE and not has_target:
            raise ValueError(
                "loss 'cross_entropy' needs a target: set supervised.label_group (e.g. anatomy) or supervised.column"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["loss"] = {"name": self.loss.name, **self.loss.params}
        return data


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["train.epochs=2", "loss.temperature=0.1"]`` -> nested dict (values parsed as YAML scalars)."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.epochs=10)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override {item!r}: value is not a YAML scalar or list ({str(exc).splitlines()[0]})"
            ) from None
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _blamed_override(loc: tuple[Any, ...], overrides: list[str] | None) -> str | None:
    """The override that set the key at ``loc`` (or a key inside it), if one did: errors there are its fault."""
    key = ".".join(str(p) for p in loc)
    if not key:
        return None
    for item in reversed(overrides or []):
        name = item.partition("=")[0].strip()
        if name == key or name.startswith(key + ".") or key.startswith(name + "."):
            return item
    return None


def value_sources(data: dict[str, Any] | None, overrides: list[str] | None, cfg: PretrainConfig) -> dict[str, str]:
    """Where each resolved value came from:
    ``{"train.epochs": "override", "seed": "file", "data.size": "default", ...}``."""
    from_file = set(flatten_config(data or {}))
    from_override = set(flatten_config(parse_overrides(overrides)))
    return {
        key: "override" if key in from_override else "file" if key in from_file else "default"
        for key in flatten_config(cfg.to_dict())
    }


def flatten_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def find_config_file(path: str | Path | None) -> Path:
    """A config path as given if it exists, else a shipped config by bare name (``pretrain_tiny`` or
    ``pretrain_tiny.yaml``) from any folder; ``None`` = shipped ``pretrain_modan.yaml``.

    Raises:
        ConfigError: neither a file nor a shipped name (the shipped names are listed).
    """
    from modan_pacs.paths import config_path

    if path is None:
        return config_path("pretrain_modan.yaml")
    path = Path(path)
    if path.is_file():
        return path
    if path.parent == Path("."):
        for name in (path.name, f"{path.name}.yaml"):
            try:
                return config_path(name)
            except FileNotFoundError:
                continue
    shipped = sorted(p.stem for p in config_path("pretrain_modan.yaml").parent.glob("pretrain_*.yaml"))
    raise ConfigError(f"{path}: config file not found (nor a shipped config; shipped: {', '.join(shipped)})")


def read_config_file(path: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """(path, mapping) of a pretraining YAML found by :func:`find_config_file`
    (read by :func:`modan_pacs.yamlconfig.read_yaml_mapping`).

    Raises:
        ConfigError: not found, unreadable, not valid YAML, or not a mapping.
    """
    path = find_config_file(path)
    return path, read_yaml_mapping(path, what="config")


def resolve_config(
    data: dict[str, Any] | None = None, overrides: list[str] | None = None, source: str = "config"
) -> PretrainConfig:
    """Validate ``data`` (a YAML mapping) with ``overrides`` applied on top."""
    merged = _merge(data or {}, parse_overrides(overrides))
    try:
        return PretrainConfig.model_validate(merged)
    except ValidationError as exc:  # one formatter for every config file; the reported error's key picks the blame
        blamed = _blamed_override(tuple(primary_error(exc)["loc"]), overrides)
        raise format_validation_error(exc, PretrainConfig, f"override {blamed!r}" if blamed else source) from None
    except ConfigError as exc:  # raised by a loss's own parameter check
        blamed = _blamed_override(("loss",), overrides)
        raise ConfigError(f"{f'override {blamed!r}' if blamed else source}: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PretrainConfig:
    """Read a pretraining YAML (a path, a shipped name such as ``pretrain_tiny``, or ``None`` =
    shipped ``pretrain_modan.yaml``) and apply overrides.

    Raises:
        ConfigError: config not found, unreadable YAML, unknown keys (with a suggestion), bad values
            (blamed on the override that set them, else on the file).
    """
    path, data = read_config_file(path)
    return resolve_config(data, overrides, source=str(path))
