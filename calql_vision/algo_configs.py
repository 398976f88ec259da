"""Typed config schemas of the algorithms, one per agent class (no torch import: `--help` and
config errors answer at once).

`algo=<name>` selects ALGO_SCHEMAS[name] and then merges configs/algo/<name>.yaml into it, so a
key of another algorithm (`algo=iql algo.cql_weight=5`) is an error that lists the valid
keys. Several names share a schema where one agent class serves them: `sac` and `rlpd` are
configs of SAC, `calql`, `cql` and `wsrl` configs of Cal-QL. Each group file holds that
method's defaults and says where they come from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from calql_vision.config_fields import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, OneOf, Range, doc


@dataclass
class AlgoConfig:
    """What every algorithm has: its name, the networks' size, learning and the online schedule."""

    name: str = doc("calql", "algorithm: " + " | ".join(["calql", "cql", "sac", "rlpd", "iql", "aca", "wsrl"]))
    discount: float = doc(
        0.99, "gamma (also used for the reward-to-go)",
        valid=Range(0, 1, low_open=True, high_open=True),
    )
    tau: float = doc(0.005, "Polyak rate of the target critics and their encoder", valid=Range(0, 1, low_open=True))
    actor_lr: float = doc(1e-4, "actor learning rate", valid=POSITIVE)
    critic_lr: float = doc(3e-4, "critic (and encoder) learning rate", valid=POSITIVE)
    hidden_dims: list = doc([256, 256], "hidden layers of the policy and Q MLPs", valid=AT_LEAST_1)
    orthogonal_init: bool = doc(True, "orthogonal MLP init, output gain 1e-2 (reference default); false = PyTorch default")
    utd: int = doc(1, "online: gradient updates per environment step (update-to-data ratio)", valid=AT_LEAST_1)
    mixing_ratio: Optional[float] = doc(
        0.5, "online: offline fraction of every batch (0 = online data only; null = uniform over offline + online)",
        valid=UNIT,
    )
    warmup_steps: int = doc(0, "online: first environment steps collected without updates", valid=AT_LEAST_0)
    warmup_policy: str = doc(
        "policy", "who acts during the warm-up: random (uniform actions) | policy (the agent)",
        valid=OneOf(("random", "policy")),
    )
    explore_std_scale: float = doc(
        1.0, "online: the collecting policy's pre-tanh std times this (1 = sample pi itself, 0 = its mean); "
        "the losses and evaluations use pi unchanged", valid=AT_LEAST_0,
    )


@dataclass
class SACConfig(AlgoConfig):
    """SAC with a critic ensemble; RLPD is this with 10 LayerNorm critics and 50/50 batches."""

    alpha_lr: float = doc(1e-4, "entropy temperature learning rate", valid=POSITIVE)
    init_log_alpha: float = doc(0.0, "initial log of the entropy temperature")
    online_init_log_alpha: Optional[float] = doc(
        None, "log temperature set at the switch; null = keep the pretrained one (ACA: 0, a reset to 1)"
    )
    online_freeze_encoder: bool = doc(
        False, "online: keep the encoder as it was at the switch (the critic's loss stops training it; "
        "the heads still learn), so the features the actor reads stop moving",
    )
    target_entropy: Optional[float] = doc(None, "entropy target; null = -action_dim")
    num_critics: int = doc(2, "Q-functions in the critic ensemble", valid=AT_LEAST_1)
    target_critics: Optional[int] = doc(
        None, "TD target = min over a random subset of this many target critics; null = all", valid=AT_LEAST_1
    )
    critic_layer_norm: bool = doc(False, "LayerNorm after every hidden layer of the critics")
    actor_layer_norm: bool = doc(False, "LayerNorm after every hidden layer of the actor")
    actor_q: str = doc("min", "Q the actor maximises: min | mean over the ensemble", valid=OneOf(("min", "mean")))
    backup_entropy: bool = doc(False, "subtract alpha * log pi in the TD target")
    clip_bootstrap: bool = doc(
        False, "clip the next state's value in the TD target to the range every discounted return lies in, "
        "[min(0, r_min), max(0, r_max)] / (1 - discount), r as trained on (after reward_scale and reward_bias)",
    )
    critic_updates: int = doc(
        1, "online: critic updates per actor update, on slices of a batch this many times batch_size (RLPD / WSRL's UTD)",
        valid=AT_LEAST_1,
    )


@dataclass
class CalQLConfig(SACConfig):
    """Cal-QL / CQL: SAC plus the conservative gap (and the calibration bound)."""

    calibrated: bool = doc(True, "Cal-QL: lift policy-sample Q-values to the reward-to-go (false = CQL)")
    calibrate_online: bool = doc(True, "keep the calibration bound during online fine-tuning (false = CORL's variant)")
    conservative_online: bool = doc(True, "keep the CQL regulariser online (false = plain SAC after the switch, as WSRL)")
    cql_weight: float = doc(5.0, "weight w of the CQL regulariser", valid=AT_LEAST_0)
    cql_n_actions: int = doc(10, "N: sampled actions per kind (random, pi(.|s), pi(.|s'))", valid=AT_LEAST_1)
    cql_importance_sample: bool = doc(True, "importance-sampled logsumexp over the 3N sampled actions")
    cql_max_target_backup: bool = doc(True, "target = max over N next actions of min(target Q); conservative phases only")
    cql_temperature: float = doc(1.0, "temperature T of the logsumexp", valid=POSITIVE)
    cql_clip_diff_min: float = doc(
        float("-inf"), "per-sample lower clip of logsumexp - Q(s, a) (CORL: -200)",
        valid=Range(infinite=True),
    )
    cql_clip_diff_max: float = doc(
        float("inf"), "per-sample upper clip of logsumexp - Q(s, a)",
        valid=Range(infinite=True),
    )
    cql_lagrange: bool = doc(False, "tune the CQL weight alpha' to keep the gap at cql_target_gap")
    cql_target_gap: float = doc(0.8, "kappa: target CQL gap of the Lagrange variant")


@dataclass
class IQLConfig(AlgoConfig):
    """IQL: expectile V, TD Q to r + gamma V(s'), advantage-weighted actor."""

    value_lr: float = doc(3e-4, "learning rate of the V head", valid=POSITIVE)
    expectile: float = doc(
        0.7, "expectile of Q - V that V regresses to (0.5 = mean)",
        valid=Range(0, 1, low_open=True, high_open=True),
    )
    temperature: float = doc(3.0, "beta: actor weights exp(beta * (Q - V))", valid=AT_LEAST_0)
    max_weight: float = doc(100.0, "upper clip of the advantage weights", valid=POSITIVE)


@dataclass
class ACAConfig(SACConfig):
    """ACA: offline SAC + maximum likelihood with Z(s) heads; online SAC on R + w * c(log pi_0)."""

    backup_entropy: bool = doc(True, "subtract alpha * log pi in the TD targets of Q, Z and R (as ACA's code does)")
    bc_scale: float = doc(
        30.0, "offline actor: lambda = bc_scale / mean|Q| on the SAC term, plus -log pi(a|s) of the data",
        valid=AT_LEAST_0,
    )
    num_z: int = doc(2, "state-value heads Z_k(s) aligned with the policy offline", valid=AT_LEAST_1)
    clip_beta: float = doc(
        5.0, "soft lower clip of log pi_0 at the log-density beta standard deviations from its mean", valid=POSITIVE
    )
    prior_weight_start: float = doc(
        1.0, "w at the switch: weight of c(log pi_0(a|s)) inside Q online", valid=AT_LEAST_0
    )
    prior_weight_end: float = doc(
        0.5, "w after prior_decay_steps online gradient steps (linear decay)", valid=AT_LEAST_0
    )
    prior_decay_steps: int = doc(20_000, "online gradient steps over which w falls from start to end (0 = no decay)", valid=AT_LEAST_0)
    online_init_log_alpha: Optional[float] = doc(0.0, "log temperature set at the switch (ACA resets alpha to 1)")
    seed_top_episodes: int = doc(
        10, "offline episodes with the highest return copied into the online buffer at the switch", valid=AT_LEAST_0
    )


# `algo=<name>` -> its schema. agents.ALGORITHMS names the agent class of each (same keys).
ALGO_SCHEMAS: dict[str, type] = {
    "calql": CalQLConfig,
    "cql": CalQLConfig,
    "wsrl": CalQLConfig,
    "sac": SACConfig,
    "rlpd": SACConfig,
    "iql": IQLConfig,
    "aca": ACAConfig,
}


# Algorithms without an offline phase (they learn online from scratch; rlpd reads the dataset
# as half of every batch). agents.ALGORITHMS' `pretrains` says the same and is checked against it.
ONLINE_ONLY = frozenset({"sac", "rlpd"})


def algo_schema(name: str) -> type:
    if name not in ALGO_SCHEMAS:
        raise KeyError(name)
    return ALGO_SCHEMAS[name]
