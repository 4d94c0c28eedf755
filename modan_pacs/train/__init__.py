"""Stage 6: pretraining (MulSupCon / SupCon / NT-Xent / cross-entropy) with AMP, DDP and exact resume."""

from .config import PretrainConfig, load_config, parse_overrides, resolve_config
from .pretrain import PretrainResult, batch_loss, pretrain

__all__ = ["PretrainConfig", "PretrainResult", "batch_loss", "load_config", "parse_overrides", "pretrain", "resolve_config"]
