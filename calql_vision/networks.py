"""Policy and Q-function heads that act on encoder features."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, orthogonal_init: bool = True) -> nn.Sequential:
    """ReLU MLP. With `orthogonal_init` (the reference code's default): orthogonal hidden
    layers with gain sqrt(2), an output layer with gain 1e-2 (initial Q-values and policy
    means start near zero), zero biases. Otherwise PyTorch's default init."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    if orthogonal_init:
        linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        for layer in linears:
            nn.init.orthogonal_(layer.weight, gain=1e-2 if layer is linears[-1] else math.sqrt(2.0))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class TwinQ(nn.Module):
    """Two independent Q-heads, Q_i(features, action) -> (2, ...) stacked."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int], orthogonal_init: bool = True) -> None:
        super().__init__()
        self.heads = nn.ModuleList(mlp(feature_dim + action_dim, hidden_dims, 1, orthogonal_init) for _ in range(2))

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """features (B, D); actions (B, A) or (B, N, A) -> Q (2, B) or (2, B, N)."""
        if actions.dim() == 3:
            # Encode once, tile the embedding across the N actions (never re-encode pixels).
            features = features.unsqueeze(1).expand(-1, actions.shape[1], -1)
        inputs = torch.cat([features, actions], dim=-1)
        return torch.stack([head(inputs).squeeze(-1) for head in self.heads])


class TanhGaussianActor(nn.Module):
    """SAC's tanh-squashed Gaussian, with the reference code's learnable log-std affine:
    log_std = multiplier * raw + offset (multiplier 1, offset -1 at init), clipped to [-20, 2]."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int], orthogonal_init: bool = True) -> None:
        super().__init__()
        self.net = mlp(feature_dim, hidden_dims, 2 * action_dim, orthogonal_init)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))

    def _distribution(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw_log_std = self.net(features).chunk(2, dim=-1)
        log_std = (self.log_std_multiplier * raw_log_std + self.log_std_offset).clamp(-20.0, 2.0)
        return mean, log_std

    def forward(
        self, features: torch.Tensor, num_samples: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample and its log-probability.

        features (B, D) -> actions (B, A), log_prob (B); with num_samples = N: (B, N, A), (B, N).
        """
        mean, log_std = self._distribution(features)
        if num_samples is not None:
            mean = mean.unsqueeze(1).expand(-1, num_samples, -1)
            log_std = log_std.unsqueeze(1).expand(-1, num_samples, -1)
        std = log_std.exp()
        pre_tanh = mean + std * torch.randn_like(mean)
        gaussian_log_prob = (-0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) in a form that stays finite for large |u|.
        squash_correction = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), gaussian_log_prob - squash_correction

    def deterministic(self, features: torch.Tensor) -> torch.Tensor:
        """The evaluation action tanh(mean)."""
        mean, _ = self._distribution(features)
        return torch.tanh(mean)
