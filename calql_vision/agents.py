"""`algo=<name>` -> an agent. Every agent shares the encoder, replay and training loop and
offers update(batch) -> dict, act(obs, deterministic), on_online_start(), state_dict()."""
from __future__ import annotations

from typing import Any

import torch

from calql_vision.calql import CalQLAgent

# CQL is Cal-QL with `calibrated: false` (configs/algo/cql.yaml); same class.
AGENTS = {"calql": CalQLAgent, "cql": CalQLAgent}


def make_agent(
    algo_cfg: Any,
    encoder_cfg: Any,
    image_keys: list[str],
    image_shape: tuple[int, int, int],
    proprio_dim: int,
    action_dim: int,
    device: torch.device,
    precision: str,
):
    if algo_cfg.name not in AGENTS:
        raise ValueError(f"unknown algo '{algo_cfg.name}'; available: {sorted(AGENTS)}")
    return AGENTS[algo_cfg.name](algo_cfg, encoder_cfg, image_keys, image_shape, proprio_dim, action_dim, device, precision)
