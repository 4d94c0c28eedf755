"""Losses by name: ``build_loss("mulsupcon", temperature=0.07, threshold=0.3)``."""

from __future__ import annotations

import inspect

from torch import nn

from modan_pacs.errors import ConfigError
from modan_pacs.yamlconfig import did_you_mean

from .cross_entropy import CrossEntropyLoss
from .multilabel_supcon import MultiLabelSupConLoss
from .supcon import NTXentLoss, SupConLoss

#: name -> loss class; contrastive losses take ``(features (N, V, D), labels)``, ``cross_entropy`` ``(logits, targets)``
LOSSES: dict[str, type[nn.Module]] = {
    "mulsupcon": MultiLabelSupConLoss,
    "supcon": SupConLoss,
    "ntxent": NTXentLoss,
    "cross_entropy": CrossEntropyLoss,
}

#: losses whose input is a batch of view embeddings (the rest are classification losses)
CONTRASTIVE = frozenset({"mulsupcon", "supcon", "ntxent"})


def _suggest(name: str, choices: list[str]) -> str:
    close = did_you_mean(name, choices)
    return f"did you mean {close!r}? " if close else ""


def build_loss(name: str, **params: object) -> nn.Module:
    """Instantiate the loss ``name`` with its own hyper-parameters.

    Raises:
        ConfigError: unknown loss name, unknown parameter for that loss, or a value out of range.
    """
    if name not in LOSSES:
        raise ConfigError(
            f"loss.name {name!r} is unknown; {_suggest(name, list(LOSSES))}choose one of {sorted(LOSSES)}"
        )
    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in accepted:
            raise ConfigError(
                f"loss.{key} is not a parameter of loss {name!r}; {_suggest(key, accepted)}it accepts {accepted}"
            )
    try:
        return cls(**params)
    except ValueError as exc:
        raise ConfigError(f"loss {name!r}: {exc}") from exc
