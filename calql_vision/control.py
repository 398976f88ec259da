"""The offline continuation control of an offline-to-online run.

A drop after the switch means little on its own: at a small budget the offline policy's
success also swings when offline training simply goes on. The control answers "what did the
online phase add over more offline training?": the run's own checkpoint at the switch (weights,
optimisers, random state) trained on the dataset alone for as many updates as the online phase
makes, evaluated at the same update counts. `train control_of=<run>` makes one; `compare`
makes one per pretraining run (control=true).

Its rows past the switch have phase `control`; their env_step is the online run's environment
step at the same update count (warm-up + updates / utd), so both share the online x axis.
"""
from __future__ import annotations

import math
from typing import Any

CONTROL_PHASE = "control"
CONTROL_SUFFIX = "-control"  # runs_root/<task>/<algo>-control/<timestamp>


def online_updates(cfg: Any) -> int:
    """Gradient updates the online phase of a run with these settings makes: utd per
    environment step after the warm-up, counting the steps the last lock-step of num_envs
    workers takes past online_env_steps."""
    steps = math.ceil(cfg.online_env_steps / cfg.num_envs) * cfg.num_envs
    return cfg.algo.utd * max(0, steps - cfg.algo.warmup_steps)


def equivalent_env_step(cfg: Any, updates_after_switch: int) -> int:
    """The online run's environment step when it had made this many online updates."""
    if updates_after_switch <= 0:
        return 0
    return cfg.algo.warmup_steps + math.ceil(updates_after_switch / cfg.algo.utd)


def early_evaluation_points(eval_every: int, count: int) -> set[int]:
    """Updates after the switch of the eval_early extra evaluations: eval_every/2, /4, ... (count of
    them), the ones that round to 0 or repeat dropped."""
    return {eval_every >> k for k in range(1, count + 1)} - {0}
