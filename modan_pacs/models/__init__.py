"""Encoders: torchvision ResNet-18 with one input channel, and projection heads."""

from .encoder import STEMS, build_encoder, encoder_state_dict, load_encoder
from .features import CacheEmbeddings, embed_cache, frozen_features
from .heads import FEATURE_DIM, HEADS, EncoderWithHead, build_head

__all__ = [
    "CacheEmbeddings",
    "FEATURE_DIM",
    "HEADS",
    "STEMS",
    "EncoderWithHead",
    "build_encoder",
    "build_head",
    "embed_cache",
    "encoder_state_dict",
    "frozen_features",
    "load_encoder",
]
