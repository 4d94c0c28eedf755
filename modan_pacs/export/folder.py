"""Write and read an export folder (Hugging Face model layout) of a pretrained encoder.

Layout of ``OUT/``:

- ``model.safetensors``: the encoder's state dict (torchvision / timm key names, no ``fc``), 1 input
  channel. For the authors' stem it loads unchanged into ``timm.create_model("resnet18",
  in_chans=1, num_classes=0)`` and into ``torchvision.models.resnet18()`` whose ``conv1`` is a
  1-channel 7x7 convolution and ``fc`` an ``nn.Identity``.
- ``config.json``: timm-style fields (``architecture``, ``in_chans``, ``num_features``,
  ``pretrained_cfg``) and the encoder's full metadata under ``modan_pacs``.
- ``README.md``: the model card (:mod:`modan_pacs.export.card`).
- ``encoder.pt2``: a ``torch.export`` program (``torch.export.load(path).module()``), batch and
  image side dynamic; needs torch alone.
- authors' stem only: ``torchvision_resnet18_rgb.safetensors``: the same weights for an unmodified
  ``torchvision.models.resnet18()`` (``fc = nn.Identity()``), ``conv1`` spread over three equal
  channels (each kernel / 3), so a grey image repeated on 3 channels gives the same features.
- with ``monai_bundle``: ``monai_bundle/`` (:mod:`modan_pacs.export.monai_bundle`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modan_pacs.errors import InputError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PROGRAM_NAME = "encoder.pt2"
TORCHVISION_RGB_NAME = "torchvision_resnet18_rgb.safetensors"
META_FILE_IN_PROGRAM = "modan_pacs_meta.json"


@dataclass
class ExportResult:
    """What :func:`export_encoder` wrote."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def find_encoder(path: str | Path) -> tuple[str, Path]:
    """``("file", encoder file)`` for an ``encoder.pt`` / checkpoint or a run folder, ``("export", folder)``
    for an export folder.

    Raises:
        InputError: the path does not exist or holds neither.
    """
    path = Path(path)
    if path.is_file():
        return "file", path
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file():
            return "export", path
        if (path / "encoder.pt").is_file():
            return "file", path / "encoder.pt"
        if (path / "checkpoints" / "last.pt").is_file():
            raise InputError(
                f"{path}: no encoder.pt yet (an unfinished run?); load {path / 'checkpoints' / 'last.pt'} explicitly"
            )
        raise InputError(
            f"{path}: neither a run folder (encoder.pt) nor an export folder ({WEIGHTS_NAME} + {CONFIG_NAME})"
        )
    raise InputError(f"{path}: no such encoder file or folder")


def read_export_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, metadata) of an export folder.

    Raises:
        InputError: unreadable ``config.json`` or ``model.safetensors``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path / CONFIG_NAME}: unreadable ({exc.__class__.__name__}: {exc})") from None
    try:
        state = load_file(path / WEIGHTS_NAME)
    except (OSError, SafetensorError) as exc:
        raise InputError(f"{path / WEIGHTS_NAME}: unreadable ({exc.__class__.__name__}: {exc})") from None
    meta = config.get("modan_pacs") if isinstance(config, dict) else None
    return state, meta if isinstance(meta, dict) else {}


def encoder_from_state(state: dict[str, Any], meta: dict[str, Any], *, source: str):
    """A 1-channel ResNet-18 encoder with ``state`` loaded: the stem named by ``meta`` (the weights
    cannot tell stems that differ only in the max-pool apart), else inferred from ``conv1``.

    Raises:
        InputError: an unknown stem, or weights that do not fit it.
    """
    from modan_pacs.models.encoder import STEMS, build_encoder, stem_of_state_dict

    try:
        inferred = stem_of_state_dict(state)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    stem = meta.get("stem") or inferred
    if stem not in STEMS or STEMS[stem][0] != STEMS[inferred][0]:
        raise InputError(
            f"{source}: stem {stem!r} does not fit its {STEMS[inferred][0]}x{STEMS[inferred][0]} first convolution"
        )
    model = build_encoder(stem)
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False
    )
    if missing or unexpected:
        raise InputError(
            f"{source}: not a ResNet-18 encoder (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return model


def load_encoder(path: str | Path):
    """A ready encoder (``nn.Module`` in eval mode, ``(B, 1, H, W) -> (B, 512)``) from an
    ``encoder.pt`` (or training checkpoint), a run folder, an export folder, or an export's
    ``model.safetensors`` or ``encoder.pt2`` (the latter a ``torch.export`` module, always in eval mode).

    The module's ``meta`` attribute holds the metadata (stem, input size, intensity scaling,
    label vocabulary and counts, config, code version); ``{}`` for encoders written before it existed.

    Raises:
        InputError: missing path, unreadable file, or not a 1-channel ResNet-18.
    """
    from modan_pacs.models import load_encoder as load_encoder_file

    kind, found = find_encoder(path)
    if kind == "file" and found.suffix == ".pt2":
        return _load_program(found)
    if kind == "file" and found.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(found)
        except (OSError, SafetensorError) as exc:
            raise InputError(f"{found}: unreadable ({exc.__class__.__name__}: {exc})") from None
        meta = read_export_folder(found.parent)[1] if (found.parent / CONFIG_NAME).is_file() else {}
        model = encoder_from_state(state, meta, source=str(found))
    elif kind == "file":
        return load_encoder_file(found).eval()
    else:
        state, meta = read_export_folder(found)
        model = encoder_from_state(state, meta, source=str(found / WEIGHTS_NAME))
    model.meta = meta
    return model.eval()


def _load_program(path: Path):
    """The module of a ``torch.export`` program with its metadata as ``meta``."""
    import torch

    extra = {META_FILE_IN_PROGRAM: ""}
    try:
        module = torch.export.load(path, extra_files=extra).module()
    except Exception as exc:  # torch.export raises many types for a foreign or truncated file
        raise InputError(
            f"{path}: not a torch.export program ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from None
    module.meta = json.loads(extra[META_FILE_IN_PROGRAM]) if extra[META_FILE_IN_PROGRAM] else {}
    return module


def complete_metadata(model, run_dir: Path | None) -> dict[str, Any]:  # noqa: ANN001
    """The loaded encoder's ``meta`` when present; for an encoder written before encoders carried
    metadata, what can still be known: its stem and the run's ``config.yaml`` if beside it."""
    if model.meta:
        return model.meta
    import yaml

    from modan_pacs.train.checkpoint import INTENSITY, stem_detail

    config = None
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = config if isinstance(config, dict) else None
    return {
        "architecture": "resnet18",
        "stem": model.stem,
        "stem_detail": stem_detail(model.stem),
        "in_channels": 1,
        "input_size": int(config["data"]["size"]) if config and "size" in config.get("data", {}) else None,
        "feature_dim": 512,
        "intensity": dict(INTENSITY),
        "method": {"loss": config["loss"]["name"], "head": config["model"]["head"]} if config else None,
        "labels": None,
        "config": config,
        "code_version": None,
        "note": "written from an encoder file without metadata: training data and code version unknown",
    }


def torchvision_rgb_state(state: dict[str, Any]) -> dict[str, Any]:
    """The 1-channel state dict with ``conv1`` spread over 3 equal channels (kernel / 3): an
    unmodified ``torchvision.models.resnet18()`` fed the grey image on 3 channels gives the same features."""
    out = {k: v.clone().contiguous() for k, v in state.items()}
    weight = state["conv1.weight"]
    out["conv1.weight"] = (weight / 3.0).expand(-1, 3, -1, -1).contiguous()
    return out


def _hf_config(meta: dict[str, Any], files: list[str]) -> dict[str, Any]:
    size = meta.get("input_size") or 224
    return {
        "architecture": "resnet18",
        "model_type": "resnet",
        "library_name": "modan-pacs",
        "stem": meta["stem"],
        "in_chans": 1,
        "num_classes": 0,
        "num_features": int(meta.get("feature_dim", 512)),
        "pretrained_cfg": {
            "input_size": [1, int(size), int(size)],
            "interpolation": "bilinear",
            "mean": [0.0],
            "std": [1.0],
            "num_classes": 0,
            "first_conv": "conv1",
            "classifier": "fc",
        },
        "files": files,
        "program_input": {"batch": "any", "side": program_side(meta)},
        "modan_pacs": meta,
    }


def total_stride(stem: str) -> int:
    """Downsampling from the input to ``layer4`` (e.g. 32 for the authors' stem: stride 2, max-pool 2, layers 8)."""
    from modan_pacs.models.encoder import STEMS

    _kernel, stride, _padding, maxpool = STEMS[stem]
    return stride * (2 if maxpool else 1) * 8


def program_side(meta: dict[str, Any]) -> str:
    """Image sides the ``torch.export`` program accepts: any side whose ``layer4`` map is larger than
    1x1 when the training side is (the trace specialises a 1x1 map), else the training side only."""
    size = int(meta.get("input_size") or 224)
    minimum = total_stride(meta["stem"]) + 1
    return f"any side >= {minimum}" if size >= minimum else f"{size} only"


def _export_program(model, meta: dict[str, Any], path: Path) -> None:
    import torch
    from torch.export import Dim

    size = int(meta.get("input_size") or 224)
    dims = {0: Dim("batch", min=1, max=65536)}
    if size > total_stride(meta["stem"]):
        dims.update({2: Dim.AUTO, 3: Dim.AUTO})
    example = torch.rand(2, 1, size, size)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes={"x": dims})
    except Exception as exc:  # torch.export raises many types; the message is what matters
        raise InputError(
            f"torch.export failed for this encoder ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from None
    torch.export.save(program, path, extra_files={META_FILE_IN_PROGRAM: json.dumps(meta)})


def export_encoder(
    run: str | Path,
    out_dir: str | Path,
    *,
    report: str | Path | None = None,
    program: bool = True,
    monai_bundle: bool = False,
) -> ExportResult:
    """Write an export folder (see the module docstring) for a run folder or an ``encoder.pt``.

    Args:
        run: a run folder of ``modan-pacs pretrain`` (its ``encoder.pt``), or an encoder file.
        out_dir: the export folder (created; files of the same names are replaced).
        report: a report folder (``tables.csv``), a benchmark run folder (``report/tables.csv``) or
            a ``tables.csv``; its downstream results go into the model card.
        program: also write ``encoder.pt2`` (``torch.export``).
        monai_bundle: also write ``monai_bundle/`` (:mod:`modan_pacs.export.monai_bundle`).

    Raises:
        InputError: no encoder at ``run``, an unreadable encoder or report, or an export failure.
    """
    from safetensors.torch import save_file

    from modan_pacs.models import encoder_state_dict
    from modan_pacs.models import load_encoder as load_encoder_file

    from .card import read_report_rows, render_model_card
    from .monai_bundle import BUNDLE_DIR, write_monai_bundle

    kind, found = find_encoder(run)
    if kind == "export":
        raise InputError(f"{run}: already an export folder; export a run folder or an encoder.pt")
    model = load_encoder_file(found).eval()
    state = encoder_state_dict(model)
    meta = complete_metadata(model, found.parent)
    rows = read_report_rows(report) if report is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in state.items() if not k.startswith("fc.")}
    written = [out / WEIGHTS_NAME]
    save_file(state, out / WEIGHTS_NAME, metadata={"format": "pt"})
    if meta["stem"] == "authors":
        save_file(torchvision_rgb_state(state), out / TORCHVISION_RGB_NAME, metadata={"format": "pt"})
        written.append(out / TORCHVISION_RGB_NAME)
    if program:
        _export_program(model, meta, out / PROGRAM_NAME)
        written.append(out / PROGRAM_NAME)
    names = [p.name for p in written] + [CONFIG_NAME, CARD_NAME]
    (out / CONFIG_NAME).write_text(json.dumps(_hf_config(meta, names), indent=2) + "\n")
    card = render_model_card(meta, files=names + ([f"{BUNDLE_DIR}/"] if monai_bundle else []), report_rows=rows)
    (out / CARD_NAME).write_text(card)
    written += [out / CONFIG_NAME, out / CARD_NAME]
    if monai_bundle:
        written += write_monai_bundle(out, state, meta, card)
    return ExportResult(out_dir=out, files=written, meta=meta)
