"""`algo=<name>` -> an agent. Every agent shares the encoder, replay, training loop, evaluation
and checkpoints, and offers update(batch) -> dict, act(obs, deterministic), on_online_start(),
q_values(batch), state_dict() / load_state_dict(), policy_state_dict().

ALGORITHMS says, per name, which agent class learns and how the trainer schedules it; the
name's typed config schema is calql_vision.algo_configs.ALGO_SCHEMAS[name].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from calql_vision.agents.aca import ACAAgent
from calql_vision.agents.base import ObsSpec, PixelAgent
from calql_vision.agents.calql import CalQLAgent
from calql_vision.agents.iql import IQLAgent
from calql_vision.agents.sac import SACAgent
from calql_vision.algo_configs import ALGO_SCHEMAS, ONLINE_ONLY, algo_schema


@dataclass(frozen=True)
class Algorithm:
    agent_class: type
    pretrains: bool  # runs an offline phase on the dataset
    uses_dataset: bool  # reads offline data at all (SAC from scratch does not)


ALGORITHMS: dict[str, Algorithm] = {
    "calql": Algorithm(CalQLAgent, pretrains=True, uses_dataset=True),
    "cql": Algorithm(CalQLAgent, pretrains=True, uses_dataset=True),
    "wsrl": Algorithm(CalQLAgent, pretrains=True, uses_dataset=True),
    "iql": Algorithm(IQLAgent, pretrains=True, uses_dataset=True),
    "aca": Algorithm(ACAAgent, pretrains=True, uses_dataset=True),
    "sac": Algorithm(SACAgent, pretrains=False, uses_dataset=False),
    "rlpd": Algorithm(SACAgent, pretrains=False, uses_dataset=True),
}
assert set(ALGORITHMS) == set(ALGO_SCHEMAS), "every algorithm needs a schema and an agent class"
assert ONLINE_ONLY == {name for name, a in ALGORITHMS.items() if not a.pretrains}


def algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo '{name}'; available: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def make_agent(algo_cfg: Any, encoder_cfg: Any, spec: ObsSpec, device: torch.device, precision: str) -> PixelAgent:
    """`precision` bf16 | fp32, or auto: bf16 where the device computes it natively."""
    from calql_vision.hardware import choose_precision

    precision, _ = choose_precision(precision, device)
    return algorithm(algo_cfg.name).agent_class(algo_cfg, encoder_cfg, spec, device, precision)


def can_init_from(target: str, source: str) -> bool:
    """A `source` checkpoint can start `target`'s online phase when the target's agent class
    is the source's or a base of it (so every part the target loads exists in the source):
    Cal-QL pretraining serves calql, cql, wsrl, and sac / rlpd; IQL and ACA serve themselves."""
    return issubclass(algorithm(source).agent_class, algorithm(target).agent_class)


__all__ = ["ALGORITHMS", "Algorithm", "ObsSpec", "PixelAgent", "algo_schema", "algorithm", "can_init_from", "make_agent"]
