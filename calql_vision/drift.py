"""How far the policy and its representation move between metric rows (the drift metrics).

A fixed probe set of dataset observations is chosen once per run; at every metric row the
agent's view of it is compared with its view at the previous row:

* `action_change`: mean |a_now - a_before| of the deterministic action tanh(mean), over the
  probe set and the action dimensions; `action_change_<i>` per dimension i;
* `feature_change`: mean over the probe set of 1 - cos(features_now, features_before), on
  the encoder's output (what actor and critics read; a state task without an encoder MLP
  reads the state itself, so it stays 0);
* `policy_std`: the actor's mean pre-tanh std on the probe set; `policy_std_<i>` per dimension.

A run's first row has no earlier view, so its changes are empty. The previous view is saved
with checkpoints, so a resumed run logs the same changes as one that never stopped.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

PROBE_SIZE = 256
# Fixed, so every run on the same data probes the same observations.
PROBE_SEED = 12345


def drift_columns(action_dim: int) -> list[str]:
    """metrics.csv columns of the drift metrics, in order."""
    per_dim = lambda name: [f"{name}_{i}" for i in range(action_dim)]  # noqa: E731
    return ["action_change", *per_dim("action_change"), "feature_change", "policy_std", *per_dim("policy_std")]


def one_minus_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a_i, b_i) per row, as half the squared distance of the unit vectors: exactly 0
    for identical rows (1 - cosine_similarity rounds to a few 1e-8 there), and accurate for
    the small changes that matter here."""
    unit = lambda x: x.double() / x.double().norm(dim=1, keepdim=True).clamp(min=1e-12)  # noqa: E731
    return 0.5 * (unit(a) - unit(b)).pow(2).sum(dim=1)


class DriftProbe:
    """The probe set (observations s of up to PROBE_SIZE distinct transitions of `replay`,
    a calql_vision.replay.FrameReplay) and the agent's view of it at the previous row."""

    def __init__(self, replay: Any, device: torch.device, size: int = PROBE_SIZE) -> None:
        rng = np.random.default_rng(PROBE_SEED)
        count = min(size, len(replay))
        indices = np.sort(rng.choice(np.arange(replay.valid_start, replay.num_transitions_added), count, replace=False))
        batch = replay.gather(indices, device)
        self.images, self.proprio = batch["obs"], batch["proprio"]
        self.previous: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.proprio)

    def measure(self, agent: Any) -> dict[str, float]:
        """The drift metrics of `agent` now, against the view kept at the previous call."""
        # Compared on the CPU, where the previous view is kept (a checkpoint's, too).
        view = {key: value.float().cpu() for key, value in agent.probe(self.images, self.proprio).items()}
        std = view["std"].mean(0)
        metrics = {"policy_std": float(std.mean()), **{f"policy_std_{i}": float(v) for i, v in enumerate(std)}}
        if self.previous is not None:
            change = (view["action"] - self.previous["action"]).abs().mean(0)
            metrics["action_change"] = float(change.mean())
            metrics.update({f"action_change_{i}": float(v) for i, v in enumerate(change)})
            metrics["feature_change"] = float(one_minus_cosine(view["features"], self.previous["features"]).mean())
        self.previous = {key: view[key] for key in ("action", "features")}
        return metrics

    def state(self) -> dict[str, torch.Tensor] | None:
        return self.previous

    def load_state(self, state: dict[str, torch.Tensor] | None) -> None:
        self.previous = None if state is None else {key: value.clone() for key, value in state.items()}
