"""ACA, Actor-Critic Alignment (Yu & Zhang, ICML 2023), on pixels (`algo=aca`).

Follows the official code (ZishunYu/Actor-Critic-Alignment, on d3rlpy 1.1):

* Offline, "SAC+ML" (`sacml_agent/sacml_impl.py`): SAC critics with the entropy backup in the
  target (`compute_target`: subtract alpha log pi(a'|s')), automatic temperature (init 1 there;
  0.1 in configs/algo/aca.yaml, which says why), and
  `compute_actor_loss`: lambda * mean(alpha log pi(a~|s) - min_k Q_k(s, a~)) - mean(log pi(a|s)),
  lambda = alpha_ML / mean|min Q(s, a~)| detached (`bc_scale`, losses.ml_normalised_actor_loss).
  `compute_baseline_loss` / `compute_baseline_target`: Z heads Z_k(s) (`num_z`) trained with
  sum_k mean((log pi(a|s) + Z_k(s) - y_Z)^2), y_Z = r + gamma (1 - d) [log pi(a'|s') +
  min_k Z_k(s') - alpha log pi(a'|s')], a' ~ pi(.|s'), all of y_Z and log pi(a|s) detached, y_Z
  from the CURRENT Z heads (there is no target Z).
* The switch (`run_aca.py`, `utility.py` `critic_init`; here `on_online_start`): temperature
  reset to exp(online_init_log_alpha) = 1; pi_0 = a frozen copy of the actor; new critics R
  initialised from Z layer by layer, the first layer's action columns zeroed so R_k(s, a) =
  Z_k(s); target R hard-synced.
* Online (`aca_agent/aca_impl.py`): Q(s, a) = R(s, a) + w c(log pi_0(a|s)), with `clip_log_pi`'s
  soft lower clip c(x) = softplus(x - m(s)) + m(s) (losses.soft_lower_clip), m(s) = the smaller
  of pi_0's log-densities at the pre-tanh points mu -+ beta sigma (`_log_prob_from_raw_y`).
  `compute_target`: y = r + gamma (1 - d) [min_k R_target_k(s', a') + w c(log pi_0(a'|s')) -
  alpha log pi(a'|s')]; `compute_critic_loss`: sum_k mean((R_k(s, a) + w c(log pi_0(a|s)) - y)^2),
  the prior term detached; `compute_actor_loss`: mean(alpha log pi(a~|s) - min_k R_k(s, a~) -
  w c(log pi_0(a~|s))), the gradient flowing through a~ into the clipped prior (pi_0 frozen);
  `update_actor` clips the actor's gradient norm at 0.25. Z is not trained online.
  `ACA._update_interpolation`: w decays linearly after every online gradient step, here
  w <- max(w - (start - end) / prior_decay_steps, end) (the official (1, 40, 0.5) reaches 0.5
  after 20 000 steps, as the default prior_weight_* / prior_decay_steps here do).

Pixel choices (this project's convention, agents/base.py): one encoder, trained by the critic
side only. Offline the TD loss and the Z loss are summed into ONE backward through ONE critic
optimizer over encoder + critics + Z heads (two optimizers stepping one shared encoder would
each see the other's stale graph). The actor reads detached features. At the switch pi_0 keeps a
frozen copy of the encoder it acted with, and reads the same randomly shifted images as the
critic; the target encoder is hard-synced to the encoder so that the target R starts equal to Z
too; R gets a new critic optimizer over encoder + R. The offline SAC critic is discarded:
`self.critic` / `self.target_critic` ARE R and its target online, so the base machinery
(targets, q_values) keeps working.

Deviations from the official code:

* One update runs actor -> temperature -> critic(s) from the pre-update parameters of one batch
  (this family's order, agents/sac.py); the official runs temperature -> critic -> Z -> actor,
  each reading what the previous step left. The critic target and the Z target share one a'.
* `backup_entropy` (on in configs/algo/aca.yaml, as in the official code) switches the
  alpha log pi(a'|s') term in all three targets (Q, Z, R) together, so Z stays aligned with the
  critic it will initialise; on by default, as in the official code.
* At the switch the temperature and critic optimizers are new; the official `load_model` keeps
  the offline Adam moments of log alpha (and of the discarded Q, reused for R).
* The actor loss uses `actor_q` (default min, the official reduction) on R.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from calql_vision.agents.base import ObsSpec
from calql_vision.agents.sac import SACAgent
from calql_vision.losses import (
    ensemble_min, ml_normalised_actor_loss, sac_actor_loss, soft_lower_clip, td_target, temperature_loss,
)
from calql_vision.networks import QEnsemble, StateValue, TanhGaussianActor, tanh_gaussian_log_prob

ACTOR_GRAD_CLIP = 0.25  # aca_impl.py update_actor: clip_grad_norm_(policy, 0.25), online only


class ACAAgent(SACAgent):
    """Offline SAC+ML with Z(s) heads; online SAC on Q = R + w c(log pi_0) with R initialised from Z."""

    METRICS = SACAgent.METRICS + (
        "z_loss", "z_mean", "bc_lambda", "log_pi_data", "prior_weight", "prior_mean", "actor_grad_norm",
    )
    PROGRESS = {"q": "q_data_mean", "G": "mc_return_mean", "td": "td_loss"}

    def __init__(self, cfg: Any, encoder_cfg: Any, spec: ObsSpec, device: torch.device, precision: str = "bf16") -> None:
        if int(getattr(cfg, "critic_updates", 1)) != 1:
            raise ValueError("algo=aca runs one critic update per actor update: critic_updates must be 1")
        super().__init__(cfg, encoder_cfg, spec, device, precision)
        self.z = StateValue(self.feature_dim, cfg.hidden_dims, cfg.orthogonal_init, num_heads=cfg.num_z).to(device)
        # One optimizer for everything the critic side trains (encoder, Q heads, Z heads).
        self.critic_optimizer = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.critic.parameters()) + list(self.z.parameters()),
            lr=cfg.critic_lr,
        )
        self.prior_weight = float(cfg.prior_weight_start)
        self.reference_actor: TanhGaussianActor | None = None  # pi_0, from the switch on
        self.reference_encoder: nn.Module | None = None

    # ------------------------------------------------------------------ the switch
    def _build_online_structure(self) -> None:
        """The structural part of the switch (also run before loading an online checkpoint):
        frozen pi_0 (actor + encoder), critics R with num_z heads and their target, new
        critic and temperature optimizers. Weights are set by on_online_start or by loading."""
        cfg = self.cfg
        self.reference_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.reference_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.critic = QEnsemble(
            self.feature_dim, self.action_dim, cfg.hidden_dims, cfg.orthogonal_init, num_heads=cfg.num_z,
        ).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_optimizer = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.critic.parameters()), lr=cfg.critic_lr
        )
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.online = True

    def on_online_start(self) -> None:
        if self.online:
            return
        cfg = self.cfg
        self._build_online_structure()
        with torch.no_grad():
            for z_head, r_head in zip(self.z.heads, self.critic.heads):
                _init_from_state_value(r_head, z_head, self.feature_dim)
            self.target_critic.load_state_dict(self.critic.state_dict())
            self.target_encoder.load_state_dict(self.encoder.state_dict())
        super().on_online_start()  # the temperature at the switch: online_init_log_alpha
        self.prior_weight = float(cfg.prior_weight_start)

    # ------------------------------------------------------------------ the prior w c(log pi_0)
    def _reference(self, reference_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pi_0's pre-tanh (mean, log_std) (B, A) and the clip floor m(s) (B,), no gradient:
        m = min of log pi_0 at the pre-tanh points mean -+ beta std (the official
        `_log_prob_from_raw_y`, read before the tanh so saturated points stay exact)."""
        with torch.no_grad():
            mean, log_std = self.reference_actor.distribution(reference_features)
            std = log_std.exp()
            beta = float(self.cfg.clip_beta)
            low = tanh_gaussian_log_prob(mean - beta * std, mean, log_std, std)
            high = tanh_gaussian_log_prob(mean + beta * std, mean, log_std, std)
            return mean, log_std, torch.minimum(low, high)

    def _prior(self, reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        """w c(log pi_0(a|s)) (B,), differentiable in the actions only (pi_0 is frozen)."""
        mean, log_std, floor = reference
        log_pi0 = TanhGaussianActor.log_prob_from(mean, log_std, actions)
        return self.prior_weight * soft_lower_clip(log_pi0, floor)

    def _decay_prior_weight(self) -> None:
        cfg = self.cfg
        if cfg.prior_decay_steps <= 0:
            return
        start, end = float(cfg.prior_weight_start), float(cfg.prior_weight_end)
        w = self.prior_weight - (start - end) / cfg.prior_decay_steps
        self.prior_weight = max(w, end) if start >= end else min(w, end)

    # ------------------------------------------------------------------ losses
    def _entropy_backup(self, alpha: torch.Tensor, next_log_prob: torch.Tensor) -> torch.Tensor:
        """alpha log pi(a'|s'), subtracted in all three targets (Q, Z, R) when backup_entropy
        is on (the official code, and configs/algo/aca.yaml); 0 otherwise."""
        return alpha * next_log_prob if self.cfg.backup_entropy else torch.zeros_like(next_log_prob)

    def _offline_actor_loss(self, batch: dict, features: torch.Tensor, alpha: torch.Tensor):
        """SAC+ML: (loss, lambda, log pi(a~|s), log pi(a|s) of the data). Reads detached features."""
        features = features.detach()
        new_actions, log_prob = self.actor(features)
        q_new = self.actor_q(self.critic(features, new_actions))
        log_pi_data = self.actor.log_prob(features, batch["actions"])
        loss, lam = ml_normalised_actor_loss(log_prob, q_new, alpha, log_pi_data, self.cfg.bc_scale)
        return loss, lam, log_prob, log_pi_data

    def _online_actor_loss(self, features: torch.Tensor, reference, alpha: torch.Tensor):
        """mean(alpha log pi(a~|s) - (min_k R_k(s, a~) + w c(log pi_0(a~|s)))): (loss, log pi(a~|s)).
        Reads detached features; the prior's gradient reaches the actor through a~ only."""
        features = features.detach()
        new_actions, log_prob = self.actor(features)
        q_new = self.actor_q(self.critic(features, new_actions)) + self._prior(reference, new_actions)
        return sac_actor_loss(log_prob, q_new, alpha), log_prob

    # ------------------------------------------------------------------ updates
    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        return self._online_update(batch) if self.online else self._offline_update(batch)

    def _offline_update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        features, next_features, target_next_features = self.encode_batch(batch)
        alpha = self.log_alpha.exp().detach()

        # Actor (SAC + maximum likelihood) and temperature.
        actor_loss, lam, log_prob, log_pi_data = self._offline_actor_loss(batch, features, alpha)
        alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)

        # Targets: one a' ~ pi(.|s') serves the soft TD target and the Z target.
        with torch.no_grad():
            next_actions, next_log_prob = self.actor(next_features)
            entropy_backup = self._entropy_backup(alpha, next_log_prob)
            target_q = self.bootstrap_value(
                ensemble_min(self.target_critic(target_next_features, next_actions), cfg.target_critics))
            target = td_target(batch["rewards"], batch["terminals"], target_q - entropy_backup, cfg.discount)
            z_next = self.z(next_features).min(dim=0).values  # current Z heads, online encoder
            z_target = td_target(
                batch["rewards"], batch["terminals"], next_log_prob + z_next - entropy_backup, cfg.discount
            )

        # Critics and Z heads: one loss, one backward, one optimizer (they share the encoder).
        _, td_loss, td_metrics = self.td_terms(batch, features, target)
        z = self.z(features)  # (num_z, B)
        z_loss = ((log_pi_data.detach().unsqueeze(0) + z - z_target.unsqueeze(0)) ** 2).mean(dim=-1).sum()
        critic_loss = td_loss + z_loss

        self._step(actor_loss, self.actor_optimizer)
        self._step(alpha_loss, self.alpha_optimizer)
        self._step(critic_loss, self.critic_optimizer)
        self._update_targets()
        self.num_updates += 1
        return self._floats({
            **td_metrics,
            **self.bootstrap_outside,
            "critic_loss": critic_loss,
            "mc_return_mean": batch["reward_to_go"].mean(),
            "actor_loss": actor_loss,
            "alpha": alpha,
            "entropy": -log_prob.mean(),
            "z_loss": z_loss / z.shape[0],
            "z_mean": z.mean(),
            "bc_lambda": lam,
            "log_pi_data": log_pi_data.mean(),
        })

    def _encode_online(self, batch: dict[str, Any]):
        """encode_batch's three feature sets, plus pi_0's frozen-encoder features of the same
        shifted s and s'."""
        obs_images, next_images = self.shift_batch(batch)
        features = self.encode(self.encoder, obs_images, batch["proprio"])
        with torch.no_grad():
            next_features = self.encode(self.encoder, next_images, batch["next_proprio"])
            target_next_features = self.encode(self.target_encoder, next_images, batch["next_proprio"])
            reference_features = self.encode(self.reference_encoder, obs_images, batch["proprio"])
            reference_next_features = self.encode(self.reference_encoder, next_images, batch["next_proprio"])
        return features, next_features, target_next_features, reference_features, reference_next_features

    def _online_update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        features, next_features, target_next_features, reference_features, reference_next_features = (
            self._encode_online(batch)
        )
        alpha = self.log_alpha.exp().detach()
        reference = self._reference(reference_features)
        reference_next = self._reference(reference_next_features)

        # Actor on R + w c(log pi_0), and temperature.
        actor_loss, log_prob = self._online_actor_loss(features, reference, alpha)
        alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)

        with torch.no_grad():
            next_actions, next_log_prob = self.actor(next_features)
            # The clip (algo.clip_bootstrap) bounds Q(s', a') = R + w c(log pi_0), the value the
            # target bootstraps from, not the residual R alone.
            next_q = (ensemble_min(self.target_critic(target_next_features, next_actions), cfg.target_critics)
                      + self._prior(reference_next, next_actions))
            next_value = self.bootstrap_value(next_q) - self._entropy_backup(alpha, next_log_prob)
            target = td_target(batch["rewards"], batch["terminals"], next_value, cfg.discount)
            prior_data = self._prior(reference, batch["actions"])
            log_pi_data = self.actor.log_prob(features.detach(), batch["actions"])

        # Critics R: Q = R + w c(log pi_0(a|s)), the prior term a constant.
        q_data = self.critic(features, batch["actions"]) + prior_data.unsqueeze(0)  # (H, B)
        td_loss = ((q_data - target.unsqueeze(0)) ** 2).mean(dim=-1).sum()

        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.actor.parameters(), ACTOR_GRAD_CLIP)
        self.actor_optimizer.step()
        self._step(alpha_loss, self.alpha_optimizer)
        self._step(td_loss, self.critic_optimizer)  # drops what actor_loss left on R
        self._update_targets()
        self.num_updates += 1
        weight = self.prior_weight
        self._decay_prior_weight()
        return self._floats({
            **self.bootstrap_outside,
            "td_loss": td_loss / q_data.shape[0],
            "critic_loss": td_loss,
            "q_data_mean": q_data.mean(),
            "target_q_mean": target.mean(),
            "mc_return_mean": batch["reward_to_go"].mean(),
            "actor_loss": actor_loss,
            "alpha": alpha,
            "entropy": -log_prob.mean(),
            "log_pi_data": log_pi_data.mean(),
            "prior_weight": weight,
            "prior_mean": prior_data.mean(),
            "actor_grad_norm": grad_norm,
        })

    @torch.no_grad()
    def q_values(self, batch: dict[str, Any]):
        """The Q the agent acts on, on un-augmented observations: offline min_k Q_k(s, a);
        online min_k R_k(s, a) + w c(log pi_0(a|s))."""
        if not self.online:
            return super().q_values(batch)
        features = self.encode(self.encoder, batch["obs"], batch["proprio"])
        reference = self._reference(self.encode(self.reference_encoder, batch["obs"], batch["proprio"]))
        q = self.critic(features, batch["actions"]).min(0).values + self._prior(reference, batch["actions"])
        return q.cpu().numpy()

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, Any]:
        modules = {**super()._modules(), "z": self.z}
        if self.online:
            modules.update(reference_actor=self.reference_actor, reference_encoder=self.reference_encoder)
        return modules

    def _extra_state(self) -> dict[str, Any]:
        return {"online": self.online, "prior_weight": self.prior_weight}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.prior_weight = float(state["prior_weight"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """An online state into an offline agent first builds the online modules (pi_0, R and
        its target, the new optimizers), then loads every weight into them."""
        online = bool(state.get("online", False))
        if online and not self.online:
            self._build_online_structure()
        elif self.online and not online:
            raise ValueError("an offline ACA state cannot be loaded into an agent past the offline-to-online switch")
        super().load_state_dict(state)


def _init_from_state_value(q_head: nn.Sequential, z_head: nn.Sequential, feature_dim: int) -> None:
    """utility.py critic_init: copy every layer of Z_k into R_k; in the first layer Z's weight
    fills the feature columns and the action columns are zero, so R_k(s, a) = Z_k(s)."""
    if len(q_head) != len(z_head) or any(type(q) is not type(z) for q, z in zip(q_head, z_head)):
        raise ValueError("R and Z heads must have the same layers")
    linears = [(q, z) for q, z in zip(q_head, z_head) if isinstance(q, nn.Linear)]
    (q_first, z_first), rest = linears[0], linears[1:]
    q_first.weight.zero_()
    q_first.weight[:, :feature_dim].copy_(z_first.weight)
    q_first.bias.copy_(z_first.bias)
    for q, z in rest:
        q.weight.copy_(z.weight)
        q.bias.copy_(z.bias)
