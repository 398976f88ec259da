"""Cal-QL (and CQL, its calibration switched off) on pixels.

Losses follow the official JAX code (nakamotoo/Cal-QL, conservative_sac.py); see the
README's algorithm section. Pixel-specific choices (DrQ / DrQ-v2 convention):

* one encoder, owned by the critic: only the critic loss trains it; the actor reads
  detached features. The target critics hold their own Polyak copy of the encoder;
* each state is encoded once and its embedding tiled across the 3N CQL actions;
* random shifts are applied to s and s' independently, in training only;
* the encoder may run under bf16 autocast; the Q/policy heads and every loss stay fp32,
  so TD errors and the G-vs-Q comparisons of the bound are not rounded to bf16.

The agent never touches the environment, the logger or the disk: `update(batch)` returns
a dict of floats and `state_dict()` holds everything a checkpoint needs.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from calql_vision.networks import TanhGaussianActor, TwinQ
from encoders import RandomShift, build_encoder


class CalQLAgent:
    """Cal-QL actor-critic; `cfg` is an AlgoConfig, `encoder_cfg` an EncoderConfig."""

    def __init__(
        self,
        cfg: Any,
        encoder_cfg: Any,
        image_keys: list[str],
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        action_dim: int,
        device: torch.device,
        precision: str = "bf16",
    ) -> None:
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be bf16 or fp32, got '{precision}'")
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.image_keys = list(image_keys)
        self.action_dim = action_dim
        self.encoder = build_encoder(
            encoder_cfg.kind,
            image_keys=self.image_keys,
            image_shape=tuple(image_shape),
            proprio_dim=proprio_dim,
            **_encoder_kwargs(encoder_cfg),
        ).to(device)
        feature_dim = self.encoder.output_dim
        self.critic = TwinQ(feature_dim, action_dim, cfg.hidden_dims, cfg.orthogonal_init).to(device)
        self.actor = TanhGaussianActor(feature_dim, action_dim, cfg.hidden_dims, cfg.orthogonal_init).to(device)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.augment = RandomShift(pad=encoder_cfg.augment_pad)

        self.log_alpha = torch.tensor(float(cfg.init_log_alpha), device=device, requires_grad=True)
        # The reference initialises log alpha' to 1.0.
        self.log_cql_alpha = torch.tensor(1.0, device=device, requires_grad=True)
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)

        self.critic_optimizer = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.critic.parameters()), lr=cfg.critic_lr
        )
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.cql_alpha_optimizer = torch.optim.Adam([self.log_cql_alpha], lr=cfg.critic_lr)
        self.calibration_enabled = bool(cfg.calibrated)
        self.num_updates = 0

    # ------------------------------------------------------------------ acting
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode(self, encoder: nn.Module, images: dict[str, torch.Tensor], proprio: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            features = encoder(images, proprio)
        return features.float()

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """One action for one observation ({"<camera>_image": uint8 CHW, "proprio": (P,)})."""
        images = {k: torch.as_tensor(obs[k], device=self.device).unsqueeze(0) for k in self.image_keys}
        proprio = torch.as_tensor(obs["proprio"], dtype=torch.float32, device=self.device).unsqueeze(0)
        features = self.encode(self.encoder, images, proprio)
        if deterministic:
            action = self.actor.deterministic(features)
        else:
            action, _ = self.actor(features)
        return action.squeeze(0).cpu().numpy().astype(np.float64)

    def on_online_start(self) -> None:
        """Called once at the offline-to-online switch."""
        if not self.cfg.calibrate_online:
            self.calibration_enabled = False

    # ------------------------------------------------------------------ losses
    def _td_target(self, batch: dict, next_features: torch.Tensor, target_next_features: torch.Tensor, alpha: torch.Tensor):
        cfg = self.cfg
        with torch.no_grad():
            if cfg.cql_max_target_backup:
                next_actions, next_log_prob = self.actor(next_features, cfg.cql_n_actions)
                target_q = self.target_critic(target_next_features, next_actions).min(0).values  # (B, N)
                target_q, best = target_q.max(dim=-1)
                next_log_prob = next_log_prob.gather(-1, best.unsqueeze(-1)).squeeze(-1)
            else:
                next_actions, next_log_prob = self.actor(next_features)
                target_q = self.target_critic(target_next_features, next_actions).min(0).values
            if cfg.backup_entropy:
                target_q = target_q - alpha * next_log_prob
            return batch["rewards"] + cfg.discount * (1.0 - batch["terminals"]) * target_q

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

    # ------------------------------------------------------------------ update
    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        obs_images = {k: self.augment(v) for k, v in batch["obs"].items()}
        next_images = {k: self.augment(v) for k, v in batch["next_obs"].items()}
        features = self.encode(self.encoder, obs_images, batch["proprio"])
        with torch.no_grad():
            next_features = self.encode(self.encoder, next_images, batch["next_proprio"])
            target_next_features = self.encode(self.target_encoder, next_images, batch["next_proprio"])
        alpha = self.log_alpha.exp().detach()

        # Actor and temperature (SAC); detached features: the actor never trains the encoder.
        new_actions, log_prob = self.actor(features.detach())
        q_new = self.critic(features.detach(), new_actions).min(0).values
        actor_loss = (alpha * log_prob - q_new).mean()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()

        # Critic: TD + conservative gap.
        target = self._td_target(batch, next_features, target_next_features, alpha)
        q_data = self.critic(features, batch["actions"])  # (2, B)
        td_loss = ((q_data - target.unsqueeze(0)) ** 2).mean(dim=-1).sum()
        gap, cql_stats = self._cql_terms(batch, features, next_features, q_data)
        if cfg.cql_lagrange:
            cql_alpha = self.log_cql_alpha.exp().clamp(0.0, 1e6)
            conservative = (cql_alpha.detach() * cfg.cql_weight * (gap - cfg.cql_target_gap)).sum()
            cql_alpha_loss = -0.5 * (cql_alpha * cfg.cql_weight * (gap.detach() - cfg.cql_target_gap)).sum()
        else:
            cql_alpha = torch.tensor(1.0)
            conservative = cfg.cql_weight * gap.sum()
            cql_alpha_loss = None
        critic_loss = td_loss + conservative

        # All losses above used the pre-update parameters; now step each optimizer.
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        self.critic_optimizer.zero_grad(set_to_none=True)  # drops what actor_loss left on the critic
        critic_loss.backward()
        self.critic_optimizer.step()
        if cql_alpha_loss is not None:
            self.cql_alpha_optimizer.zero_grad(set_to_none=True)
            cql_alpha_loss.backward()
            self.cql_alpha_optimizer.step()
        self._update_targets()
        self.num_updates += 1

        metrics = {
            "td_loss": td_loss / 2,
            "cql_gap": gap.mean(),
            "critic_loss": critic_loss,
            "q_data_mean": q_data.mean(),
            "target_q_mean": target.mean(),
            "mc_return_mean": batch["reward_to_go"].mean(),
            "actor_loss": actor_loss,
            "alpha": alpha,
            "entropy": -log_prob.mean(),
            "cql_alpha": cql_alpha,
            **cql_stats,
        }
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def _update_targets(self) -> None:
        tau = self.cfg.tau
        for online, target in ((self.encoder, self.target_encoder), (self.critic, self.target_critic)):
            online_params = list(online.parameters())
            target_params = list(target.parameters())
            torch._foreach_lerp_(target_params, online_params, tau)

    @torch.no_grad()
    def q_values(self, batch: dict[str, Any]) -> np.ndarray:
        """min(Q1, Q2)(s, a) on un-augmented observations (for calibration plots)."""
        features = self.encode(self.encoder, batch["obs"], batch["proprio"])
        return self.critic(features, batch["actions"]).min(0).values.cpu().numpy()

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
            "cql_alpha_optimizer": self.cql_alpha_optimizer,
        }

    def state_dict(self) -> dict[str, Any]:
        state = {name: module.state_dict() for name, module in self._modules().items()}
        state["log_alpha"] = self.log_alpha.detach().cpu()
        state["log_cql_alpha"] = self.log_cql_alpha.detach().cpu()
        state["calibration_enabled"] = self.calibration_enabled
        state["num_updates"] = self.num_updates
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_cql_alpha.copy_(state["log_cql_alpha"])
        self.calibration_enabled = bool(state["calibration_enabled"])
        self.num_updates = int(state["num_updates"])


def conservative_gap(
    q_data: torch.Tensor,
    q_random: torch.Tensor,
    q_current: torch.Tensor,
    q_next: torch.Tensor,
    log_prob_current: torch.Tensor,
    log_prob_next: torch.Tensor,
    reward_to_go: torch.Tensor,
    action_dim: int,
    calibrated: bool,
    importance_sample: bool = True,
    temperature: float = 1.0,
    clip_diff: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The CQL gap per critic, with Cal-QL's calibration bound.

    Shapes: q_data (2, B); q_random / q_current / q_next (2, B, N); log-probs (B, N);
    reward_to_go (B,). Returns gap (2,) = mean_B(clip(T * logsumexp(ood / T) - Q(s, a))) and
    stats; the per-sample clip is off by default (CORL uses a lower clip of -200).
    """
    reward_to_go = reward_to_go.view(1, -1, 1)
    below = torch.cat([q_current < reward_to_go, q_next < reward_to_go], dim=-1)
    if calibrated:
        # Cal-QL's whole change: bound the policy samples (never the random actions, never
        # Q(s, a)) from below by the reference policy's value, before importance sampling.
        q_current = torch.maximum(q_current, reward_to_go)
        q_next = torch.maximum(q_next, reward_to_go)
    if importance_sample:
        random_log_density = action_dim * math.log(0.5)  # uniform on [-1, 1]^A
        stacked = torch.cat(
            [q_random - random_log_density, q_next - log_prob_next.unsqueeze(0), q_current - log_prob_current.unsqueeze(0)],
            dim=-1,
        )
    else:
        stacked = torch.cat([q_random, q_data.unsqueeze(-1), q_next, q_current], dim=-1)
    out_of_distribution = temperature * torch.logsumexp(stacked / temperature, dim=-1)  # (2, B)
    gap = (out_of_distribution - q_data).clamp(*clip_diff).mean(dim=-1)
    stats = {
        "bound_rate": below.float().mean(),
        "q_random_mean": q_random.mean(),
        "q_policy_mean": q_current.mean(),
    }
    return gap, stats


def _encoder_kwargs(encoder_cfg: Any) -> dict[str, Any]:
    if encoder_cfg.kind == "conv":
        return dict(
            channels=encoder_cfg.channels,
            strides=tuple(encoder_cfg.strides),
            kernel_size=encoder_cfg.kernel_size,
            feature_dim=encoder_cfg.feature_dim,
        )
    return dict(feature_dim=encoder_cfg.feature_dim)
