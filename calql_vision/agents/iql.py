"""IQL on pixels (`algo=iql`): expectile V, TD Q to r + gamma V(s'), advantage-weighted actor.

Follows the official JAX code (ikostrikov/implicit_q_learning): `learner.py` `_update_jit`
runs, on one batch, value -> actor -> critic -> target, each step reading the parameters the
previous steps left:

* `critic.py` `update_v`: V(s) regresses to the `expectile` of min over the TARGET critics of
  Q(s, a) at dataset actions (no policy samples anywhere: the "implicit" part);
* `actor.py` `update`: AWR, -mean(min(exp(beta (Q_target(s, a) - V(s))), 100) log pi(a|s)) with
  the just-updated V;
* `critic.py` `update_q`: both critics regress to r + gamma (1 - d) V(s') of the updated V,
  loss = (q1 - y)^2 + (q2 - y)^2 averaged over the batch;
* Polyak update of the target critics.
Defaults of the fine-tuning setting come from `configs/antmaze_finetune_config.py`. Online,
IQL keeps the same losses: the trainer appends online transitions beside the offline ones and
samples uniformly from both (`mixing_ratio: null`), so `on_online_start` does nothing.

Pixel choices (this project's convention, agents/base.py): one encoder, trained only by the
critic loss through the critic optimizer; V and the actor read detached features; the target
critics read a Polyak copy of the encoder. Random shifts: one draw for s, one for s'; the
target encoder sees the same shifted s as the online one.

Deviation: the official actor is a non-squashed Gaussian with tanh on its mean and a
state-independent log-std clipped to [-5, 2]. Here the family's tanh-Gaussian actor is used,
so acting and evaluation are shared with the other agents; dataset actions at +-1 are read
just inside (-1, 1) by its `log_prob`.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from calql_vision.agents.base import ObsSpec, PixelAgent
from calql_vision.losses import advantage_weights, expectile_loss, td_target
from calql_vision.networks import QEnsemble, StateValue, TanhGaussianActor


class IQLAgent(PixelAgent):
    """IQL: two critics with Polyak targets, one expectile V head, an AWR actor; no temperature."""

    LEARNING_RATES = {"critic_optimizer": "critic_lr", "value_optimizer": "value_lr", "actor_optimizer": "actor_lr"}
    METRICS = (
        "td_loss", "critic_loss", "value_loss", "q_data_mean", "v_mean", "target_q_mean", "mc_return_mean",
        "actor_loss", "adv_mean", "weight_mean", "weight_clip_rate",
    )
    PROGRESS = {"q": "q_data_mean", "G": "mc_return_mean", "v": "v_mean"}

    def __init__(self, cfg: Any, encoder_cfg: Any, spec: ObsSpec, device: torch.device, precision: str = "bf16") -> None:
        super().__init__(cfg, encoder_cfg, spec, device, precision)
        self.critic = QEnsemble(self.feature_dim, spec.action_dim, cfg.hidden_dims, cfg.orthogonal_init, num_heads=2).to(device)
        self.value = StateValue(self.feature_dim, cfg.hidden_dims, cfg.orthogonal_init, num_heads=1).to(device)
        self.actor = TanhGaussianActor(self.feature_dim, spec.action_dim, cfg.hidden_dims, cfg.orthogonal_init).to(device)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # The encoder moves only with the critic; V and the actor have optimizers of their own.
        self.critic_optimizer = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.critic.parameters()), lr=cfg.critic_lr
        )
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=cfg.value_lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)

    # ------------------------------------------------------------------ pieces
    def encode_states(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(online features of s with gradient, target-encoder features of s, online features of s').

        Like `encode_batch`, one random shift for s and one for s' (drawn in that order), but
        IQL needs the target encoder at s (for Q_target(s, a)) rather than at s': the target of
        its TD loss is V(s'), read from the online encoder."""
        obs_images, next_images = self.shift_batch(batch)
        features = self.encode(self.encoder, obs_images, batch["proprio"])
        with torch.no_grad():
            target_features = self.encode(self.target_encoder, obs_images, batch["proprio"])
            next_features = self.encode(self.encoder, next_images, batch["next_proprio"])
        return features, target_features, next_features

    # ------------------------------------------------------------------ update
    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        actions = batch["actions"]
        features, target_features, next_features = self.encode_states(batch)
        detached = features.detach()
        with torch.no_grad():
            # min over the target critics at dataset actions; the target critic does not
            # change until step (4), so the value and actor steps share it.
            q_target = self.target_critic(target_features, actions).min(0).values  # (B,)

        # (1) Value: expectile regression of V(s) toward Q_target(s, a).
        v = self.value(detached)[0]
        value_loss = expectile_loss(q_target - v, cfg.expectile)
        self._step(value_loss, self.value_optimizer)

        # (2) Actor: advantage-weighted log-likelihood of dataset actions, with the updated V.
        with torch.no_grad():
            v_updated = self.value(detached)[0]
        advantage = q_target - v_updated
        weights = advantage_weights(advantage, cfg.temperature, cfg.max_weight)
        actor_loss = -(weights * self.actor.log_prob(detached, actions)).mean()
        self._step(actor_loss, self.actor_optimizer)

        # (3) Critic (and encoder): TD toward r + gamma (1 - d) V(s') of the updated V.
        with torch.no_grad():
            target = td_target(batch["rewards"], batch["terminals"], self.value(next_features)[0], cfg.discount)
        q_data = self.critic(features, actions)  # (2, B)
        per_head = ((q_data - target.unsqueeze(0)) ** 2).mean(dim=-1)
        critic_loss = per_head.sum()  # the official (q1 - y)^2 + (q2 - y)^2, batch-averaged
        self._step(critic_loss, self.critic_optimizer)

        # (4) Polyak: target encoder and target critics.
        self._update_targets()
        self.num_updates += 1
        return self._floats({
            "td_loss": per_head.mean(),
            "critic_loss": critic_loss,
            "value_loss": value_loss,
            "q_data_mean": q_data.mean(),
            "v_mean": v.mean(),
            "target_q_mean": target.mean(),
            "mc_return_mean": batch["reward_to_go"].mean(),
            "actor_loss": actor_loss,
            "adv_mean": advantage.mean(),
            "weight_mean": weights.mean(),
            "weight_clip_rate": (weights >= cfg.max_weight).float().mean(),
        })

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "critic": self.critic,
            "value": self.value,
            "actor": self.actor,
            "target_encoder": self.target_encoder,
            "target_critic": self.target_critic,
            "critic_optimizer": self.critic_optimizer,
            "value_optimizer": self.value_optimizer,
            "actor_optimizer": self.actor_optimizer,
        }
