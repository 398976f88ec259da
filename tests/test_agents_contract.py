"""What every registered algorithm's agent must do, offline and after the switch to online."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from calql_vision.agents import ALGORITHMS, ObsSpec, algo_schema, make_agent
from calql_vision.config import EncoderConfig, load_group_file
from calql_vision.losses import return_range

SPEC = ObsSpec(image_keys=("agentview_image",), image_shape=(3, 32, 32), proprio_dim=9, action_dim=7)
TINY = {"hidden_dims": [32, 32], "cql_n_actions": 3}
# The ensemble and high-UTD methods keep those features, small: 3 critics, 2 critic updates per actor update.
TINY_ENSEMBLE = {"num_critics": 3, "critic_updates": 2}


def build(name: str, seed: int = 0, **overrides):
    """The algorithm's own config file with tiny networks (only the keys its schema has)."""
    schema = OmegaConf.structured(algo_schema(name))
    tiny = {**TINY, **(TINY_ENSEMBLE if name in ("rlpd", "wsrl") else {})}
    algo = OmegaConf.merge(schema, load_group_file("algo", name), {k: v for k, v in tiny.items() if k in schema},
                           overrides)
    encoder = OmegaConf.merge(OmegaConf.structured(EncoderConfig), {"channels": 8, "strides": [2, 2], "feature_dim": 16})
    torch.manual_seed(seed)
    agent = make_agent(algo, encoder, SPEC, torch.device("cpu"), "fp32")
    agent.return_range = return_range(-1.0, 0.0, float(algo.discount))  # as the trainer tells it: make_batch's rewards
    return agent


def make_batch(rows: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = lambda: {"agentview_image": torch.randint(0, 256, (rows, *SPEC.image_shape), dtype=torch.uint8, generator=g)}
    return {
        "obs": images(), "next_obs": images(),
        "proprio": torch.randn(rows, 9, generator=g), "next_proprio": torch.randn(rows, 9, generator=g),
        "actions": torch.rand(rows, 7, generator=g) * 1.8 - 0.9,
        "rewards": -(torch.rand(rows, generator=g) < 0.9).float(), "terminals": (torch.rand(rows, generator=g) < 0.1).float(),
        "truncations": torch.zeros(rows), "reward_to_go": -torch.rand(rows, generator=g) * 30,
    }


def agent_in_phase(name: str, phase: str, seed: int = 0):
    agent = build(name, seed)
    for i in range(2):
        agent.update(make_batch(8 * agent.batch_slices, seed=i))
    if phase == "online":
        agent.on_online_start()
    return agent


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(b, p) for b, p in zip(before, module.parameters()))


def optimizers(agent) -> dict[str, torch.optim.Optimizer]:
    return {k: v for k, v in agent._modules().items() if isinstance(v, torch.optim.Optimizer)}


CASES = [(name, phase) for name in sorted(ALGORITHMS) for phase in ("offline", "online")]


@pytest.mark.parametrize("name,phase", CASES)
def test_update_returns_declared_finite_metrics_and_changes_the_critic(name, phase):
    agent = agent_in_phase(name, phase)
    critic_before = params(agent.critic)
    metrics = agent.update(make_batch(8 * agent.batch_slices, seed=5))
    assert metrics and set(metrics) <= set(agent.METRICS), set(metrics) - set(agent.METRICS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    assert set(agent.PROGRESS.values()) <= set(agent.METRICS)
    assert not same(critic_before, agent.critic)


@pytest.mark.parametrize("name,phase", CASES)
def test_act_shapes_and_determinism(name, phase):
    agent = agent_in_phase(name, phase)
    rng = np.random.default_rng(0)
    obs = {"agentview_image": rng.integers(0, 256, SPEC.image_shape, dtype=np.uint8), "proprio": rng.normal(size=9)}
    batch = {k: np.stack([v, v, v]) for k, v in obs.items()}
    action = agent.act(obs, deterministic=True)
    assert action.shape == (7,) and np.all(np.abs(action) <= 1)
    np.testing.assert_array_equal(action, agent.act(obs, deterministic=True))
    assert not np.array_equal(agent.act(obs, deterministic=False), agent.act(obs, deterministic=False))
    actions = agent.act(batch, deterministic=True)
    assert actions.shape == (3, 7)
    np.testing.assert_allclose(actions, np.stack([action] * 3), atol=1e-6)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_explore_std_scale_narrows_the_collecting_noise_and_zero_acts_with_the_mean(name):
    agent = agent_in_phase(name, "online")
    rng = np.random.default_rng(1)
    batch = {"agentview_image": rng.integers(0, 256, (4, *SPEC.image_shape), dtype=np.uint8), "proprio": rng.normal(size=(4, 9))}
    mean = np.arctanh(agent.act(batch, deterministic=True))
    drawn = {}
    for scale in (1.0, 0.5, 0.0):
        torch.manual_seed(7)  # the same noise for every scale
        drawn[scale] = np.arctanh(agent.act(batch, deterministic=False, std_scale=scale))
    assert np.abs(drawn[1.0] - mean).min() > 1e-3  # pi's own noise is there
    np.testing.assert_allclose(drawn[0.5] - mean, 0.5 * (drawn[1.0] - mean), atol=1e-4)
    np.testing.assert_allclose(drawn[0.0], mean, atol=1e-5)


@pytest.mark.parametrize("name,phase", CASES)
def test_the_actor_loss_never_moves_the_encoder(name, phase):
    agent = agent_in_phase(name, phase)
    # Freeze every optimizer but the actor's: what moves now moves through the actor loss.
    for key, optimizer in optimizers(agent).items():
        if key != "actor_optimizer":
            for group in optimizer.param_groups:
                group["lr"] = 0.0
    encoder_before, actor_before = params(agent.encoder), params(agent.actor)
    agent.update(make_batch(8 * agent.batch_slices, seed=6))
    assert same(encoder_before, agent.encoder)
    assert not same(actor_before, agent.actor)
    actor_optimized = {id(p) for g in agent.actor_optimizer.param_groups for p in g["params"]}
    assert not actor_optimized & {id(p) for p in agent.encoder.parameters()}


@pytest.mark.parametrize("name,phase", CASES)
def test_state_dict_round_trip_restores_outputs_and_training(name, phase):
    agent = agent_in_phase(name, phase, seed=0)
    restored = build(name, seed=123)  # different initial weights
    restored.load_state_dict(agent.state_dict())
    batch = make_batch(8 * agent.batch_slices, seed=7)
    np.testing.assert_array_equal(agent.q_values(batch), restored.q_values(batch))
    obs = {"agentview_image": batch["obs"]["agentview_image"][0].numpy(), "proprio": batch["proprio"][0].numpy()}
    np.testing.assert_array_equal(agent.act(obs, True), restored.act(obs, True))
    # Every optimizer of the restored agent trains the restored agent's own tensors.
    own = {id(p) for m in restored._modules().values() if isinstance(m, torch.nn.Module) for p in m.parameters()}
    own |= {id(t) for t in restored._tensors().values()}
    for optimizer in optimizers(restored).values():
        assert {id(p) for g in optimizer.param_groups for p in g["params"]} <= own
    torch.manual_seed(9)
    first = agent.update(batch)
    torch.manual_seed(9)
    second = restored.update(batch)
    assert first == second
    np.testing.assert_array_equal(agent.q_values(batch), restored.q_values(batch))


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_policy_state_dict_is_encoder_and_actor_only(name):
    agent = build(name)
    policy = agent.policy_state_dict()
    assert set(policy) == {"encoder", "actor"}
    fresh = build(name, seed=5)
    fresh.encoder.load_state_dict(policy["encoder"])
    fresh.actor.load_state_dict(policy["actor"])
    obs = {"agentview_image": np.zeros(SPEC.image_shape, np.uint8), "proprio": np.ones(9)}
    np.testing.assert_array_equal(agent.act(obs, True), fresh.act(obs, True))


@pytest.mark.parametrize("name", ["calql", "wsrl", "sac"])
def test_the_switch_keeps_the_temperature_unless_told_to_set_it(name):
    kept = agent_in_phase(name, "offline")
    pretrained = kept.log_alpha.item()
    kept.on_online_start()
    assert kept.log_alpha.item() == pretrained, "null: the pretrained temperature carries over"
    agent = agent_in_phase(name, "offline")
    agent.cfg.online_init_log_alpha = math.log(0.1)
    agent.on_online_start()
    assert agent.log_alpha.item() == pytest.approx(math.log(0.1))
    agent.update(make_batch(8 * agent.batch_slices, seed=5))  # and it learns on from there
    assert agent.log_alpha.item() != pytest.approx(math.log(0.1), abs=0)


FREEZABLE = [name for name in sorted(ALGORITHMS) if "online_freeze_encoder" in OmegaConf.structured(algo_schema(name))]


@pytest.mark.parametrize("name", FREEZABLE)
def test_online_freeze_encoder_holds_the_encoder_from_the_switch_and_across_a_resume(name):
    """Offline the encoder learns as always; from the switch on the critics still learn and
    the encoder stays where the pretraining left it, also in an agent loaded from that state."""
    agent = build(name, online_freeze_encoder=True)
    encoder_before = params(agent.encoder)
    agent.update(make_batch(8, seed=0))
    assert not same(encoder_before, agent.encoder), "offline: the critic's loss trains the encoder"
    agent.on_online_start()
    switch_encoder, switch_critic = params(agent.encoder), params(agent.critic)
    for i in range(2):
        agent.update(make_batch(8 * agent.batch_slices, seed=10 + i))
    assert same(switch_encoder, agent.encoder) and not same(switch_critic, agent.critic)
    resumed = build(name, seed=123, online_freeze_encoder=True)
    resumed.load_state_dict(agent.state_dict())
    resumed_critic = params(resumed.critic)
    resumed.update(make_batch(8 * resumed.batch_slices, seed=20))
    assert same(switch_encoder, resumed.encoder) and not same(resumed_critic, resumed.critic)
    # Without the setting the same online updates move the encoder.
    moving = build(name)
    moving.update(make_batch(8, seed=0))
    moving.on_online_start()
    online_encoder = params(moving.encoder)
    moving.update(make_batch(8 * moving.batch_slices, seed=10))
    assert not same(online_encoder, moving.encoder)


# ---------------------------------------------------------------------- algo.clip_bootstrap
CLIPPED = [(name, {}) for name in sorted(ALGORITHMS) if "clip_bootstrap" in OmegaConf.structured(algo_schema(name))]
CLIPPED += [("calql", {"cql_max_target_backup": False}), ("calql", {"cql_max_target_backup": True})]


def push_target_critics_past(agent, edge: str) -> None:
    """Move every target critic's output 1e4 above (edge "high") or below ("low") any return."""
    with torch.no_grad():
        for head in agent.target_critic.heads:
            head[-1].bias.add_(1e4 if edge == "high" else -1e4)


def target_from_the_edge(batch: dict, edge: str) -> float:
    """The batch's mean TD target when every bootstrap is the returns' range's edge: r + gamma
    (1 - d) * edge, at gamma 0.99 and make_batch's -1/0 rewards (the range build tells agents)."""
    low, high = return_range(-1.0, 0.0, 0.99)
    return (batch["rewards"] + 0.99 * (1 - batch["terminals"]) * (high if edge == "high" else low)).mean().item()


@pytest.mark.parametrize("name,extra", CLIPPED, ids=lambda v: str(v) if isinstance(v, str) else "-".join(map(str, v.values())))
@pytest.mark.parametrize("edge", ["high", "low"])
def test_clip_bootstrap_bootstraps_from_the_edge_of_the_returns_range(name, extra, edge):
    """Target critics far above (below) any return: with clip_bootstrap every TD target is
    r + gamma (1 - d) * the range's high (low) edge; without it, the critics' value passes."""
    batch = make_batch(8 * build(name).batch_slices, seed=5)  # rewards -1 or 0, some terminals
    targets, outside = {}, {}
    for clip in (True, False):
        # Offline (ACA's online target adds its prior) and without the entropy term, so the
        # target is exactly r + gamma (1 - d) V(s').
        agent = build(name, clip_bootstrap=clip, backup_entropy=False, **extra)
        push_target_critics_past(agent, edge)
        metrics = agent.update(batch)
        targets[clip] = metrics["target_q_mean"]
        outside[clip] = (metrics["bootstrap_below_range"], metrics["bootstrap_above_range"])
    assert targets[True] == pytest.approx(target_from_the_edge(batch, edge), abs=1e-3)
    assert abs(targets[False]) > 1000  # the test would see an unclipped target
    # The logged shares count the critics' values before the clip, clipped or not.
    assert outside[True] == outside[False] == ((0.0, 1.0) if edge == "high" else (1.0, 0.0))


@pytest.mark.parametrize("edge", ["high", "low"])
def test_aca_online_clips_the_whole_q_it_bootstraps_from(edge):
    """Online, ACA's Q is R + w c(log pi_0): the clip bounds that sum, so the prior cannot carry
    a target past the returns' range."""
    batch = make_batch(8, seed=5)
    agent = build("aca", clip_bootstrap=True, backup_entropy=False)
    agent.update(make_batch(8, seed=0))
    agent.on_online_start()
    push_target_critics_past(agent, edge)
    metrics = agent.update(batch)
    assert metrics["prior_mean"] != pytest.approx(0.0, abs=1e-3)  # the prior would show if it passed the clip
    assert metrics["target_q_mean"] == pytest.approx(target_from_the_edge(batch, edge), abs=1e-3)


@pytest.mark.parametrize("name", [name for name, extra in CLIPPED if not extra])
def test_bootstrap_values_inside_the_returns_range_are_not_counted_outside(name):
    agent = build(name)
    agent.return_range = (-1e6, 1e6)
    metrics = agent.update(make_batch(8 * agent.batch_slices, seed=5))
    assert (metrics["bootstrap_below_range"], metrics["bootstrap_above_range"]) == (0.0, 0.0)


def test_clip_bootstrap_without_a_returns_range_is_an_error():
    agent = build("calql", clip_bootstrap=True)
    agent.return_range = None  # nobody told it
    with pytest.raises(ValueError, match="clip_bootstrap needs the range of the returns"):
        agent.update(make_batch(8))


def test_the_returns_range_holds_every_discounted_return():
    assert return_range(-1.0, 0.0, 0.99) == pytest.approx((-100.0, 0.0))
    assert return_range(0.0, 1.0, 0.9) == pytest.approx((0.0, 10.0))
    assert return_range(0.5, 1.0, 0.5) == pytest.approx((0.0, 2.0))  # an episode may end after one step
    rng = np.random.default_rng(0)
    for _ in range(200):
        gamma, length = rng.uniform(0.5, 0.999), rng.integers(1, 300)
        rewards = rng.uniform(-2.0, 3.0, size=length)
        low, high = return_range(-2.0, 3.0, gamma)
        assert low <= float((gamma ** np.arange(length) * rewards).sum()) <= high


def test_the_trainer_takes_the_range_from_the_task_reward_and_the_data():
    from types import SimpleNamespace

    from calql_vision.train import Trainer

    cfg = OmegaConf.create({"reward_scale": 1.0, "reward_bias": -1.0, "algo": {"discount": 0.99}})
    no_data = SimpleNamespace(cfg=cfg, dataset=None)
    assert Trainer._return_range(no_data) == pytest.approx((-100.0, 0.0))
    shaped = SimpleNamespace(cfg=cfg, dataset=SimpleNamespace(rewards=np.array([-1.0, 0.5, -2.0])))
    assert Trainer._return_range(shaped) == pytest.approx((-200.0, 50.0))
