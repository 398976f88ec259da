"""Image encoders (uint8 camera images + proprioception -> features) and augmentation."""
from __future__ import annotations

from encoders.augment import RandomShift, shift_images
from encoders.conv import ConvEncoder, MultiCameraEncoder
from encoders.factory import ENCODERS, build_encoder, count_parameters
from encoders.resnet import ResNet18Encoder

__all__ = [
    "ENCODERS",
    "ConvEncoder",
    "MultiCameraEncoder",
    "RandomShift",
    "ResNet18Encoder",
    "build_encoder",
    "count_parameters",
    "shift_images",
]
