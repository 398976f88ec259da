"""The Cal-QL agent: encoder ownership, the calibration bound, CQL, checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from calql_vision.agents import ObsSpec
from calql_vision.agents.calql import CalQLAgent
from calql_vision.algo_configs import CalQLConfig
from calql_vision.config import EncoderConfig
from calql_vision.losses import conservative_gap

IMAGE_SHAPE = (3, 32, 32)
KEYS = ["agentview_image"]


def make_agent(seed: int = 0, **algo_overrides) -> CalQLAgent:
    torch.manual_seed(seed)
    algo = OmegaConf.merge(OmegaConf.structured(CalQLConfig), {"hidden_dims": [32, 32], "cql_n_actions": 3, **algo_overrides})
    encoder = OmegaConf.merge(OmegaConf.structured(EncoderConfig), {"channels": 8, "strides": [2, 2], "feature_dim": 16})
    spec = ObsSpec(image_keys=tuple(KEYS), image_shape=IMAGE_SHAPE, proprio_dim=9, action_dim=7)
    return CalQLAgent(algo, encoder, spec, device=torch.device("cpu"), precision="fp32")


def make_batch(batch_size: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = lambda: {KEYS[0]: torch.randint(0, 256, (batch_size, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)}
    return {
        "obs": images(), "next_obs": images(),
        "proprio": torch.randn(batch_size, 9, generator=g), "next_proprio": torch.randn(batch_size, 9, generator=g),
        "actions": torch.rand(batch_size, 7, generator=g) * 2 - 1,
        "rewards": -torch.ones(batch_size), "terminals": torch.zeros(batch_size),
        "truncations": torch.zeros(batch_size), "reward_to_go": torch.full((batch_size,), -20.0),
    }


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def test_actor_loss_never_changes_the_encoder_and_critic_loss_does():
    agent = make_agent()
    batch = make_batch()
    # Run only the actor half of an update by hand: its gradient must not reach the encoder.
    features = agent.encode(agent.encoder, batch["obs"], batch["proprio"])
    actions, log_prob = agent.actor(features.detach())
    actor_loss = (log_prob - agent.critic(features.detach(), actions).min(0).values).mean()
    actor_loss.backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())

    # A full update changes the encoder, and only through the critic's optimizer.
    encoder_before = snapshot(agent.encoder)
    encoder_ids = {id(p) for p in agent.encoder.parameters()}
    assert encoder_ids <= {id(p) for g in agent.critic_optimizer.param_groups for p in g["params"]}
    assert not encoder_ids & {id(p) for g in agent.actor_optimizer.param_groups for p in g["params"]}
    agent.update(batch)
    assert changed(encoder_before, agent.encoder)


def test_an_update_changes_both_critics_the_actor_and_the_targets_slowly():
    agent = make_agent()
    heads_before = [snapshot(head) for head in agent.critic.heads]
    actor_before = snapshot(agent.actor)
    target_before = snapshot(agent.target_critic)
    metrics = agent.update(make_batch())
    assert all(changed(before, head) for before, head in zip(heads_before, agent.critic.heads))
    assert changed(actor_before, agent.actor)
    # Polyak: the target moved by exactly tau of the way toward the updated critic.
    for before, target, online in zip(target_before, agent.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(target, before + agent.cfg.tau * (online.detach() - before), rtol=1e-5, atol=1e-6)
    for key in ("td_loss", "cql_gap", "bound_rate", "q_data_mean", "mc_return_mean", "actor_loss", "alpha", "entropy", "cql_alpha"):
        assert key in metrics and math.isfinite(metrics[key])
    assert metrics["mc_return_mean"] == -20.0


def hand_built_q():
    # 2 critics, batch 2, N = 2 samples each.
    q_data = torch.tensor([[-5.0, -1.0], [-4.0, -2.0]])
    q_random = torch.tensor([[[-30.0, -1.0], [-30.0, -30.0]], [[-30.0, -30.0], [-30.0, -30.0]]])
    q_current = torch.tensor([[[-12.0, -3.0], [-0.5, -9.0]], [[-11.0, -2.0], [-0.2, -8.0]]])
    q_next = torch.tensor([[[-15.0, -6.0], [-1.5, -4.0]], [[-7.0, -1.0], [-3.0, -0.1]]])
    log_prob_current = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    log_prob_next = torch.tensor([[0.5, 0.6], [0.7, 0.8]])
    reward_to_go = torch.tensor([-8.0, -2.0])
    return q_data, q_random, q_current, q_next, log_prob_current, log_prob_next, reward_to_go


def direct_gap(q_data, q_random, q_current, q_next, lp_cur, lp_next, g, lift: bool) -> np.ndarray:
    """The same quantity written out element by element."""
    gaps = []
    for i in range(2):
        total = 0.0
        for b in range(2):
            terms = []
            for k in range(2):
                terms.append(float(q_random[i, b, k]) - 7 * math.log(0.5))
            for k in range(2):
                q = max(float(q_next[i, b, k]), float(g[b])) if lift else float(q_next[i, b, k])
                terms.append(q - float(lp_next[b, k]))
            for k in range(2):
                q = max(float(q_current[i, b, k]), float(g[b])) if lift else float(q_current[i, b, k])
                terms.append(q - float(lp_cur[b, k]))
            total += math.log(sum(math.exp(t) for t in terms)) - float(q_data[i, b])
        gaps.append(total / 2)
    return np.array(gaps)


def test_calibration_lifts_only_policy_samples_below_the_reward_to_go():
    inputs = hand_built_q()
    gap, stats = conservative_gap(*inputs, action_dim=7, calibrated=True)
    np.testing.assert_allclose(gap.numpy(), direct_gap(*inputs, lift=True), rtol=1e-5)
    # The rate counts policy samples strictly below G, before lifting.
    q_current, q_next, g = inputs[2], inputs[3], inputs[6].view(1, -1, 1)
    expected_rate = float(torch.cat([q_current < g, q_next < g], -1).float().mean())
    assert stats["bound_rate"].item() == pytest.approx(expected_rate)
    assert 0 < expected_rate < 1


def test_random_actions_and_data_q_are_never_bounded():
    q_data, q_random, q_current, q_next, lp_cur, lp_next, g = hand_built_q()
    # Lower the random and data Q-values far below G: the gap must follow them exactly,
    # as the unbounded direct computation says, so nothing lifted them.
    q_random_low, q_data_low = q_random - 50.0, q_data - 50.0
    gap, _ = conservative_gap(q_data_low, q_random_low, q_current, q_next, lp_cur, lp_next, g, action_dim=7, calibrated=True)
    np.testing.assert_allclose(gap.numpy(), direct_gap(q_data_low, q_random_low, q_current, q_next, lp_cur, lp_next, g, lift=True), rtol=1e-5)
    # With every policy sample above G, the bound changes nothing at all.
    high = (q_current + 100.0, q_next + 100.0)
    calibrated, _ = conservative_gap(q_data, q_random, *high, lp_cur, lp_next, g, action_dim=7, calibrated=True)
    plain, _ = conservative_gap(q_data, q_random, *high, lp_cur, lp_next, g, action_dim=7, calibrated=False)
    torch.testing.assert_close(calibrated, plain)


def test_calibration_off_is_plain_cql():
    inputs = hand_built_q()
    gap, _ = conservative_gap(*inputs, action_dim=7, calibrated=False)
    np.testing.assert_allclose(gap.numpy(), direct_gap(*inputs, lift=False), rtol=1e-5)
    lifted, _ = conservative_gap(*inputs, action_dim=7, calibrated=True)
    assert torch.all(lifted > gap), "lifting policy samples raises the logsumexp"

    # Whole agents: same seed and batch, the calibrated one has the larger CQL gap whenever
    # policy samples sit below G, and identical TD losses (the bound only touches the gap).
    batch = make_batch()
    batch["reward_to_go"] = torch.full((8,), 50.0)  # far above every Q at init
    torch.manual_seed(1)
    cal = make_agent(seed=0, calibrated=True)
    cql = make_agent(seed=0, calibrated=False)
    torch.manual_seed(2)
    cal_metrics = cal.update(batch)
    torch.manual_seed(2)
    cql_metrics = cql.update(batch)
    assert cal_metrics["td_loss"] == pytest.approx(cql_metrics["td_loss"])
    assert cal_metrics["bound_rate"] == 1.0 and cql_metrics["bound_rate"] == 1.0
    assert cal_metrics["cql_gap"] > cql_metrics["cql_gap"] + 10


def test_lagrange_variant_reports_and_trains_alpha_prime():
    agent = make_agent(cql_lagrange=True, cql_target_gap=1e6)  # gap far below target
    first = agent.update(make_batch())
    second = agent.update(make_batch(seed=1))
    assert first["cql_alpha"] == pytest.approx(math.e, rel=1e-5)  # log alpha' starts at 1
    assert second["cql_alpha"] < first["cql_alpha"], "a gap below target lowers alpha'"


def test_checkpoint_round_trip_restores_identical_outputs(tmp_path):
    from calql_vision.checkpoint import atomic_torch_save, load_checkpoint

    agent = make_agent(seed=0)
    for seed in range(3):
        agent.update(make_batch(seed=seed))
    atomic_torch_save(agent.state_dict(), tmp_path / "agent.pt")
    restored = make_agent(seed=123)
    restored.load_state_dict(load_checkpoint(tmp_path / "agent.pt"))
    obs = {KEYS[0]: np.random.default_rng(0).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8), "proprio": np.zeros(9, np.float32)}
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), restored.act(obs, deterministic=True))
    batch = make_batch(seed=7)
    np.testing.assert_array_equal(agent.q_values(batch), restored.q_values(batch))
    torch.manual_seed(5)
    next_original = agent.update(batch)
    torch.manual_seed(5)
    next_restored = restored.update(batch)
    assert next_original == next_restored, "optimizer states and temperatures were restored too"
    assert restored.num_updates == 4


def test_bf16_encoder_keeps_losses_in_fp32():
    agent = make_agent()
    agent.precision = "bf16"
    features = agent.encode(agent.encoder, make_batch()["obs"], make_batch()["proprio"])
    assert features.dtype == torch.float32
    metrics = agent.update(make_batch())
    assert all(math.isfinite(v) for v in metrics.values())


def test_reference_init_starts_q_near_zero_and_clip_bounds_the_gap():
    agent = make_agent()
    batch = make_batch()
    q = agent.q_values(batch)
    assert np.abs(q).max() < 0.05, "output layers start with gain 1e-2, as in the reference code"
    default_init = make_agent(orthogonal_init=False)
    assert not torch.equal(default_init.critic.heads[0][-1].weight, agent.critic.heads[0][-1].weight)
    inputs = hand_built_q()
    clipped, _ = conservative_gap(*inputs, action_dim=7, calibrated=True, clip_diff=(-1.0, 1.0))
    assert torch.all(clipped.abs() <= 1.0) and not torch.allclose(clipped, conservative_gap(*inputs, action_dim=7, calibrated=True)[0])
