"""Policy and Q-function heads that act on encoder features."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Actions are squashed into (-1, 1); log-probabilities of given actions read them just inside.
_ATANH_LIMIT = 1.0 - 1e-6


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, orthogonal_init: bool = True,
        layer_norm: bool = False) -> nn.Sequential:
    """ReLU MLP; with `layer_norm`, Linear -> LayerNorm -> ReLU in every hidden layer (RLPD,
    WSRL). With `orthogonal_init` (the reference code's default): orthogonal hidden layers with
    gain sqrt(2), an output layer with gain 1e-2 (initial Q-values and policy means start near
    zero), zero biases. Otherwise PyTorch's default init."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers.append(nn.Linear(in_dim, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    if orthogonal_init:
        linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        for layer in linears:
            nn.init.orthogonal_(layer.weight, gain=1e-2 if layer is linears[-1] else math.sqrt(2.0))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class QEnsemble(nn.Module):
    """`num_heads` independent Q-heads, Q_i(features, action) -> (num_heads, ...) stacked."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int], orthogonal_init: bool = True,
                 num_heads: int = 2, layer_norm: bool = False) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            mlp(feature_dim + action_dim, hidden_dims, 1, orthogonal_init, layer_norm) for _ in range(num_heads)
        )

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """features (B, D); actions (B, A) or (B, N, A) -> Q (H, B) or (H, B, N)."""
        if actions.dim() == 3:
            # Encode once, tile the embedding across the N actions (never re-encode pixels).
            features = features.unsqueeze(1).expand(-1, actions.shape[1], -1)
        inputs = torch.cat([features, actions], dim=-1)
        return torch.stack([head(inputs).squeeze(-1) for head in self.heads])


class StateValue(nn.Module):
    """`num_heads` state-value heads V_k(features) -> (num_heads, B) (IQL's V, ACA's Z)."""

    def __init__(self, feature_dim: int, hidden_dims: Sequence[int], orthogonal_init: bool = True,
                 num_heads: int = 1) -> None:
        super().__init__()
        self.heads = nn.ModuleList(mlp(feature_dim, hidden_dims, 1, orthogonal_init) for _ in range(num_heads))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features).squeeze(-1) for head in self.heads])


def tanh_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(pre_tanh; mean, std = exp(log_std)) summed over action dims, minus the tanh correction.
    `std` is passed in, not recomputed, so a sample and its log-probability share one exp node."""
    gaussian = (-0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) in a form that stays finite for large |u|.
    squash_correction = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
    return gaussian - squash_correction


class TanhGaussianActor(nn.Module):
    """SAC's tanh-squashed Gaussian, with the reference code's learnable log-std affine:
    log_std = multiplier * raw + offset (multiplier 1, offset -1 at init), clipped to [-20, 2]."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int], orthogonal_init: bool = True,
                 layer_norm: bool = False) -> None:
        super().__init__()
        self.net = mlp(feature_dim, hidden_dims, 2 * action_dim, orthogonal_init, layer_norm)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))

    def distribution(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and log-std, each (B, A)."""
        mean, raw_log_std = self.net(features).chunk(2, dim=-1)
        log_std = (self.log_std_multiplier * raw_log_std + self.log_std_offset).clamp(-20.0, 2.0)
        return mean, log_std

    def forward(
        self, features: torch.Tensor, num_samples: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample and its log-probability.

        features (B, D) -> actions (B, A), log_prob (B); with num_samples = N: (B, N, A), (B, N).
        """
        mean, log_std = self.distribution(features)
        if num_samples is not None:
            mean = mean.unsqueeze(1).expand(-1, num_samples, -1)
            log_std = log_std.unsqueeze(1).expand(-1, num_samples, -1)
        std = log_std.exp()
        pre_tanh = mean + std * torch.randn_like(mean)
        # Log-probability before tanh: the order autograd accumulates pre_tanh's gradient in,
        # kept as it was so Cal-QL's updates stay bit-identical across refactors.
        log_prob = tanh_gaussian_log_prob(pre_tanh, mean, log_std, std)
        return torch.tanh(pre_tanh), log_prob

    def sample(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A tanh-squashed action (B, A) whose noise comes from `generator` (which may live on
        another device, e.g. the CPU), not from torch's global stream; no log-probability."""
        mean, log_std = self.distribution(features)
        noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean.device)
        return torch.tanh(mean + log_std.exp() * noise)

    def explore(self, features: torch.Tensor, std_scale: float) -> torch.Tensor:
        """tanh(mean + std_scale * std * noise) from torch's global stream: pi's own sample at 1,
        its spread narrowed (std_scale < 1) or widened otherwise, for collecting data; no
        log-probability, as the losses never see these actions' density."""
        mean, log_std = self.distribution(features)
        return torch.tanh(mean + std_scale * log_std.exp() * torch.randn_like(mean))

    def log_prob(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a | s) of given actions: features (B, D), actions (B, A) -> (B,).
        Differentiable in both; actions on the boundary are read just inside (-1, 1)."""
        mean, log_std = self.distribution(features)
        return self.log_prob_from(mean, log_std, actions)

    @staticmethod
    def log_prob_from(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        pre_tanh = torch.atanh(actions.clamp(-_ATANH_LIMIT, _ATANH_LIMIT))
        return tanh_gaussian_log_prob(pre_tanh, mean, log_std, log_std.exp())

    def deterministic(self, features: torch.Tensor) -> torch.Tensor:
        """The evaluation action tanh(mean)."""
        mean, _ = self.distribution(features)
        return torch.tanh(mean)
