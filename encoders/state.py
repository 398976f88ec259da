"""State encoder for tasks without cameras: robomimic's low-dim keys in, features out.

Every reference Cal-QL / CQL / IQL / WSRL code feeds the state vector straight into its MLP
heads; `hidden_dims=[]` (the default) does exactly that: the features are the state itself,
and the encoder has no parameters. A non-empty `hidden_dims` puts a small MLP in front
(Linear -> ReLU per hidden layer, then Linear -> LayerNorm -> Tanh to `feature_dim`, the same
projection head as the image encoders), trained like the image encoders: by the critic's
optimizer, read detached by the actor, with a Polyak target copy.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from encoders.conv import orthogonal_init_


class StateEncoder(nn.Module):
    """float (B, P) state -> (B, P) (identity) or (B, feature_dim) (MLP). Takes the same
    (images, proprio) arguments as the image encoders; `images` must be empty."""

    def __init__(
        self,
        image_keys: Sequence[str],
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        hidden_dims: Sequence[int] = (),
        feature_dim: int = 64,
    ) -> None:
        super().__init__()
        del image_shape  # no images: the argument exists so every encoder is built alike
        if tuple(image_keys):
            raise ValueError(
                f"the state encoder reads no images, but the task has cameras {list(image_keys)}; "
                "use encoder=conv (or resnet18) for camera tasks, or a task without cameras"
            )
        if proprio_dim < 1:
            raise ValueError(f"the state encoder needs a state vector: proprio_dim must be >= 1, got {proprio_dim}")
        self.image_keys: tuple[str, ...] = ()
        self.proprio_dim = int(proprio_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        if not self.hidden_dims:
            self.net: nn.Module = nn.Identity()
            self.output_dim = self.proprio_dim
        else:
            layers: list[nn.Module] = []
            width = self.proprio_dim
            for hidden in self.hidden_dims:
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            layers += [nn.Linear(width, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh()]
            self.net = nn.Sequential(*layers)
            self.net.apply(orthogonal_init_)
            self.output_dim = int(feature_dim)

    def forward(self, images: Mapping[str, Tensor], proprio: Tensor | None = None) -> Tensor:
        if images:
            raise ValueError(f"the state encoder takes no images, got keys {sorted(images)}")
        if proprio is None or not proprio.is_floating_point() or proprio.dim() != 2 or proprio.shape[1] != self.proprio_dim:
            got = "None" if proprio is None else f"{proprio.dtype} {tuple(proprio.shape)}"
            raise ValueError(f"state must be a float tensor of shape (B, {self.proprio_dim}), got {got}")
        # Under bf16 autocast the MLP's Linear layers would round the state; the heads read
        # fp32 anyway (PixelAgent.encode), so the state encoder stays in fp32 throughout.
        with torch.autocast(device_type=proprio.device.type, enabled=False):
            return self.net(proprio.float())
