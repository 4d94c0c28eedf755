"""Encoders: torchvision ResNet-18 with one input channel, and projection heads."""

from .encoder import STEMS, build_encoder, encoder_state_dict, load_encoder

__all__ = ["STEMS", "build_encoder", "encoder_state_dict", "load_encoder"]
