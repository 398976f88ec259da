"""The IQL agent: each loss against a hand computation, the update order, encoder ownership,
checkpoints.

With `augment_pad: 0` the random shift is the identity and the update is deterministic, so a
deep copy of the agent taken before `update` lets every loss be recomputed by hand."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from calql_vision.agents import ObsSpec
from calql_vision.agents.iql import IQLAgent
from calql_vision.algo_configs import IQLConfig
from calql_vision.config import EncoderConfig
from calql_vision.losses import expectile_loss

IMAGE_SHAPE = (3, 32, 32)
KEYS = ["agentview_image"]


def make_agent(seed: int = 0, augment_pad: int = 0, **algo_overrides) -> IQLAgent:
    torch.manual_seed(seed)
    algo = OmegaConf.merge(OmegaConf.structured(IQLConfig), {"name": "iql", "hidden_dims": [32, 32], **algo_overrides})
    encoder = OmegaConf.merge(
        OmegaConf.structured(EncoderConfig), {"channels": 8, "strides": [2, 2], "feature_dim": 16, "augment_pad": augment_pad}
    )
    spec = ObsSpec(image_keys=tuple(KEYS), image_shape=IMAGE_SHAPE, proprio_dim=9, action_dim=7)
    return IQLAgent(algo, encoder, spec, device=torch.device("cpu"), precision="fp32")


def make_batch(batch_size: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = lambda: {KEYS[0]: torch.randint(0, 256, (batch_size, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)}
    terminals = torch.zeros(batch_size)
    terminals[-2:] = 1.0  # some terminals, so (1 - d) is exercised
    return {
        "obs": images(), "next_obs": images(),
        "proprio": torch.randn(batch_size, 9, generator=g), "next_proprio": torch.randn(batch_size, 9, generator=g),
        "actions": torch.rand(batch_size, 7, generator=g) * 2 - 1,
        "rewards": -torch.ones(batch_size), "terminals": terminals,
        "truncations": torch.zeros(batch_size), "reward_to_go": torch.full((batch_size,), -20.0),
    }


def features(agent: IQLAgent, encoder: torch.nn.Module, batch: dict, next_: bool = False) -> torch.Tensor:
    """Un-augmented features (augment_pad 0), no gradient."""
    with torch.no_grad():
        if next_:
            return agent.encode(encoder, batch["next_obs"], batch["next_proprio"])
        return agent.encode(encoder, batch["obs"], batch["proprio"])


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def warmed_up(**overrides) -> tuple[IQLAgent, dict]:
    """An agent after a few updates (so online and target networks differ) and a fresh batch,
    with Q_target(s, a) - V(s) straddling zero: at init every Q and V sit within ~1e-2 of 0 and
    a few updates push all Q below V, so the target critics' outputs are spread out and V is
    centred on them (both sides of the expectile, clipped and unclipped weights)."""
    agent = make_agent(**overrides)
    for seed in range(1, 4):
        agent.update(make_batch(seed=seed))
    batch = make_batch(seed=0)
    with torch.no_grad():
        for head in agent.target_critic.heads:
            head[-1].weight.mul_(100.0)
        q_target = agent.target_critic(features(agent, agent.target_encoder, batch), batch["actions"]).min(0).values
        v = agent.value(features(agent, agent.encoder, batch))[0]
        agent.value.heads[0][-1].bias.add_((q_target - v).median())
    return agent, batch


def test_expectile_loss_and_the_reported_value_loss_match_a_hand_computation():
    # The loss function on known tensors: weight 0.7 above, 0.3 below, mean over the batch.
    q, v = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([0.0, 1.0, 0.5, 1.0])
    diff = [1.0, -3.0, 0.0, 2.0]
    hand = sum((0.7 if d > 0 else 0.3) * d * d for d in diff) / 4
    assert expectile_loss(q - v, 0.7).item() == pytest.approx(hand)
    assert expectile_loss(q - v, 0.5).item() == pytest.approx(0.5 * ((q - v) ** 2).mean().item())

    # The agent: V(s) of the online (detached) features against min of the TARGET critics at
    # the target encoder's features of s, all from the pre-update networks.
    agent, batch = warmed_up(expectile=0.9)
    pre = copy.deepcopy(agent)
    metrics = agent.update(batch)
    with torch.no_grad():
        q_target = pre.target_critic(features(pre, pre.target_encoder, batch), batch["actions"]).min(0).values
        v = pre.value(features(pre, pre.encoder, batch))[0]
    diff = q_target - v
    assert (diff > 0).any() and (diff < 0).any(), "both sides of the expectile are exercised"
    by_hand = (torch.where(diff > 0, 0.9, 0.1) * diff**2).mean()
    assert metrics["value_loss"] == pytest.approx(by_hand.item(), rel=1e-5)
    assert metrics["v_mean"] == pytest.approx(v.mean().item(), rel=1e-5)
    # Using the online critic instead of the target would be another number.
    with torch.no_grad():
        q_online = pre.critic(features(pre, pre.encoder, batch), batch["actions"]).min(0).values
    assert metrics["value_loss"] != pytest.approx(expectile_loss(q_online - v, 0.9).item(), rel=1e-5)


def test_actor_loss_uses_the_updated_value_and_the_target_critic():
    agent, batch = warmed_up(value_lr=1e-2, temperature=3.0, max_weight=1.0)
    pre = copy.deepcopy(agent)
    metrics = agent.update(batch)
    with torch.no_grad():
        feats = features(pre, pre.encoder, batch)
        q_target = pre.target_critic(features(pre, pre.target_encoder, batch), batch["actions"]).min(0).values
        log_prob = pre.actor.log_prob(feats, batch["actions"])

        def actor_loss(value_net):
            advantage = q_target - value_net(feats)[0]
            weights = torch.exp(3.0 * advantage).clamp(max=1.0)
            return -(weights * log_prob).mean(), advantage, weights

        loss, advantage, weights = actor_loss(agent.value)  # V after this update's value step
        stale, _, _ = actor_loss(pre.value)
    assert metrics["actor_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert metrics["actor_loss"] != pytest.approx(stale.item(), rel=1e-5), "V must be the updated one"
    assert metrics["adv_mean"] == pytest.approx(advantage.mean().item(), rel=1e-5, abs=1e-7)
    assert metrics["weight_mean"] == pytest.approx(weights.mean().item(), rel=1e-5)
    rate = (weights >= 1.0).float().mean().item()
    assert 0 < rate < 1 and metrics["weight_clip_rate"] == pytest.approx(rate)


def test_critic_target_is_v_of_next_state_from_the_updated_value():
    agent, batch = warmed_up(value_lr=1e-2)
    pre = copy.deepcopy(agent)
    metrics = agent.update(batch)
    with torch.no_grad():
        q = pre.critic(features(pre, pre.encoder, batch), batch["actions"])  # (2, B)
        next_feats = features(pre, pre.encoder, batch, next_=True)

        def losses(value_net):
            target = batch["rewards"] + 0.99 * (1 - batch["terminals"]) * value_net(next_feats)[0]
            per_head = ((q - target) ** 2).mean(dim=1)
            return per_head.mean(), per_head.sum(), target

        td, critic, target = losses(agent.value)
        stale_td, _, _ = losses(pre.value)
    assert metrics["td_loss"] == pytest.approx(td.item(), rel=1e-5)
    assert metrics["critic_loss"] == pytest.approx(critic.item(), rel=1e-5)
    assert metrics["target_q_mean"] == pytest.approx(target.mean().item(), rel=1e-5)
    assert metrics["q_data_mean"] == pytest.approx(q.mean().item(), rel=1e-5, abs=1e-7)
    assert metrics["td_loss"] != pytest.approx(stale_td.item(), rel=1e-5), "V(s') must be the updated one"
    assert metrics["mc_return_mean"] == -20.0


def test_update_moves_every_network_and_only_the_critic_moves_the_encoder():
    agent = make_agent(augment_pad=4)
    batch = make_batch()
    encoder_ids = {id(p) for p in agent.encoder.parameters()}
    params_of = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}
    assert encoder_ids <= params_of(agent.critic_optimizer)
    assert not encoder_ids & (params_of(agent.value_optimizer) | params_of(agent.actor_optimizer))

    # Actor and value losses by hand, as the agent writes them: no gradient reaches the encoder.
    feats = agent.encode(agent.encoder, batch["obs"], batch["proprio"])
    v = agent.value(feats.detach())[0]
    q = agent.target_critic(feats.detach(), batch["actions"]).min(0).values
    (expectile_loss(q - v, 0.7) - (torch.exp(q - v.detach()) * agent.actor.log_prob(feats.detach(), batch["actions"])).mean()).backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is not None for p in agent.value.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())

    parts = {name: snapshot(getattr(agent, name)) for name in ("encoder", "critic", "value", "actor")}
    target_before = snapshot(agent.target_critic)
    metrics = agent.update(batch)
    for name, before in parts.items():
        assert changed(before, getattr(agent, name)), f"{name} did not move"
    for before, target, online in zip(target_before, agent.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(target, before + agent.cfg.tau * (online.detach() - before), rtol=1e-5, atol=1e-6)
    assert set(metrics) == set(IQLAgent.METRICS) and all(math.isfinite(x) for x in metrics.values())
    assert set(IQLAgent.PROGRESS.values()) <= set(IQLAgent.METRICS)
    assert agent.num_updates == 1


def test_state_dict_round_trip_restores_identical_outputs():
    agent = make_agent(seed=0, augment_pad=4)
    for seed in range(3):
        agent.update(make_batch(seed=seed))
    restored = make_agent(seed=123, augment_pad=4)
    restored.load_state_dict(copy.deepcopy(agent.state_dict()))
    assert restored.num_updates == 3
    obs = {KEYS[0]: np.random.default_rng(0).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8), "proprio": np.zeros(9, np.float32)}
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), restored.act(obs, deterministic=True))
    batch = make_batch(seed=7)
    np.testing.assert_array_equal(agent.q_values(batch), restored.q_values(batch))
    torch.manual_seed(5)
    next_original = agent.update(batch)
    torch.manual_seed(5)
    next_restored = restored.update(batch)
    assert next_original == next_restored, "value, actor and optimizer states were restored too"
    assert set(agent.policy_state_dict()) == {"encoder", "actor"}
