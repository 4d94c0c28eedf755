"""Atomic checkpoints that load with ``torch.load(weights_only=True)``, and RNG state capture."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modan_pacs.errors import InputError
from modan_pacs.fileio import atomic_write

FORMAT_VERSION = 1
#: ``format`` of a self-describing encoder file: ``{"format", "format_version", "encoder", "meta"}``
ENCODER_FORMAT = "modan-pacs-encoder"
ENCODER_FORMAT_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and CUDA) as tensors / numbers / lists only."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`modan_pacs.fileio.atomic_write` (a temporary file, then
    ``os.replace``): a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``).

    Raises:
        InputError: missing, unreadable, or not a modan-pacs training checkpoint.
    """
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from (run without --resume to start)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"{path}: unreadable checkpoint ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION or "model" not in ckpt:
        raise InputError(f"{path}: not a modan-pacs pretraining checkpoint (format {FORMAT_VERSION})")
    return ckpt


#: how the encoder expects its input (written into every encoder's metadata and model card)
INTENSITY = {
    "input": "float32 (B, 1, H, W) in [0, 1]",
    "from_uint8": "x / 255",
    "normalisation": "none (no mean/std subtraction)",
    "display_mapping": (
        "CT: a window per anatomy (modan_pacs.pixels.windows); others: the header's VOI LUT or first window, "
        "else the full stored range (<= 8 bits) or the image's min..max; MONOCHROME1 inverted; colour -> BT.601 luma"
    ),
}


def _git(*args: str) -> str | None:
    """Output of ``git -C REPO_ROOT ARGS`` in a git checkout, else None (no checkout, no git)."""
    import subprocess

    from modan_pacs.paths import REPO_ROOT

    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """The package version and, in a git checkout, the commit and whether tracked files differ from it
    (``git_commit`` None when not a checkout or git is absent)."""
    from modan_pacs import __version__

    commit = _git("rev-parse", "HEAD") or None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"package": __version__, "git_commit": commit, "dirty": bool(status) if commit else None}


def stem_detail(stem: str) -> str:
    """``"conv1 7x7 stride 2 padding 3, with max-pool"``."""
    from modan_pacs.models.encoder import STEMS

    kernel, stride, padding, maxpool = STEMS[stem]
    return f"conv1 {kernel}x{kernel} stride {stride} padding {padding}, {'with' if maxpool else 'no'} max-pool"


def encoder_metadata(
    config: dict[str, Any], *, label_names: list[str], label_counts: list[int], n_images: int, epochs_done: int
) -> dict[str, Any]:
    """What an encoder file says about itself; plain types only, so it loads with ``weights_only=True``.

    Args:
        config: the resolved pretraining config (``PretrainConfig.to_dict()``).
        label_names: the multi-hot columns of the training cache (``modality:CT``, ``anatomy:brain``, ...).
        label_counts: training images carrying each label, same order.
        n_images: images in the training cache.
        epochs_done: epochs trained so far.
    """
    stem = config["model"]["stem"]
    return {
        "architecture": "resnet18",
        "stem": stem,
        "stem_detail": stem_detail(stem),
        "in_channels": 1,
        "input_size": int(config["data"]["size"]),
        "feature_dim": 512,
        "intensity": dict(INTENSITY),
        "method": {"loss": config["loss"]["name"], "head": config["model"]["head"]},
        "labels": {"names": list(label_names), "counts": [int(c) for c in label_counts], "n_images": int(n_images)},
        "epochs_done": int(epochs_done),
        "config": copy_plain(config),
        "code_version": code_version(),
    }


def copy_plain(value: Any) -> Any:
    """A deep copy made of dict / list / str / int / float / bool / None only (tuples become lists).

    Raises:
        TypeError: a value of another type (it would not load with ``weights_only=True``).
    """
    if isinstance(value, dict):
        return {str(k): copy_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not a plain type")


def encoder_file(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The content of a self-describing ``encoder.pt`` (read by :func:`modan_pacs.models.load_encoder`);
    ``config`` repeats ``meta["config"]`` at the top level, where training checkpoints keep theirs."""
    meta = copy_plain(meta)
    return {
        "format": ENCODER_FORMAT,
        "format_version": ENCODER_FORMAT_VERSION,
        "encoder": state,
        "meta": meta,
        "config": meta.get("config"),
    }
