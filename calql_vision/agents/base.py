"""The pixel machinery every agent shares: the encoder and its Polyak target copy, random
shifts, bf16 autocast, acting, target updates and checkpoint parts.

Encoder ownership (DrQ / DrQ-v2 convention, tested for every agent): the critic-side losses
train the encoder through the critic's optimizer; the actor reads detached features and never
moves it; the target critics hold their own Polyak copy.

An agent never touches the environment, the logger or the disk: `update(batch)` returns a dict
of floats named in `METRICS`, and `state_dict()` holds everything a checkpoint needs.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from encoders import RandomShift, StateNormalizer, build_encoder


@dataclass(frozen=True)
class ObsSpec:
    """What an agent sees and does: camera keys, one image shape (C, H, W) shared by the
    cameras, the proprioception size and the action size."""

    image_keys: tuple[str, ...]
    image_shape: tuple[int, int, int]
    proprio_dim: int
    action_dim: int


class PixelAgent:
    """Base of the agent family. Subclasses build their heads and optimizers, then declare:

    * `_modules()`: name -> module or optimizer saved in checkpoints (state_dicts);
    * `_tensors()`: name -> scalar parameter tensors saved beside them (temperatures);
    * `_target_pairs()`: (online, target) modules moved by Polyak averaging after each update;
    * `METRICS`: every key `update` may return (the metrics.csv columns), and `PROGRESS`,
      the few shown on the progress bar as {label: metric};
    * `LEARNING_RATES`: optimizer attribute -> the algo config key of its learning rate.
    """

    METRICS: tuple[str, ...] = ()
    LEARNING_RATES: dict[str, str] = {}
    PROGRESS: dict[str, str] = {"q": "q_data_mean", "G": "mc_return_mean", "td": "td_loss"}

    def __init__(self, cfg: Any, encoder_cfg: Any, spec: ObsSpec, device: torch.device, precision: str = "bf16") -> None:
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be bf16 or fp32, got '{precision}'")
        self.cfg = cfg
        self.spec = spec
        self.device = device
        self.precision = precision
        self.image_keys = list(spec.image_keys)
        self.action_dim = spec.action_dim
        self.encoder = build_encoder(
            encoder_cfg.kind,
            image_keys=self.image_keys,
            image_shape=tuple(spec.image_shape),
            proprio_dim=spec.proprio_dim,
            **_encoder_kwargs(encoder_cfg),
        ).to(device)
        self.feature_dim = self.encoder.output_dim
        # Applied before every encoder (online, target, reference): one set of statistics.
        self.state_normalizer = StateNormalizer(spec.proprio_dim).to(device)
        self.augment = RandomShift(pad=encoder_cfg.augment_pad)
        self.num_updates = 0
        # (low, high) of the discounted returns of the rewards this agent trains on, told by whoever
        # trains it (the trainer, bench; calql_vision.losses.return_range): an agent that clips
        # its TD targets' bootstrap to it (algo.clip_bootstrap) refuses to update without it.
        self.return_range: tuple[float, float] | None = None

    # ------------------------------------------------------------------ encoding and acting
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode(self, encoder: nn.Module, images: dict[str, torch.Tensor], proprio: torch.Tensor) -> torch.Tensor:
        """Features in fp32 (the encoder alone may run in bf16; every head and loss is fp32)."""
        proprio = self.state_normalizer(proprio)  # fp32, outside autocast: mm-scale entries matter
        with self._autocast():
            features = encoder(images, proprio)
        return features.float()

    def shift_batch(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The batch's images of s and of s', each with its own random shift (s drawn first)."""
        obs_images = {k: self.augment(v) for k, v in batch["obs"].items()}
        next_images = {k: self.augment(v) for k, v in batch["next_obs"].items()}
        return obs_images, next_images

    def encode_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features of s with gradient, features of s', target-encoder features of s');
        s and s' get independent random shifts."""
        obs_images, next_images = self.shift_batch(batch)
        features = self.encode(self.encoder, obs_images, batch["proprio"])
        with torch.no_grad():
            next_features = self.encode(self.encoder, next_images, batch["next_proprio"])
            target_next_features = self.encode(self.target_encoder, next_images, batch["next_proprio"])
        return features, next_features, target_next_features

    def _observation_tensors(self, obs: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
        """One observation ({"<camera>_image": uint8 CHW, "proprio": (P,)}) or a batch of them
        (leading dimension) as device tensors, and whether it was a single one."""
        single = np.ndim(obs["proprio"]) == 1
        images = {k: torch.as_tensor(obs[k], device=self.device) for k in self.image_keys}
        proprio = torch.as_tensor(obs["proprio"], dtype=torch.float32, device=self.device)
        if single:
            images = {k: v.unsqueeze(0) for k, v in images.items()}
            proprio = proprio.unsqueeze(0)
        return images, proprio, single

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool,
            generator: torch.Generator | None = None, std_scale: float = 1.0) -> np.ndarray:
        """Action(s) for one observation, or for a batch of them in one forward pass.
        A stochastic action draws its noise from `generator` when one is given (evaluations:
        the training run's random stream stays untouched), else from torch's global stream,
        with the policy's std times `std_scale` (online collection: algo.explore_std_scale)."""
        images, proprio, single = self._observation_tensors(obs)
        features = self.encode(self.encoder, images, proprio)
        if deterministic:
            action = self.actor.deterministic(features)
        elif generator is not None:
            action = self.actor.sample(features, generator)
        else:  # at std_scale 1 the same numbers as pi's reparameterised sample, without its log-probability
            action = self.actor.explore(features, std_scale)
        action = action.cpu().numpy().astype(np.float64)
        return action[0] if single else action

    @torch.no_grad()
    def probe(self, images: dict[str, torch.Tensor], proprio: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the policy makes of a batch of observations (the drift metrics): the encoder's
        features (what actor and critics read), the deterministic action tanh(mean) and the
        actor's pre-tanh std, each (B, ...) in fp32."""
        features = self.encode(self.encoder, images, proprio)
        mean, log_std = self.actor.distribution(features)
        return {"features": features, "action": torch.tanh(mean), "std": log_std.exp()}

    def on_online_start(self) -> None:
        """Called once at the offline-to-online switch (before the first online update)."""

    @torch.no_grad()
    def q_values(self, batch: dict[str, Any]) -> np.ndarray:
        """min over the critics of Q(s, a), on un-augmented observations (calibration plots)."""
        features = self.encode(self.encoder, batch["obs"], batch["proprio"])
        return self.critic(features, batch["actions"]).min(0).values.cpu().numpy()

    # ------------------------------------------------------------------ updates
    batch_slices = 1  # the trainer samples batch_size * batch_slices rows per update call

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)  # also drops what earlier losses left on these tensors
        loss.backward()
        optimizer.step()

    def _target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.critic, self.target_critic)]

    @torch.no_grad()
    def _update_targets(self) -> None:
        for online, target in self._target_pairs():
            targets = list(target.parameters())
            if targets:  # a state encoder without an MLP has no parameters to follow
                torch._foreach_lerp_(targets, list(online.parameters()), self.cfg.tau)

    @staticmethod
    def _floats(metrics: dict[str, Any]) -> dict[str, float]:
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in metrics.items()}

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, Any]:
        raise NotImplementedError

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _extra_state(self) -> dict[str, Any]:
        """Plain values (flags, counters) a subclass saves beside its modules."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        state = {name: module.state_dict() for name, module in self._modules().items()}
        state.update({name: tensor.detach().cpu() for name, tensor in self._tensors().items()})
        state.update(self._extra_state())
        state["state_normalizer"] = self.state_normalizer.state_dict()
        state["num_updates"] = self.num_updates
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A private copy: Optimizer.load_state_dict keeps the given moment tensors when no cast
        # is needed, so an agent loaded from another live agent's state would share its Adam
        # state and drift with it.
        state = copy.deepcopy(state)
        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        with torch.no_grad():
            for name, tensor in self._tensors().items():
                tensor.copy_(state[name])
        self._load_extra_state(state)
        if "state_normalizer" in state:
            self.state_normalizer.load_state_dict(state["state_normalizer"])
        else:  # saved before normalisation existed: those runs read the raw state
            self.state_normalizer.reset()
        self.num_updates = int(state["num_updates"])
        # Optimizer states carry the learning rate they were saved with; the config's wins, so
        # a resume or init_from that sets a new rate gets it.
        self.apply_learning_rates()

    def apply_learning_rates(self) -> None:
        for optimizer_name, key in self.LEARNING_RATES.items():
            for group in getattr(self, optimizer_name).param_groups:
                group["lr"] = float(getattr(self.cfg, key))

    def non_finite_parts(self) -> list[str]:
        """Names of the saved modules and tensors holding a NaN or infinite value (empty when
        all is finite). One fused norm over everything first: the common case costs one check."""
        modules = {name: m for name, m in self._modules().items() if isinstance(m, nn.Module)}
        tensors = [p.detach() for m in modules.values() for p in m.parameters()] + list(self._tensors().values())
        if bool(torch.stack(torch._foreach_norm(tensors)).isfinite().all()):
            return []
        bad = [name for name, m in modules.items() if not all(bool(p.isfinite().all()) for p in m.parameters())]
        return bad + [name for name, t in self._tensors().items() if not bool(t.isfinite().all())]

    def policy_state_dict(self) -> dict[str, Any]:
        """What acting needs and nothing more (encoder + actor): the weights an actor process
        on another core or host would receive."""
        return {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict()}


def _encoder_kwargs(encoder_cfg: Any) -> dict[str, Any]:
    if encoder_cfg.kind == "conv":
        return dict(
            channels=encoder_cfg.channels,
            strides=tuple(encoder_cfg.strides),
            kernel_size=encoder_cfg.kernel_size,
            feature_dim=encoder_cfg.feature_dim,
        )
    if encoder_cfg.kind == "state":
        return dict(hidden_dims=tuple(encoder_cfg.hidden_dims), feature_dim=encoder_cfg.feature_dim)
    return dict(feature_dim=encoder_cfg.feature_dim)
