"""SAC on pixels with a critic ensemble: `algo=sac` (from scratch) and `algo=rlpd`.

Follows the SAC learner of RLPD (ikostrikov/rlpd, `rlpd/agents/sac/sac_learner.py`,
`SACLearner.update_actor`, `update_critic`, `update_temperature`); RLPD itself is a config of
that learner (`configs/rlpd_config.py`: 10 LayerNorm critics, target = min over a random 2,
offline_ratio 0.5), as `configs/algo/rlpd.yaml` is here. Its pixel learner
(`rlpd/agents/drq/drq_learner.py`) shares one conv encoder trained by the critic loss, with
the actor on detached features, which is this project's convention too (agents/base.py).

One update = actor, temperature, then critics, all from the pre-update parameters of the same
batch; subclasses change only `_critic_objective` (Cal-QL) or add terms around it.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from calql_vision.agents.base import ObsSpec, PixelAgent
from calql_vision.losses import ensemble_min, sac_actor_loss, td_target, temperature_loss
from calql_vision.networks import QEnsemble, TanhGaussianActor


class SACAgent(PixelAgent):
    """SAC: tanh-Gaussian actor, critic ensemble with Polyak targets, automatic temperature."""

    LEARNING_RATES = {"critic_optimizer": "critic_lr", "actor_optimizer": "actor_lr", "alpha_optimizer": "alpha_lr"}
    METRICS = (
        "td_loss", "critic_loss", "q_data_mean", "target_q_mean", "mc_return_mean",
        "actor_loss", "alpha", "entropy", "bootstrap_below_range", "bootstrap_above_range",
    )

    def __init__(self, cfg: Any, encoder_cfg: Any, spec: ObsSpec, device: torch.device, precision: str = "bf16") -> None:
        super().__init__(cfg, encoder_cfg, spec, device, precision)
        if cfg.actor_q not in ("min", "mean"):
            raise ValueError(f"algo.actor_q must be min or mean, got '{cfg.actor_q}'")
        self.critic = QEnsemble(
            self.feature_dim, spec.action_dim, cfg.hidden_dims, cfg.orthogonal_init,
            num_heads=cfg.num_critics, layer_norm=cfg.critic_layer_norm,
        ).to(device)
        self.actor = TanhGaussianActor(
            self.feature_dim, spec.action_dim, cfg.hidden_dims, cfg.orthogonal_init, layer_norm=cfg.actor_layer_norm
        ).to(device)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(cfg.init_log_alpha), device=device, requires_grad=True)
        self.target_entropy = -float(spec.action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        self.critic_optimizer = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.critic.parameters()), lr=cfg.critic_lr
        )
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.online = False
        # The shares of the last update's bootstrap values below and above that range (logged
        # clipped or not: they show which edge a critic leaves, and which one a clip binds).
        self.bootstrap_outside: dict[str, torch.Tensor] = {}

    def on_online_start(self) -> None:
        self.online = True
        if self.cfg.online_init_log_alpha is not None:  # a pretraining's temperature may not suit exploring
            with torch.no_grad():
                self.log_alpha.fill_(float(self.cfg.online_init_log_alpha))
        self._hold_encoder_online()

    def _hold_encoder_online(self) -> None:
        """algo.online_freeze_encoder: past the switch the encoder gets no gradient, so Adam
        leaves it where the pretraining put it (a parameter without a gradient is skipped) and
        the actor, which reads detached features, no longer sees them move under it. Called at
        the switch and after loading an online state (a resumed run)."""
        if self.online and self.cfg.online_freeze_encoder:
            self.encoder.requires_grad_(False)

    # ------------------------------------------------------------------ pieces
    def actor_q(self, q: torch.Tensor) -> torch.Tensor:
        """The value the actor maximises from ensemble values q (H, B): min (Cal-QL) or mean (RLPD)."""
        return q.min(0).values if self.cfg.actor_q == "min" else q.mean(0)

    def bootstrap_value(self, next_q: torch.Tensor) -> torch.Tensor:
        """The next state's value a TD target bootstraps from: with algo.clip_bootstrap, clipped to
        the range every return lies in. A conservative critic's Q can fall below any return
        (CQL's did, online), and a target outside that range only teaches the critic values no
        policy can have."""
        if self.return_range is not None:
            low, high = self.return_range
            self.bootstrap_outside = {"bootstrap_below_range": (next_q < low).float().mean(),
                                      "bootstrap_above_range": (next_q > high).float().mean()}
        if not self.cfg.clip_bootstrap:
            return next_q
        if self.return_range is None:
            raise ValueError("algo.clip_bootstrap needs the range of the returns: set agent.return_range "
                             "(calql_vision.losses.return_range) before updating")
        return next_q.clamp(*self.return_range)

    def sac_target(self, batch: dict, next_features: torch.Tensor, target_next_features: torch.Tensor,
                   alpha: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - d) [min over (a subset of) target critics of Q(s', a') (- alpha log pi(a'|s'))]."""
        with torch.no_grad():
            next_actions, next_log_prob = self.actor(next_features)
            target_q = self.bootstrap_value(
                ensemble_min(self.target_critic(target_next_features, next_actions), self.cfg.target_critics))
            if self.cfg.backup_entropy:
                target_q = target_q - alpha * next_log_prob
            return td_target(batch["rewards"], batch["terminals"], target_q, self.cfg.discount)

    def td_terms(self, batch: dict, features: torch.Tensor, target: torch.Tensor):
        """Q(s, a) of the data (H, B), the TD loss summed over the heads (each head's batch mean
        of (Q - y)^2, no 1/2), and its metrics (td_loss per head, mean Q, mean y)."""
        q_data = self.critic(features, batch["actions"])
        td_loss = ((q_data - target.unsqueeze(0)) ** 2).mean(dim=-1).sum()
        metrics = {"td_loss": td_loss / q_data.shape[0], "q_data_mean": q_data.mean(), "target_q_mean": target.mean()}
        return q_data, td_loss, metrics

    def _critic_objective(self, batch: dict, features: torch.Tensor, next_features: torch.Tensor,
                          target_next_features: torch.Tensor, alpha: torch.Tensor):
        """(critic loss, metrics, auxiliary [(loss, optimizer)] stepped after the critic)."""
        target = self.sac_target(batch, next_features, target_next_features, alpha)
        _, td_loss, metrics = self.td_terms(batch, features, target)
        return td_loss, metrics, []

    # ------------------------------------------------------------------ update
    @property
    def batch_slices(self) -> int:
        """The trainer samples batch_size * batch_slices rows per update call. The high UTD is
        an online setting: WSRL pretrains as plain Cal-QL and fine-tunes with UTD 4."""
        return self.cfg.critic_updates if self.online else 1

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """With critic_updates = K > 1 (RLPD's utd_ratio, WSRL's high UTD), the batch holds K
        slices: K - 1 critic-only updates, each followed by a target update, then one joint
        update on the last slice, as `SACLearner.update` runs its critic loop then the actor."""
        slices = self.batch_slices
        for index in range(slices - 1):
            self._critic_only_update(_batch_slice(batch, index, slices))
        return self._joint_update(_batch_slice(batch, slices - 1, slices) if slices > 1 else batch)

    def _critic_only_update(self, batch: dict[str, Any]) -> None:
        features, next_features, target_next_features = self.encode_batch(batch)
        alpha = self.log_alpha.exp().detach()
        critic_loss, _, auxiliary = self._critic_objective(batch, features, next_features, target_next_features, alpha)
        self._step_critic_side(critic_loss, auxiliary)

    def _step_critic_side(self, critic_loss: torch.Tensor, auxiliary: list) -> None:
        """Step the critic (and encoder), then the auxiliary losses, then the Polyak targets."""
        self._step(critic_loss, self.critic_optimizer)
        for loss, optimizer in auxiliary:
            self._step(loss, optimizer)
        self._update_targets()

    def _joint_update(self, batch: dict[str, Any]) -> dict[str, float]:
        features, next_features, target_next_features = self.encode_batch(batch)
        alpha = self.log_alpha.exp().detach()

        # Actor and temperature; detached features: the actor never trains the encoder.
        new_actions, log_prob = self.actor(features.detach())
        actor_loss = sac_actor_loss(log_prob, self.actor_q(self.critic(features.detach(), new_actions)), alpha)
        alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)

        critic_loss, critic_metrics, auxiliary = self._critic_objective(
            batch, features, next_features, target_next_features, alpha
        )
        # All losses above used the pre-update parameters; now step each optimizer.
        self._step(actor_loss, self.actor_optimizer)
        self._step(alpha_loss, self.alpha_optimizer)
        self._step_critic_side(critic_loss, auxiliary)  # drops what actor_loss left on the critic
        self.num_updates += 1
        return self._floats({
            **critic_metrics,
            **self.bootstrap_outside,
            "critic_loss": critic_loss,
            "mc_return_mean": batch["reward_to_go"].mean(),
            "actor_loss": actor_loss,
            "alpha": alpha,
            "entropy": -log_prob.mean(),
        })

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "critic": self.critic,
            "actor": self.actor,
            "target_encoder": self.target_encoder,
            "target_critic": self.target_critic,
            "critic_optimizer": self.critic_optimizer,
            "actor_optimizer": self.actor_optimizer,
            "alpha_optimizer": self.alpha_optimizer,
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"log_alpha": self.log_alpha}

    def _extra_state(self) -> dict[str, Any]:
        return {"online": self.online}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.online = bool(state.get("online", False))  # absent in checkpoints older than the flag

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._hold_encoder_online()


def _batch_slice(batch: dict[str, Any], index: int, count: int) -> dict[str, Any]:
    """Rows [index * n, (index + 1) * n) of every tensor in the batch, n = rows / count."""
    def cut(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        size = value.shape[0] // count
        return value[index * size:(index + 1) * size]

    return {k: cut(v) for k, v in batch.items()}
