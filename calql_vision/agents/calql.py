"""Cal-QL and CQL on pixels (`algo=calql`, `algo=cql`), and the pretraining of `algo=wsrl`.

Losses follow the official JAX code (nakamotoo/Cal-QL, `JaxCQL/conservative_sac.py`,
`ConservativeSAC._train_step`); see the design notes summarised in
docs/algorithms.md. This class is SAC (agents/sac.py) with one change, the critic objective:
TD (with the max-target backup) plus the conservative gap, whose policy samples Cal-QL bounds
below by the reward-to-go. Pixel-specific choices: each state is encoded once and its
embedding tiled across the 3N CQL actions; the CQL samples are scored by the critic on the
critic's encoder features.

WSRL (zhouzypaul/wsrl, `finetune.py`, `SACAgent.update_high_utd`) is a config of this class:
Cal-QL pretraining with a LayerNorm ensemble, then `conservative_online: false` turns the
critic objective into plain SAC at the switch (no offline data, see configs/algo/wsrl.yaml).
"""
from __future__ import annotations

from typing import Any

import torch

from calql_vision.agents.base import ObsSpec
from calql_vision.agents.sac import SACAgent
from calql_vision.losses import conservative_gap, ensemble_min, td_target


class CalQLAgent(SACAgent):
    """Cal-QL actor-critic; with `calibrated: false` it is CQL."""

    LEARNING_RATES = {**SACAgent.LEARNING_RATES, "cql_alpha_optimizer": "critic_lr"}
    METRICS = SACAgent.METRICS + ("cql_gap", "cql_alpha", "bound_rate", "q_random_mean", "q_policy_mean")

    def __init__(self, cfg: Any, encoder_cfg: Any, spec: ObsSpec, device: torch.device, precision: str = "bf16") -> None:
        super().__init__(cfg, encoder_cfg, spec, device, precision)
        # The reference initialises log alpha' to 1.0.
        self.log_cql_alpha = torch.tensor(1.0, device=device, requires_grad=True)
        self.cql_alpha_optimizer = torch.optim.Adam([self.log_cql_alpha], lr=cfg.critic_lr)
        self.calibration_enabled = bool(cfg.calibrated)
        self.conservative = True

    def on_online_start(self) -> None:
        super().on_online_start()
        if not self.cfg.calibrate_online:
            self.calibration_enabled = False
        if not self.cfg.conservative_online:
            self.conservative = False

    # ------------------------------------------------------------------ losses
    def _max_backup_target(self, batch: dict, next_features: torch.Tensor, target_next_features: torch.Tensor,
                           alpha: torch.Tensor) -> torch.Tensor:
        """y with the max-target backup: max over N next actions of min over target critics."""
        cfg = self.cfg
        with torch.no_grad():
            next_actions, next_log_prob = self.actor(next_features, cfg.cql_n_actions)
            target_q = ensemble_min(self.target_critic(target_next_features, next_actions), cfg.target_critics)  # (B, N)
            target_q, best = target_q.max(dim=-1)
            target_q = self.bootstrap_value(target_q)
            if cfg.backup_entropy:
                next_log_prob = next_log_prob.gather(-1, best.unsqueeze(-1)).squeeze(-1)
                target_q = target_q - alpha * next_log_prob
            return td_target(batch["rewards"], batch["terminals"], target_q, cfg.discount)

    def _cql_terms(self, batch: dict, features: torch.Tensor, next_features: torch.Tensor, q_data: torch.Tensor):
        """Score the 3N sampled actions at s and hand them to `conservative_gap`."""
        cfg = self.cfg
        batch_size, n = features.shape[0], cfg.cql_n_actions
        random_actions = torch.empty(batch_size, n, self.action_dim, device=self.device).uniform_(-1.0, 1.0)
        with torch.no_grad():
            # Policy samples carry no gradient into the actor from this loss.
            current_actions, current_log_prob = self.actor(features.detach(), n)
            next_actions, next_log_prob = self.actor(next_features, n)
        return conservative_gap(
            q_data=q_data,
            q_random=self.critic(features, random_actions),
            q_current=self.critic(features, current_actions),
            q_next=self.critic(features, next_actions),  # pi(.|s') actions scored at s
            log_prob_current=current_log_prob,
            log_prob_next=next_log_prob,
            reward_to_go=batch["reward_to_go"],
            action_dim=self.action_dim,
            calibrated=self.calibration_enabled,
            importance_sample=cfg.cql_importance_sample,
            temperature=cfg.cql_temperature,
            clip_diff=(cfg.cql_clip_diff_min, cfg.cql_clip_diff_max),
        )

    def _critic_objective(self, batch: dict, features: torch.Tensor, next_features: torch.Tensor,
                          target_next_features: torch.Tensor, alpha: torch.Tensor):
        if not self.conservative:  # WSRL online: plain SAC
            return super()._critic_objective(batch, features, next_features, target_next_features, alpha)
        cfg = self.cfg
        if cfg.cql_max_target_backup:
            target = self._max_backup_target(batch, next_features, target_next_features, alpha)
        else:
            target = self.sac_target(batch, next_features, target_next_features, alpha)
        q_data, td_loss, metrics = self.td_terms(batch, features, target)
        gap, cql_stats = self._cql_terms(batch, features, next_features, q_data)
        auxiliary = []
        if cfg.cql_lagrange:
            cql_alpha = self.log_cql_alpha.exp().clamp(0.0, 1e6)
            conservative = (cql_alpha.detach() * cfg.cql_weight * (gap - cfg.cql_target_gap)).sum()
            cql_alpha_loss = -0.5 * (cql_alpha * cfg.cql_weight * (gap.detach() - cfg.cql_target_gap)).sum()
            auxiliary.append((cql_alpha_loss, self.cql_alpha_optimizer))
        else:
            cql_alpha = torch.tensor(1.0)
            conservative = cfg.cql_weight * gap.sum()
        metrics.update(cql_gap=gap.mean(), cql_alpha=cql_alpha, **cql_stats)
        return td_loss + conservative, metrics, auxiliary

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, Any]:
        return {**super()._modules(), "cql_alpha_optimizer": self.cql_alpha_optimizer}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**super()._tensors(), "log_cql_alpha": self.log_cql_alpha}

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "calibration_enabled": self.calibration_enabled, "conservative": self.conservative}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        self.calibration_enabled = bool(state["calibration_enabled"])
        # Checkpoints written before WSRL existed were always conservative.
        self.conservative = bool(state.get("conservative", True))
