"""Build an encoder by name (the config's `encoder` field)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from encoders.conv import ConvEncoder, MultiCameraEncoder
from encoders.resnet import ResNet18Encoder

ENCODERS: dict[str, Callable[..., MultiCameraEncoder]] = {
    "conv": ConvEncoder,
    "resnet18": ResNet18Encoder,
}


def build_encoder(
    kind: str,
    image_keys: Sequence[str],
    image_shape: tuple[int, int, int],
    proprio_dim: int,
    **kwargs: Any,
) -> MultiCameraEncoder:
    """`kind` in ENCODERS; kwargs go to its constructor (e.g. strides, feature_dim)."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; valid kinds: {sorted(ENCODERS)}")
    return ENCODERS[kind](image_keys, tuple(image_shape), proprio_dim, **kwargs)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
