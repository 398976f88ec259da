"""Build an encoder by name (the config's `encoder` field)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from encoders.conv import ConvEncoder
from encoders.resnet import ResNet18Encoder
from encoders.state import StateEncoder

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "conv": ConvEncoder,
    "resnet18": ResNet18Encoder,
    "state": StateEncoder,  # tasks without cameras
}


def build_encoder(
    kind: str,
    image_keys: Sequence[str],
    image_shape: tuple[int, int, int],
    proprio_dim: int,
    **kwargs: Any,
) -> nn.Module:
    """`kind` in ENCODERS; kwargs go to its constructor (e.g. strides, feature_dim)."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; valid kinds: {sorted(ENCODERS)}")
    return ENCODERS[kind](image_keys, tuple(image_shape), proprio_dim, **kwargs)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
