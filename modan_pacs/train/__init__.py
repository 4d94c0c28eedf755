"""Stage 6: pretraining (MulSupCon / SupCon / NT-Xent / cross-entropy) with AMP, DDP and exact resume."""

from .config import PretrainConfig, load_config, parse_overrides, resolve_config
from .pretrain import PretrainResult, batch_loss, pretrain
from .profile import ProfileResult, profile_pretrain

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "ProfileResult",
    "batch_loss",
    "load_config",
    "parse_overrides",
    "pretrain",
    "profile_pretrain",
    "resolve_config",
]
