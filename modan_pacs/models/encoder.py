"""One-channel torchvision ResNet-18 encoders (paper and authors' stems).

The encoder maps ``(B, 1, H, W)`` images to ``(B, 512)`` penultimate features (``fc`` is an
``nn.Identity``). Its state dict uses torchvision's key names, so an exported encoder loads into
``torchvision.models.resnet18()`` once ``conv1`` is replaced by a 1-channel convolution of the same
shape (and, for ``paper-nopool``, ``maxpool`` by ``nn.Identity``) with ``strict=False`` for ``fc``.

Stems: ``paper`` follows the paper's text (Sec. 4.3: the first convolution becomes 3x3, stride 1,
one channel, "while keeping the remaining layers unchanged": the max-pool stays); ``authors`` is
the authors' code (torchvision's 7x7 stride-2 convolution and max-pool); ``paper-nopool`` is the
3x3 stem without the max-pool that this project called ``paper`` before 2026-12 (4x the activations
of ``paper`` in every later layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18

from modan_pacs.errors import InputError

#: stem name -> (kernel, stride, padding, keep maxpool)
STEMS: dict[str, tuple[int, int, int, bool]] = {
    "paper": (3, 1, 1, True),  # paper's text: 3x3 conv, stride 1, remaining layers (max-pool) unchanged
    "authors": (7, 2, 3, True),  # authors' code: torchvision's 7x7 stride-2 stem with max-pool
    "paper-nopool": (3, 1, 1, False),  # 3x3 stride 1 without the max-pool (this project before 2026-12)
}


def build_encoder(stem: str = "paper") -> nn.Module:
    """A randomly initialised 1-channel ResNet-18 returning ``(B, 512)`` features.

    Args:
        stem: ``"paper"`` (3x3 conv, stride 1, max-pool kept), ``"authors"`` (7x7, stride 2,
            max-pool) or ``"paper-nopool"`` (3x3, stride 1, no max-pool).

    Raises:
        ValueError: unknown stem name.
    """
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {sorted(STEMS)}")
    kernel, stride, padding, keep_maxpool = STEMS[stem]
    model = resnet18(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=kernel, stride=stride, padding=padding, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if not keep_maxpool:
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.stem = stem  # type: ignore[attr-defined]  # plain attribute, not in the state dict
    return model


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain, torchvision-keyed state dict of an encoder (no ``fc``, tensors on CPU)."""
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def stem_of_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Infer the stem from ``conv1.weight``'s kernel size (3 -> paper, 7 -> authors).

    The weights cannot tell ``paper`` from ``paper-nopool`` (the max-pool has none):
    :func:`load_encoder` reads the run's ``config.yaml`` for that.
    """
    weight = state.get("conv1.weight")
    if weight is None:
        raise InputError("state dict has no 'conv1.weight': not a ResNet-18 encoder")
    if weight.shape[1] != 1:
        raise InputError(f"conv1.weight has {weight.shape[1]} input channels; a 1-channel encoder is expected")
    for name, (kernel, *_rest) in STEMS.items():
        if weight.shape[-1] == kernel:
            return name
    raise InputError(f"conv1.weight has kernel {tuple(weight.shape[-2:])}; expected 3x3 (paper) or 7x7 (authors)")


def _stem_of_config(data: object) -> str | None:
    """``model.stem`` of a run config. A config without a ``labels`` section was written before
    2026-12, when ``paper`` named the stem without max-pool: it reads as ``paper-nopool``."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        return None
    stem = data["model"].get("stem")
    return "paper-nopool" if stem == "paper" and "labels" not in data else stem


def _stem_from_run(path: Path, state: object) -> str | None:
    """``model.stem`` of the run that wrote ``path``: a training checkpoint's own config, else the
    ``config.yaml`` beside ``encoder.pt`` (a ``modan-pacs pretrain`` run folder), else None."""
    import yaml

    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        return _stem_of_config(state["config"])
    for config in (path.parent / "config.yaml", path.parent.parent / "config.yaml"):
        if config.is_file():
            try:
                return _stem_of_config(yaml.safe_load(config.read_text()))
            except yaml.YAMLError:
                return None
    return None


def load_encoder(path: str | Path, stem: str | None = None) -> nn.Module:
    """Load an encoder exported by ``modan-pacs pretrain`` (``encoder.pt``).

    The stem is ``stem`` when given, else the run's (``config.yaml`` beside the file, or the
    checkpoint's config), else inferred from the kernel size (3x3 -> ``paper``, 7x7 -> ``authors``).

    Reads a self-describing ``encoder.pt`` (``{"format": "modan-pacs-encoder", "encoder": state dict,
    "meta": {...}}``), a training checkpoint (its ``encoder`` and ``meta``) or a plain state dict.
    The module's ``meta`` attribute holds the metadata (``{}`` for a plain state dict); see
    :func:`modan_pacs.load_encoder` for run and export folders.

    Raises:
        InputError: the file is missing, is not a plain state dict, or is not a 1-channel ResNet-18,
            or the stem does not fit its first convolution.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: encoder file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise InputError(f"{path}: not a loadable state dict ({exc.__class__.__name__}: {exc})") from exc
    run_stem = _stem_from_run(path, state)
    meta: dict[str, Any] = {}
    if isinstance(state, dict) and "encoder" in state and isinstance(state["encoder"], dict):
        meta = state["meta"] if isinstance(state.get("meta"), dict) else {}
        state = state["encoder"]  # a self-describing encoder.pt or a training checkpoint: take its encoder
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict, got {type(state).__name__}")
    inferred = stem_of_state_dict(state)
    chosen = stem or meta.get("stem") or run_stem or inferred
    if chosen not in STEMS or STEMS[chosen][0] != STEMS[inferred][0]:
        raise InputError(
            f"{path}: stem {chosen!r} does not fit its {STEMS[inferred][0]}x{STEMS[inferred][0]} first convolution"
        )
    model = build_encoder(chosen)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path}: not a ResNet-18 encoder state dict "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    model.meta = meta  # type: ignore[attr-defined]  # the file's metadata ({} for a plain state dict)
    return model
