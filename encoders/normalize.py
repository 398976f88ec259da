"""Per-entry normalisation of the state (proprioception) vector: (x - mean) / std.

The statistics are the offline dataset's, fixed when a run is created and saved in its
checkpoints, so training, evaluation, resume and `init_from` all read the same inputs.
Why: robomimic's low-dim keys mix scales (the cube's height varies by millimetres, the
quaternions by tenths), and the grasp decision on lift turns on a 1 cm offset the raw
vector hides in its third decimal; unnormalised, neither BC, IQL nor Cal-QL learned it
(docs/results.md). CORL's state-based IQL/CQL/Cal-QL normalise the same way (`normalize`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

# Added to every std: an entry that barely varies in the data (the resting cube's height,
# std ~3 mm) is scaled up, not blown up, and a constant entry stays finite.
STD_EPSILON = 1e-3


class StateNormalizer(nn.Module):
    """(B, P) -> (B, P). Identity until `fit`; the statistics are buffers, not parameters:
    no optimizer or Polyak average ever moves them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, states: np.ndarray) -> None:
        """Statistics of a (N, P) array of states (every frame of the offline data)."""
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != self.mean.shape[0] or len(states) == 0:
            raise ValueError(f"need a non-empty (N, {self.mean.shape[0]}) array of states, got {states.shape}")
        self.mean.copy_(torch.from_numpy(states.mean(0)))
        self.std.copy_(torch.from_numpy(states.std(0) + STD_EPSILON))

    def reset(self) -> None:
        """Back to the identity (checkpoints from before normalisation existed load this way)."""
        self.mean.zero_()
        self.std.fill_(1.0)

    @property
    def is_identity(self) -> bool:
        return bool((self.mean == 0).all() and (self.std == 1).all())

    def forward(self, states: Tensor) -> Tensor:
        return (states.float() - self.mean) / self.std
