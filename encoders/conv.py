"""DrQ-style convolutional encoder for uint8 camera images plus proprioception.

`MultiCameraEncoder` holds the contract shared by every encoder here: one trunk per camera,
uint8 (B, C, H, W) images normalised on the device inside `forward`, the cameras' features
concatenated and projected (Linear -> LayerNorm -> Tanh) to `feature_dim`, and the float
proprioception vector appended after the projection, unchanged.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn


def orthogonal_init_(module: nn.Module) -> None:
    """DrQ-v2 init: orthogonal weights (ReLU gain for convs), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, nn.init.calculate_gain("relu"))
    else:
        return
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class MultiCameraEncoder(nn.Module):
    """Base class: input checks, per-camera trunks, projection head, proprio concatenation.

    Subclasses set `self.trunks` (one module per camera, in `image_keys` order, each mapping
    normalised (B, C, H, W) floats to (B, trunk_dim)) and call `_build_projection(trunk_dim)`.
    """

    trunks: nn.ModuleList

    def __init__(
        self,
        image_keys: Sequence[str],
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        feature_dim: int,
    ) -> None:
        super().__init__()
        image_keys = tuple(image_keys)
        if not image_keys:
            raise ValueError("image_keys must name at least one camera")
        if len(set(image_keys)) != len(image_keys):
            raise ValueError(f"image_keys must be unique, got {list(image_keys)}")
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
        if proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {proprio_dim}")
        self.image_keys = image_keys
        self.image_shape = tuple(int(s) for s in image_shape)
        self.proprio_dim = int(proprio_dim)
        self.feature_dim = int(feature_dim)
        self.output_dim = self.feature_dim + self.proprio_dim

    def _build_projection(self, trunk_dim: int) -> None:
        self.projection = nn.Sequential(
            nn.Linear(len(self.image_keys) * trunk_dim, self.feature_dim),
            nn.LayerNorm(self.feature_dim),
            nn.Tanh(),
        )

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> float input of the trunk."""
        raise NotImplementedError

    def check_inputs(self, images: Mapping[str, Tensor], proprio: Tensor | None) -> int:
        """Raise a ValueError naming the offending key; return the batch size."""
        expected = "(B, {}, {}, {})".format(*self.image_shape)
        batch: int | None = None
        for key in self.image_keys:
            if key not in images:
                raise ValueError(
                    f"missing image {key!r}; the encoder expects keys {list(self.image_keys)}"
                )
            image = images[key]
            if not isinstance(image, Tensor):
                raise ValueError(f"image {key!r} must be a torch.Tensor, got {type(image).__name__}")
            if image.dtype != torch.uint8:
                raise ValueError(
                    f"image {key!r} must be uint8 {expected} (normalisation happens inside the "
                    f"encoder), got dtype {image.dtype}"
                )
            if image.dim() != 4 or tuple(image.shape[1:]) != self.image_shape:
                raise ValueError(
                    f"image {key!r} must have shape {expected}, got {tuple(image.shape)}"
                )
            if batch is None:
                batch = image.shape[0]
            elif image.shape[0] != batch:
                raise ValueError(
                    f"image {key!r} has batch size {image.shape[0]}, "
                    f"but {self.image_keys[0]!r} has {batch}"
                )
        assert batch is not None
        if proprio is None:
            if self.proprio_dim:
                raise ValueError(f"proprio of shape ({batch}, {self.proprio_dim}) is required")
        elif not proprio.is_floating_point() or tuple(proprio.shape) != (batch, self.proprio_dim):
            raise ValueError(
                f"proprio must be a float tensor of shape ({batch}, {self.proprio_dim}), "
                f"got {proprio.dtype} {tuple(proprio.shape)}"
            )
        return batch

    def forward(self, images: Mapping[str, Tensor], proprio: Tensor | None = None) -> Tensor:
        """uint8 images {key: (B, C, H, W)} and proprio (B, P) -> (B, feature_dim + P).

        `proprio` may be None when proprio_dim == 0. The output has proprio's dtype
        (float32 by default) even under autocast, so proprio passes through bit-exactly.
        """
        batch = self.check_inputs(images, proprio)
        per_camera = [
            trunk(self.normalise(images[key])).flatten(1)
            for key, trunk in zip(self.image_keys, self.trunks)
        ]
        features = self.projection(torch.cat(per_camera, dim=1))
        if proprio is None:
            proprio = features.new_zeros((batch, 0), dtype=torch.float32)
        return torch.cat([features.to(proprio.dtype), proprio], dim=1)


def conv_output_size(size: int, kernel_size: int, strides: Sequence[int]) -> int:
    """Spatial size after unpadded convolutions with these strides."""
    for stride in strides:
        size = (size - kernel_size) // stride + 1
    return size


class ConvEncoder(MultiCameraEncoder):
    """DrQ-v2 conv stack per camera (unpadded 3x3 convs, ReLU after each).

    The default strides (2, 2, 1, 1) turn 84x84 into 32 x 16 x 16; DrQ-v2's (2, 1, 1, 1) gives
    32 x 35 x 35 for about 3.8x the conv FLOPs (measured about 2.8x the CPU time).
    """

    def __init__(
        self,
        image_keys: Sequence[str],
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        channels: int = 32,
        strides: Sequence[int] = (2, 2, 1, 1),
        kernel_size: int = 3,
        feature_dim: int = 64,
    ) -> None:
        super().__init__(image_keys, image_shape, proprio_dim, feature_dim)
        if not strides:
            raise ValueError("strides must name at least one conv layer")
        in_channels, height, width = self.image_shape
        out_height = conv_output_size(height, kernel_size, strides)
        out_width = conv_output_size(width, kernel_size, strides)
        if out_height < 1 or out_width < 1:
            raise ValueError(
                f"image_shape {self.image_shape} is too small for kernel_size={kernel_size} "
                f"and strides={tuple(strides)}"
            )
        self.trunks = nn.ModuleList(
            self._conv_stack(in_channels, channels, kernel_size, strides) for _ in self.image_keys
        )
        self.trunk_output_shape = (channels, out_height, out_width)
        self._build_projection(channels * out_height * out_width)
        self.apply(orthogonal_init_)

    @staticmethod
    def _conv_stack(
        in_channels: int, channels: int, kernel_size: int, strides: Sequence[int]
    ) -> nn.Sequential:
        layers: list[nn.Module] = []
        for stride in strides:
            layers += [nn.Conv2d(in_channels, channels, kernel_size, stride=stride), nn.ReLU()]
            in_channels = channels
        return nn.Sequential(*layers)

    def normalise(self, images: Tensor) -> Tensor:
        # to(float32) keeps the memory format, so channels_last input stays channels_last;
        # the in-place ops reuse the fresh float buffer.
        return images.to(torch.float32).mul_(1.0 / 255.0).sub_(0.5)
