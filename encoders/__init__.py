"""Encoders (uint8 camera images + proprioception, or a state vector alone -> features) and augmentation."""
from __future__ import annotations

from encoders.augment import RandomShift, shift_images
from encoders.conv import ConvEncoder, MultiCameraEncoder
from encoders.factory import ENCODERS, build_encoder, count_parameters
from encoders.normalize import StateNormalizer
from encoders.resnet import ResNet18Encoder
from encoders.state import StateEncoder

__all__ = [
    "ENCODERS",
    "ConvEncoder",
    "MultiCameraEncoder",
    "RandomShift",
    "ResNet18Encoder",
    "build_encoder",
    "count_parameters",
    "StateEncoder",
    "StateNormalizer",
    "shift_images",
]
