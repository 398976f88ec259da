"""Range checks of a loaded config, run before anything is created: every field's own range
(declared with `doc(..., valid=...)` in its schema), no NaN or infinity in a float unless its
range allows infinity, and the checks that involve several keys."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from calql_vision.algo_configs import ONLINE_ONLY
from calql_vision.config_fields import FINITE


def config_problems(config: DictConfig) -> list[str]:
    """Every problem of `config` (a structured config) as "key=value: expected ..."."""
    return field_problems(config) + [p for check in CROSS_CHECKS for p in check(config)]


def field_problems(config: DictConfig) -> list[str]:
    """The problems of each value on its own (a saved config, before a resume's overrides)."""
    return _field_problems(config, "")


def _field_problems(node: DictConfig, prefix: str) -> list[str]:
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    problems = []
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        value = node[f.name]
        key = f"{prefix}{f.name}"
        if isinstance(value, DictConfig):
            problems += _field_problems(value, f"{key}.")
            continue
        valid = f.metadata.get("valid")
        values = list(value) if isinstance(value, ListConfig) else [value]
        for item in values:
            problem = _problem(item, valid)
            if problem:
                shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
                problems.append(f"{key}={shown}: {problem}")
                break
    return problems


def _problem(value: Any, valid: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None  # None only gets here where the schema allows it (Optional)
    if isinstance(value, float) and valid is None:
        valid = FINITE  # every float must at least be a number
    if valid is None or valid.accepts(value):
        return None
    return f"expected {valid}"


# ---------------------------------------------------------------------- checks across keys
def _select(config: DictConfig, key: str) -> Any:
    return OmegaConf.select(config, key, default=None)


def _something_to_train(config: DictConfig) -> list[str]:
    """Every run makes updates: a budget of zero, or an online phase whose warm-up (environment
    steps without updates) takes all of it, is refused before anything is created."""
    offline, online = _select(config, "offline_steps"), _select(config, "online_env_steps")
    name, warmup = _select(config, "algo.name"), _select(config, "algo.warmup_steps")
    if offline is None or online is None:
        return []
    if offline == 0 and online == 0:
        return ["offline_steps=0 and online_env_steps=0: nothing to train; give either a budget"]
    if name in ONLINE_ONLY and online == 0:
        return [f"online_env_steps=0: algo={name} learns online only (offline_steps does not apply); "
                "give it online_env_steps"]
    if warmup is not None and online > 0 and warmup >= online:
        return [f"algo.warmup_steps={warmup}: the warm-up takes all online_env_steps={online}, so the online phase "
                f"would make no update; expected fewer warm-up steps than online_env_steps"]
    return []


def _critic_subset(config: DictConfig) -> list[str]:
    subset, critics = _select(config, "algo.target_critics"), _select(config, "algo.num_critics")
    if subset is not None and critics is not None and subset > critics:
        return [f"algo.target_critics={subset}: expected at most algo.num_critics={critics}"]
    return []


def _clip_order(config: DictConfig) -> list[str]:
    low, high = _select(config, "algo.cql_clip_diff_min"), _select(config, "algo.cql_clip_diff_max")
    if low is not None and high is not None and not math.isnan(low) and not math.isnan(high) and low > high:
        return [f"algo.cql_clip_diff_min={low} is above algo.cql_clip_diff_max={high}"]
    return []


def _aca_structure(config: DictConfig) -> list[str]:
    """ACA's online critic R has num_z heads and one critic update per actor update."""
    if _select(config, "algo.name") != "aca":
        return []
    problems = []
    if _select(config, "algo.critic_updates") != 1:
        problems.append(f"algo.critic_updates={_select(config, 'algo.critic_updates')}: expected 1 for algo=aca")
    subset, heads = _select(config, "algo.target_critics"), _select(config, "algo.num_z")
    if subset is not None and heads is not None and subset > heads:
        problems.append(f"algo.target_critics={subset}: expected at most algo.num_z={heads} (ACA's online critics)")
    return problems


def _encoder_fits_task(config: DictConfig) -> list[str]:
    """Camera tasks need an image encoder; tasks without cameras the state encoder and a state."""
    cameras, kind = _select(config, "task.cameras"), _select(config, "encoder.kind")
    if cameras is None:
        return []
    if len(cameras) == 0 and not _select(config, "task.proprio_keys"):
        return ["task.cameras=[] and task.proprio_keys=[]: the policy would see nothing; name low-dim keys"]
    if kind is None:
        return []
    if len(cameras) == 0 and kind != "state":
        return [f"encoder.kind={kind}: task.cameras=[] has no images; use encoder=state (the default for tasks "
                "without cameras when no encoder is named)"]
    if len(cameras) > 0 and kind == "state":
        return [f"encoder.kind=state: task.cameras={list(cameras)} are images; use encoder=conv or encoder=resnet18, "
                "or task.cameras=[]"]
    return []


def _even_video(config: DictConfig) -> list[str]:
    size = _select(config, "video_size")
    if isinstance(size, int) and size % 2:
        return [f"video_size={size}: expected an even number (H.264 frames)"]
    return []


def _device_name(config: DictConfig) -> list[str]:
    device = _select(config, "device")
    if isinstance(device, str) and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        return [f"device={device}: expected auto | cpu | cuda | cuda:<index>"]
    return []


CROSS_CHECKS: list[Callable[[DictConfig], list[str]]] = [
    _something_to_train, _critic_subset, _aca_structure, _encoder_fits_task, _clip_order, _even_video, _device_name,
]


def entropy_bonus_warning(config: DictConfig, action_dim: int) -> str | None:
    """A warning when the entropy bonus can outweigh the cost of a step, or None.

    With the entropy in the critic's target, every step pays r + alpha * H (H: the policy's
    entropy), and a tanh-squashed policy's entropy reaches action_dim * log 2 (uniform on
    [-1, 1]^A). A step short of success earns reward_bias (the sparse 0/1 reward scaled, then
    shifted). Where alpha * H can exceed its cost, an episode that goes on is worth more than one
    that succeeds (success ends it): the critic then teaches the policy to avoid success until
    alpha has fallen. Measured with ACA at alpha 1 (docs/results.md, ACA and the temperature)."""
    algo = config.algo
    if not algo.get("backup_entropy", False):
        return None
    alpha = math.exp(min(float(algo.init_log_alpha), 700.0))  # no OverflowError for an absurd start
    largest_bonus = alpha * action_dim * math.log(2)
    step_reward = float(config.reward_bias)
    if largest_bonus + step_reward <= 0:
        return None
    safe_alpha = -step_reward / (action_dim * math.log(2))
    until = f"until alpha falls below {safe_alpha:.3g}" if safe_alpha > 0 else "at any temperature above 0"
    return (f"warning: algo={algo.name} puts the entropy in its critic's target with algo.init_log_alpha="
            f"{float(algo.init_log_alpha):g} (alpha {alpha:.3g}): the entropy bonus can reach {largest_bonus:.2f} a step "
            f"against a step reward of {step_reward:g}, so {until} a failed episode can be worth more than a success "
            f"(docs/results.md, ACA and the temperature)")
