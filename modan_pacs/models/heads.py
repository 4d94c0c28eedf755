"""Projection / classification heads on top of the 512-d ResNet-18 features.

- ``linear`` (the pretraining default, every method): 512 -> 1000, like the authors' code
  (torchvision's ``fc`` output fed to the loss): a signed embedding, so a negative pair can reach
  cosine -1.
- ``mlp``: 512 -> 2048 -> ReLU -> 128, like the authors' SimCLR.
- ``none``: the loss sees the 512-d penultimate features, which follow a ReLU and average pool:
  every cosine is >= 0, negatives can at best be made orthogonal (this project's default before 2026-12).
- ``classifier``: 512 -> number of classes (supervised baseline).

The paper's text does not state the embedding the loss sees; the head is dropped after
pretraining and downstream tasks always use the 512-d pooled features.
"""

from __future__ import annotations

import torch
from torch import nn

from modan_pacs.errors import ConfigError
from modan_pacs.yamlconfig import did_you_mean

FEATURE_DIM = 512

#: head name -> short description (``classifier`` needs ``out_dim``)
HEADS: dict[str, str] = {
    "none": "identity: the 512-d encoder features",
    "linear": "Linear 512 -> 1000 (authors' code)",
    "mlp": "Linear 512 -> 2048, ReLU, Linear 2048 -> 128 (authors' SimCLR)",
    "classifier": "Linear 512 -> n_classes (supervised baseline)",
}


def build_head(name: str, in_dim: int = FEATURE_DIM, out_dim: int | None = None) -> nn.Module:
    """A head by name.

    Args:
        name: one of :data:`HEADS`.
        in_dim: encoder feature size (512 for ResNet-18).
        out_dim: output size; required for ``classifier``, optional override for ``linear`` (1000)
            and ``mlp`` (128); not allowed for ``none``.

    Raises:
        ConfigError: unknown name or a missing / impossible ``out_dim``.
    """
    if name not in HEADS:
        close = did_you_mean(name, HEADS)
        hint = f"did you mean {close!r}? " if close else ""
        raise ConfigError(f"model.head {name!r} is unknown; {hint}choose one of {sorted(HEADS)}")
    if out_dim is not None and (not isinstance(out_dim, int) or out_dim < 1):
        raise ConfigError(f"head output size must be a positive integer, got {out_dim!r}")
    if name == "none":
        if out_dim is not None:
            raise ConfigError("model.head 'none' has no output size; use head 'linear' or 'mlp' to set one")
        return nn.Identity()
    if name == "linear":
        return nn.Linear(in_dim, out_dim or 1000)
    if name == "mlp":
        return nn.Sequential(nn.Linear(in_dim, 2048), nn.ReLU(inplace=True), nn.Linear(2048, out_dim or 128))
    if out_dim is None or out_dim < 2:
        raise ConfigError(f"a classifier head needs at least 2 classes, got {out_dim!r}")
    return nn.Linear(in_dim, out_dim)


class EncoderWithHead(nn.Module):
    """``encoder`` (``(B, 1, H, W) -> (B, 512)``) followed by ``head``; the trained object of pretraining.

    Its state dict is ``encoder.*`` and ``head.*``; export only the encoder with
    :func:`modan_pacs.models.encoder_state_dict` applied to ``model.encoder``.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W) -> (B, D_head)``."""
        return self.head(self.encoder(images))
