"""ResNet-18 encoder per camera (GroupNorm instead of BatchNorm), same contract as ConvEncoder."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from encoders.conv import MultiCameraEncoder, orthogonal_init_

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def group_norm(channels: int) -> nn.GroupNorm:
    # BatchNorm's running statistics misbehave in RL (target networks, tiny or mixed batches,
    # train/eval mismatch); GroupNorm has none. 16 channels per group, as robomimic's users do.
    return nn.GroupNorm(num_groups=max(1, channels // 16), num_channels=channels)


def resnet18_trunk(in_channels: int) -> nn.Module:
    """Randomly initialised torchvision ResNet-18 without its fc: (B, C, H, W) -> (B, 512)."""
    # Imported here, not at module level: torchvision adds ~1.5 s to `import encoders`,
    # which the conv-only path (and every subprocess) need not pay.
    from torchvision.models import resnet18

    trunk = resnet18(weights=None, norm_layer=group_norm)  # weights=None: never downloads
    if in_channels != 3:
        trunk.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
    trunk.fc = nn.Identity()
    return trunk


class ResNet18Encoder(MultiCameraEncoder):
    """One ResNet-18 trunk per camera, global-average-pooled to 512-d, then the shared head.

    Works for any image size of at least 32x32 (the trunk downsamples 32x; adaptive pooling
    absorbs the rest). Images are scaled by /255 and ImageNet mean/std; with C a multiple of 3
    (stacked RGB frames) the statistics are tiled, otherwise their channel average is used.
    """

    def __init__(
        self,
        image_keys: Sequence[str],
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        feature_dim: int = 64,
    ) -> None:
        super().__init__(image_keys, image_shape, proprio_dim, feature_dim)
        in_channels = self.image_shape[0]
        self.trunks = nn.ModuleList(resnet18_trunk(in_channels) for _ in self.image_keys)
        self._build_projection(512)
        self.projection.apply(orthogonal_init_)

        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if in_channels % 3 == 0:
            mean, std = mean.repeat(in_channels // 3), std.repeat(in_channels // 3)
        else:
            mean, std = mean.mean().repeat(in_channels), std.mean().repeat(in_channels)
        # (x / 255 - mean) / std folded into one multiply-add; constants, so not saved.
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("offset", (mean / std).view(1, -1, 1, 1), persistent=False)

    def normalise(self, images: Tensor) -> Tensor:
        return images.to(torch.float32).mul_(self.scale).sub_(self.offset)
