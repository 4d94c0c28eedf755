"""Initialisations compared by the benchmark: pretrained checkpoints, ImageNet, scratch.

Spec strings (CLI ``--init``): ``NAME=PATH`` (an ``encoder.pt`` of ``modan-pacs pretrain``),
``imagenet`` or ``imagenet=PATH`` (torchvision ResNet-18 ImageNet weights from a local file; never
downloaded), ``scratch`` (random). Every encoder maps ``(B, 1, H, W) -> (B, 512)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modan_pacs.errors import InputError

IMAGENET_HINT = (
    "the imagenet initialisation needs torchvision's ResNet-18 ImageNet weights as a local file "
    "(--imagenet-weights FILE or --init imagenet=FILE; e.g. resnet18-f37072fd.pth from "
    "https://download.pytorch.org/models/resnet18-f37072fd.pth); nothing is downloaded"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class InitSpec:
    """One initialisation: its ``name`` (the method folder), ``kind`` and optional file."""

    name: str
    kind: str  # "checkpoint" | "imagenet" | "scratch"
    path: Path | None = None


def parse_init(spec: str, *, imagenet_weights: str | Path | None = None) -> InitSpec:
    """Parse ``NAME=PATH`` / ``imagenet[=PATH]`` / ``scratch``.

    Raises:
        InputError: a bad name, a missing file, or ``imagenet`` with no weights file.
    """
    name, sep, value = spec.partition("=")
    name = name.strip()
    if not _NAME.match(name):
        raise InputError(f"--init {spec!r}: the name must be letters, digits, '.', '_' or '-' (it names a folder)")
    if name == "scratch":
        if sep:
            raise InputError(f"--init {spec!r}: scratch takes no file")
        return InitSpec("scratch", "scratch")
    if name == "imagenet":
        weights = value.strip() if sep else imagenet_weights
        if not weights:
            raise InputError(IMAGENET_HINT)
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: ImageNet weights file not found; {IMAGENET_HINT}")
        return InitSpec("imagenet", "imagenet", path)
    if not sep or not value.strip():
        raise InputError(f"--init {spec!r}: expected NAME=PATH to an encoder.pt, 'imagenet' or 'scratch'")
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        raise InputError(f"--init {spec!r}: encoder file {path} not found")
    return InitSpec(name, "checkpoint", path)


def parse_inits(inits: dict[str, str | Path | None] | list[str], *, imagenet_weights=None) -> list[InitSpec]:
    """Specs from a mapping ``{name: path or None}`` (None for ``scratch``/``imagenet``) or a list of strings.

    Raises:
        InputError: none given, or two with the same name.
    """
    if isinstance(inits, dict):
        items = [name if path is None else f"{name}={path}" for name, path in inits.items()]
    else:
        items = list(inits)
    if not items:
        raise InputError("no initialisation given (e.g. --init modan=runs/modan/encoder.pt --init scratch)")
    specs = [parse_init(item, imagenet_weights=imagenet_weights) for item in items]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"initialisation name(s) given twice: {', '.join(dupes)}")
    return specs


#: torchvision's ImageNet input normalisation (RGB)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fold_imagenet_normalisation(rgb_weight, bn_running_mean):
    """conv1 weight ``(64, 1, k, k)`` and bn1 running mean ``(64,)`` that make a grey ``x`` in
    ``[0, 1]`` act like the normalised three-channel input ``(x - mean_c) / std_c``.

    conv1 (no bias) of the normalised input is ``sum_c W_c * x / std_c - sum_c (mean_c / std_c) sum(W_c)``:
    the weight becomes ``sum_c W_c / std_c`` and the constant per output channel is moved into
    bn1's running mean (``bn1(y - b) = bn1'(y)`` with ``running_mean' = running_mean + b``), which
    is exact in eval mode; in train mode BatchNorm removes a per-channel constant anyway. Exact
    except within ``padding`` pixels of the border, where torchvision pads the normalised image with
    zeros (= the mean grey) and the folded one pads ``x`` with zeros (= black).
    """
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=rgb_weight.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=rgb_weight.dtype).view(1, 3, 1, 1)
    weight = (rgb_weight / std).sum(dim=1, keepdim=True)
    shift = (rgb_weight * (mean / std)).sum(dim=(1, 2, 3))  # (64,): sum_c (mean_c / std_c) sum(W_c)
    return weight, bn_running_mean + shift


def imagenet_encoder(weights: str | Path, *, conv1: str = "sum", norm: str = "fold"):
    """torchvision ResNet-18 with ImageNet weights from ``weights``, made 1-channel.

    Args:
        weights: a torchvision ``resnet18`` state dict file (e.g. ``resnet18-f37072fd.pth``).
        conv1: ``sum`` (the pretrained RGB kernels summed: identical to feeding the gray image as
            three equal channels) or ``random`` (the authors: a new randomly initialised 1-channel conv).
        norm: with ``conv1="sum"``: ``fold`` ImageNet's mean/std into conv1 and bn1
            (:func:`fold_imagenet_normalisation`), or ``none`` (the grey image in [0, 1] as it is).
            A random conv1 has no pretrained input statistics to match; ``norm`` is not used there.

    Raises:
        InputError: unreadable file or not a ResNet-18 state dict.
    """
    import torch
    from torch import nn
    from torchvision.models import resnet18

    path = Path(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a loadable state dict ({exc.__class__.__name__}: {exc})") from exc
    model = resnet18(weights=None)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not torchvision ResNet-18 weights ({str(exc).splitlines()[0]})") from exc
    rgb = model.conv1.weight.detach()
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if norm not in ("fold", "none"):
        raise InputError(f"imagenet_norm must be 'fold' or 'none'; got {norm!r}")
    if conv1 == "sum":
        with torch.no_grad():
            if norm == "fold":
                weight, running_mean = fold_imagenet_normalisation(rgb, model.bn1.running_mean)
                model.conv1.weight.copy_(weight)
                model.bn1.running_mean.copy_(running_mean)
            else:
                model.conv1.weight.copy_(rgb.sum(dim=1, keepdim=True))
    elif conv1 == "random":
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    else:
        raise InputError(f"imagenet_conv1 must be 'sum' or 'random'; got {conv1!r}")
    model.fc = nn.Identity()
    model.stem = "authors"  # torchvision's 7x7 stride-2 stem with max-pool
    return model


def build_initial_encoder(
    spec: InitSpec, *, imagenet_conv1: str = "sum", scratch_stem: str = "paper", imagenet_norm: str = "fold"
):
    """A fresh encoder for ``spec`` (random parts drawn from torch's global generator)."""
    from modan_pacs.models import build_encoder, load_encoder

    if spec.kind == "checkpoint":
        return load_encoder(spec.path)
    if spec.kind == "imagenet":
        return imagenet_encoder(spec.path, conv1=imagenet_conv1, norm=imagenet_norm)
    return build_encoder(scratch_stem)


def is_deterministic(spec: InitSpec, imagenet_conv1: str) -> bool:
    """True when the starting encoder is the same whatever the seed (frozen features can be shared
    by every fold and repeat)."""
    return spec.kind == "checkpoint" or (spec.kind == "imagenet" and imagenet_conv1 == "sum")
