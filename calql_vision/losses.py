"""The losses of the agent family as pure functions of tensors, each with its shapes.

B = batch, H = ensemble heads, N = sampled actions per state, A = action dims. Every function
here is checked against a direct computation in tests/test_losses.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def td_target(rewards: torch.Tensor, terminals: torch.Tensor, next_value: torch.Tensor, discount: float) -> torch.Tensor:
    """y = r + gamma * (1 - d) * V(s'); all (B,). A time-limit end is not a terminal: it bootstraps."""
    return rewards + discount * (1.0 - terminals) * next_value


def return_range(reward_low: float, reward_high: float, discount: float) -> tuple[float, float]:
    """The interval every discounted return sum_t gamma^t r_t with r_t in [reward_low,
    reward_high] lies in, for any length (an episode may end after one step, so 0 is inside)."""
    return min(0.0, reward_low) / (1.0 - discount), max(0.0, reward_high) / (1.0 - discount)


def ensemble_min(q: torch.Tensor, subset: int | None = None) -> torch.Tensor:
    """min over the heads (dim 0) of q (H, ...), or over a random subset of `subset` heads
    (RLPD / REDQ). The subset is drawn from torch's RNG, and only when it is a true subset."""
    if subset is not None and subset < q.shape[0]:
        chosen = torch.randperm(q.shape[0], device=q.device)[:subset]
        q = q[chosen]
    return q.min(dim=0).values


def sac_actor_loss(log_prob: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """mean(alpha * log pi(a~|s) - Q(s, a~)); log_prob and q (B,), alpha a detached scalar."""
    return (alpha * log_prob - q).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's automatic entropy tuning: -mean(log alpha * (log pi + target_entropy)), log pi detached."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


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

    Shapes: q_data (H, B); q_random / q_current / q_next (H, B, N); log-probs (B, N);
    reward_to_go (B,). Returns gap (H,) = mean_B(clip(T * logsumexp(ood / T) - Q(s, a))) and
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
    out_of_distribution = temperature * torch.logsumexp(stacked / temperature, dim=-1)  # (H, B)
    gap = (out_of_distribution - q_data).clamp(*clip_diff).mean(dim=-1)
    stats = {
        "bound_rate": below.float().mean(),
        "q_random_mean": q_random.mean(),
        "q_policy_mean": q_current.mean(),
    }
    return gap, stats


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric square on diff = Q - V (B,): weight `expectile` where diff > 0, else
    1 - expectile; mean over the batch. expectile 0.5 is half the mean squared error."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff**2).mean()


def advantage_weights(advantage: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """AWR weights exp(beta * A), clipped above at max_weight; (B,) -> (B,), no gradient."""
    return torch.exp(advantage.detach() * temperature).clamp(max=max_weight)


def soft_lower_clip(x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """ACA's c(x) = softplus(x - m) + m: x well above the floor m passes unchanged, far below
    it tends to m. Shapes broadcast (x (B,) or (B, N) against m (B,) or (B, 1))."""
    return F.softplus(x - floor) + floor


def ml_normalised_actor_loss(
    log_prob_new: torch.Tensor, q_new: torch.Tensor, alpha: torch.Tensor, log_prob_data: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ACA's offline actor (SAC + maximum likelihood, normalised as TD3+BC):
    lambda * mean(alpha * log pi(a~|s) - Q(s, a~)) - mean(log pi(a|s)), lambda = scale / mean|Q|
    (detached). log_prob_new, q_new, log_prob_data (B,). Returns (loss, lambda)."""
    lam = scale / q_new.detach().abs().mean().clamp(min=1e-6)
    return lam * sac_actor_loss(log_prob_new, q_new, alpha) - log_prob_data.mean(), lam
