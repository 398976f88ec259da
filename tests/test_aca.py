"""The ACA agent: the Z -> R switch, the frozen pi_0 and its clipped prior, the offline losses,
the prior-weight schedule, checkpoints in both phases and encoder ownership."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from calql_vision.agents import ObsSpec
from calql_vision.agents.aca import ACAAgent
from calql_vision.algo_configs import ACAConfig
from calql_vision.config import EncoderConfig

IMAGE_SHAPE = (3, 32, 32)
KEYS = ["agentview_image"]


def make_agent(seed: int = 0, augment_pad: int = 4, **algo_overrides) -> ACAAgent:
    """backup_entropy on, as configs/algo/aca.yaml (and the official code) sets it."""
    torch.manual_seed(seed)
    overrides = {"name": "aca", "hidden_dims": [32, 32], "backup_entropy": True, **algo_overrides}
    algo = OmegaConf.merge(OmegaConf.structured(ACAConfig), overrides)
    encoder = OmegaConf.merge(
        OmegaConf.structured(EncoderConfig), {"channels": 8, "strides": [2, 2], "feature_dim": 16, "augment_pad": augment_pad}
    )
    spec = ObsSpec(image_keys=tuple(KEYS), image_shape=IMAGE_SHAPE, proprio_dim=9, action_dim=7)
    return ACAAgent(algo, encoder, spec, device=torch.device("cpu"), precision="fp32")


def make_batch(batch_size: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = lambda: {KEYS[0]: torch.randint(0, 256, (batch_size, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)}
    return {
        "obs": images(), "next_obs": images(),
        "proprio": torch.randn(batch_size, 9, generator=g), "next_proprio": torch.randn(batch_size, 9, generator=g),
        "actions": torch.rand(batch_size, 7, generator=g) * 2 - 1,
        "rewards": -torch.ones(batch_size), "terminals": (torch.arange(batch_size) % 3 == 0).float(),
        "truncations": torch.zeros(batch_size), "reward_to_go": torch.full((batch_size,), -20.0),
    }


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def pretrained(steps: int = 4, **overrides) -> ACAAgent:
    agent = make_agent(**overrides)
    for seed in range(steps):
        agent.update(make_batch(seed=seed))
    return agent


def optimized_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def hand_floor(mean: torch.Tensor, log_std: torch.Tensor, beta: float) -> torch.Tensor:
    """m(s) written out in float64: min over u = mean -+ beta std of
    sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2)]."""
    mean, log_std = mean.double(), log_std.double()
    std = log_std.exp()
    values = []
    for u in (mean - beta * std, mean + beta * std):
        gaussian = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        values.append((gaussian - torch.log(1 - torch.tanh(u) ** 2)).sum(-1))
    return torch.minimum(*values)


# ---------------------------------------------------------------------- 1. the switch
def test_switch_starts_q_at_log_pi0_plus_z_and_r_equals_z_per_head():
    beta = 10.0
    agent = pretrained(clip_beta=beta, critic_lr=3e-3)
    batch = make_batch(seed=11)
    with torch.no_grad():
        features = agent.encode(agent.encoder, batch["obs"], batch["proprio"])
        z = agent.z(features)  # (2, B)
        log_pi0 = agent.actor.log_prob(features, batch["actions"])
        mean, log_std = agent.actor.distribution(features)
    assert z.abs().max() > 0.05, "a few offline updates move Z off its near-zero init"
    offline_critic = agent.critic

    agent.on_online_start()
    assert agent.online and agent.critic is not offline_critic
    assert len(agent.critic.heads) == agent.cfg.num_z
    for r_head, z_head in zip(agent.critic.heads, agent.z.heads):
        assert torch.all(r_head[0].weight[:, agent.feature_dim:] == 0), "action columns start at zero"
        torch.testing.assert_close(r_head[0].weight[:, :agent.feature_dim], z_head[0].weight, rtol=0, atol=0)
    with torch.no_grad():
        random_actions = torch.rand(8, 7) * 2 - 1
        r = agent.critic(features, random_actions)
        target_r = agent.target_critic(agent.encode(agent.target_encoder, batch["obs"], batch["proprio"]), random_actions)
    torch.testing.assert_close(r, z, rtol=0, atol=1e-6)  # R_k(s, a) = Z_k(s) for any a, per head
    torch.testing.assert_close(target_r, z, rtol=0, atol=1e-6)  # target R and target encoder synced

    # beta large: the soft clip is inactive (every log pi_0 lies far above the floor).
    floor = hand_floor(mean, log_std, beta)
    assert torch.all(log_pi0.double() - floor > 30)
    assert agent.prior_weight == 1.0
    expected = log_pi0 + z.min(0).values
    np.testing.assert_allclose(agent.q_values(batch), expected.numpy(), rtol=0, atol=1e-4)

    # beta small: the clip acts, and q_values follow c(x) = softplus(x - m) + m exactly.
    small = pretrained(clip_beta=0.5, critic_lr=3e-3)
    small.on_online_start()
    with torch.no_grad():
        features = small.encode(small.encoder, batch["obs"], batch["proprio"])
        mean, log_std = small.actor.distribution(features)
        log_pi0 = small.actor.log_prob(features, batch["actions"]).double()
        floor = hand_floor(mean, log_std, 0.5)
        expected = F.softplus(log_pi0 - floor) + floor + small.z(features).min(0).values.double()
        unclipped = log_pi0 + small.z(features).min(0).values.double()
    assert torch.any(log_pi0 < floor), "some data actions sit below the floor: the clip matters"
    np.testing.assert_allclose(small.q_values(batch), expected.numpy(), rtol=1e-6, atol=1e-4)
    assert not np.allclose(small.q_values(batch), unclipped.numpy(), atol=1e-2)


def test_after_the_switch_z_is_frozen_and_pi0_is_in_no_optimizer():
    agent = pretrained(steps=2)
    agent.on_online_start()
    agent.on_online_start()  # a second call changes nothing
    # Z is kept but no longer trained; pi_0 is in no optimizer.
    ids = optimized_ids(agent.critic_optimizer)
    assert {id(p) for p in agent.encoder.parameters()} <= ids
    assert {id(p) for p in agent.critic.parameters()} <= ids
    assert not ids & {id(p) for p in agent.z.parameters()}
    reference = list(agent.reference_actor.parameters()) + list(agent.reference_encoder.parameters())
    assert all(not p.requires_grad for p in reference)
    every_optimized = set().union(*(optimized_ids(o) for o in (agent.critic_optimizer, agent.actor_optimizer, agent.alpha_optimizer)))
    assert not every_optimized & {id(p) for p in reference}


# ---------------------------------------------------------------------- 2. frozen pi_0
def test_pi0_stays_frozen_while_actor_and_encoder_learn():
    agent = pretrained()
    agent.on_online_start()
    actor_0, encoder_0 = snapshot(agent.reference_actor), snapshot(agent.reference_encoder)
    torch.testing.assert_close(actor_0, snapshot(agent.actor), rtol=0, atol=0)
    torch.testing.assert_close(encoder_0, snapshot(agent.encoder), rtol=0, atol=0)
    z_before = snapshot(agent.z)
    for seed in range(4):
        metrics = agent.update(make_batch(seed=20 + seed))
        assert all(math.isfinite(v) for v in metrics.values())
    assert not changed(actor_0, agent.reference_actor) and not changed(encoder_0, agent.reference_encoder)
    assert changed(actor_0, agent.actor) and changed(encoder_0, agent.encoder)
    assert not changed(z_before, agent.z), "Z is not updated online"
    assert set(metrics) <= set(ACAAgent.METRICS) and set(ACAAgent.PROGRESS.values()) <= set(metrics)
    assert metrics["actor_grad_norm"] > 0


# ---------------------------------------------------------------------- 3. offline losses
@pytest.mark.parametrize("backup_entropy", [True, False])
def test_offline_actor_and_z_losses_match_a_hand_computation(backup_entropy):
    agent = pretrained(steps=3, augment_pad=0, alpha_lr=1e-2, backup_entropy=backup_entropy)
    encoder, actor, critic, target_critic = (copy.deepcopy(m) for m in (agent.encoder, agent.actor, agent.critic, agent.target_critic))
    target_encoder, z_heads = copy.deepcopy(agent.target_encoder), copy.deepcopy(agent.z)
    alpha = float(agent.log_alpha.detach().exp())
    assert alpha != 1.0
    batch = make_batch(seed=5)
    torch.manual_seed(3)
    metrics = agent.update(batch)
    assert set(metrics) <= set(ACAAgent.METRICS) and set(ACAAgent.PROGRESS.values()) <= set(metrics)

    torch.manual_seed(3)  # the same draws: a~ ~ pi(.|s) first, then a' ~ pi(.|s')
    with torch.no_grad():
        s = agent.encode(encoder, batch["obs"], batch["proprio"])
        s_next = agent.encode(encoder, batch["next_obs"], batch["next_proprio"])
        s_next_target = agent.encode(target_encoder, batch["next_obs"], batch["next_proprio"])
        new_actions, log_prob = actor(s)
        q_new = torch.minimum(critic.heads[0](torch.cat([s, new_actions], -1)), critic.heads[1](torch.cat([s, new_actions], -1))).squeeze(-1)
        lam = 30.0 / q_new.abs().mean()
        log_pi_data = actor.log_prob(s, batch["actions"])
        actor_loss = lam * (alpha * log_prob - q_new).mean() - log_pi_data.mean()

        next_actions, next_log_prob = actor(s_next)
        r, d, gamma = batch["rewards"], batch["terminals"], 0.99
        q_next = target_critic(s_next_target, next_actions).min(0).values
        entropy = alpha * next_log_prob if backup_entropy else 0.0
        y_q = r + gamma * (1 - d) * (q_next - entropy)
        z_next = torch.minimum(z_heads.heads[0](s_next), z_heads.heads[1](s_next)).squeeze(-1)
        y_z = r + gamma * (1 - d) * (next_log_prob + z_next - entropy)
        z_losses = [((log_pi_data + head(s).squeeze(-1) - y_z) ** 2).mean() for head in z_heads.heads]
        td_losses = [((head(torch.cat([s, batch["actions"]], -1)).squeeze(-1) - y_q) ** 2).mean() for head in critic.heads]
    assert metrics["bc_lambda"] == pytest.approx(float(lam), rel=1e-5)
    assert metrics["actor_loss"] == pytest.approx(float(actor_loss), rel=1e-5, abs=1e-5)
    assert metrics["log_pi_data"] == pytest.approx(float(log_pi_data.mean()), rel=1e-5)
    assert metrics["z_loss"] == pytest.approx(float(sum(z_losses)) / 2, rel=1e-5)
    assert metrics["td_loss"] == pytest.approx(float(sum(td_losses)) / 2, rel=1e-5)
    assert metrics["critic_loss"] == pytest.approx(float(sum(z_losses) + sum(td_losses)), rel=1e-5)
    assert metrics["alpha"] == pytest.approx(alpha)


def test_online_critic_and_actor_losses_match_a_hand_computation():
    agent = pretrained(steps=2, augment_pad=0, clip_beta=1.0)
    agent.on_online_start()
    for seed in range(2):  # R, the encoder and the target now differ from Z and pi_0's copies
        agent.update(make_batch(seed=40 + seed))
    agent.prior_weight = w = 0.7
    nets = {name: copy.deepcopy(getattr(agent, name)) for name in (
        "encoder", "target_encoder", "reference_encoder", "actor", "reference_actor", "critic", "target_critic")}
    alpha = float(agent.log_alpha.detach().exp())
    batch = make_batch(seed=6)
    torch.manual_seed(8)
    metrics = agent.update(batch)
    assert metrics["prior_weight"] == w

    torch.manual_seed(8)
    with torch.no_grad():
        enc = lambda name, key, proprio: agent.encode(nets[name], batch[key], batch[proprio])
        s, s_next = enc("encoder", "obs", "proprio"), enc("encoder", "next_obs", "next_proprio")
        s_next_target = enc("target_encoder", "next_obs", "next_proprio")

        def prior(obs_key, proprio_key, actions):
            mean, log_std = nets["reference_actor"].distribution(enc("reference_encoder", obs_key, proprio_key))
            floor = hand_floor(mean, log_std, 1.0)
            log_pi0 = nets["reference_actor"].log_prob_from(mean, log_std, actions).double()
            return (w * (F.softplus(log_pi0 - floor) + floor)).float()

        new_actions, log_prob = nets["actor"](s)
        q_new = nets["critic"](s, new_actions).min(0).values + prior("obs", "proprio", new_actions)
        actor_loss = (alpha * log_prob - q_new).mean()
        next_actions, next_log_prob = nets["actor"](s_next)
        next_value = (nets["target_critic"](s_next_target, next_actions).min(0).values
                      + prior("next_obs", "next_proprio", next_actions) - alpha * next_log_prob)
        y = batch["rewards"] + 0.99 * (1 - batch["terminals"]) * next_value
        prior_data = prior("obs", "proprio", batch["actions"])
        q_data = nets["critic"](s, batch["actions"]) + prior_data
        td_loss = ((q_data - y) ** 2).mean(-1).mean()
    assert metrics["actor_loss"] == pytest.approx(float(actor_loss), rel=1e-4, abs=1e-4)
    assert metrics["td_loss"] == pytest.approx(float(td_loss), rel=1e-4)
    assert metrics["target_q_mean"] == pytest.approx(float(y.mean()), rel=1e-4, abs=1e-4)
    assert metrics["prior_mean"] == pytest.approx(float(prior_data.mean()), rel=1e-4, abs=1e-4)
    assert metrics["q_data_mean"] == pytest.approx(float(q_data.mean()), rel=1e-4, abs=1e-4)
    # The actor's gradient was clipped at norm 0.25 (what step() used is still on the params).
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in agent.actor.parameters()]))
    assert float(norm) == pytest.approx(min(metrics["actor_grad_norm"], 0.25), rel=1e-4)


# ---------------------------------------------------------------------- 4. schedules
def test_prior_weight_decays_per_online_step_and_temperature_resets_to_one():
    agent = pretrained(steps=3, alpha_lr=1e-2, prior_weight_start=1.0, prior_weight_end=0.5, prior_decay_steps=4)
    assert float(agent.log_alpha.detach().exp()) != pytest.approx(1.0, abs=1e-3), "offline moved the temperature"
    offline_alpha_optimizer = agent.alpha_optimizer
    agent.on_online_start()
    assert float(agent.log_alpha.detach()) == 0.0 and agent.alpha_optimizer is not offline_alpha_optimizer
    assert not agent.alpha_optimizer.state, "a fresh temperature optimizer"
    weights, alphas = [], []
    for seed in range(6):
        metrics = agent.update(make_batch(seed=seed))
        weights.append(metrics["prior_weight"])
        alphas.append(metrics["alpha"])
    np.testing.assert_allclose(weights, [1.0, 0.875, 0.75, 0.625, 0.5, 0.5], atol=1e-12)
    assert agent.prior_weight == 0.5
    assert alphas[0] == 1.0 and alphas[1] != 1.0, "temperature 1 at the switch, then auto-tuned"

    still = pretrained(steps=1, prior_weight_start=0.8, prior_decay_steps=0)
    still.on_online_start()
    for seed in range(3):
        assert still.update(make_batch(seed=seed))["prior_weight"] == 0.8
    assert still.prior_weight == 0.8


def test_prior_weight_scales_the_prior_inside_q():
    agent = pretrained(steps=2, prior_weight_start=1.0, prior_weight_end=0.0, prior_decay_steps=2)
    agent.on_online_start()
    batch = make_batch(seed=9)
    q_full = agent.q_values(batch)
    agent.prior_weight = 0.0
    q_r = agent.q_values(batch)
    assert np.abs(q_full - q_r).min() > 1e-3, "the prior is a visible part of Q"
    agent.prior_weight = 0.5
    np.testing.assert_allclose(agent.q_values(batch), 0.5 * (q_full - q_r) + q_r, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- 5. checkpoints
def assert_same_agent(agent: ACAAgent, restored: ACAAgent) -> None:
    obs = {KEYS[0]: np.random.default_rng(0).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8), "proprio": np.zeros(9, np.float32)}
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), restored.act(obs, deterministic=True))
    batch = make_batch(seed=7)
    np.testing.assert_array_equal(agent.q_values(batch), restored.q_values(batch))
    assert restored.online == agent.online and restored.prior_weight == agent.prior_weight
    torch.manual_seed(5)
    next_original = agent.update(batch)
    torch.manual_seed(5)
    next_restored = restored.update(batch)
    assert next_original == next_restored, "optimizer states, temperature and w were restored too"
    assert restored.num_updates == agent.num_updates


def test_checkpoint_round_trip_offline(tmp_path):
    from calql_vision.checkpoint import atomic_torch_save, load_checkpoint

    agent = pretrained(steps=3)
    atomic_torch_save(agent.state_dict(), tmp_path / "agent.pt")
    restored = make_agent(seed=123)
    restored.load_state_dict(load_checkpoint(tmp_path / "agent.pt"))
    assert not restored.online and restored.reference_actor is None
    assert_same_agent(agent, restored)


def test_checkpoint_round_trip_online_into_a_fresh_offline_agent(tmp_path):
    from calql_vision.checkpoint import atomic_torch_save, load_checkpoint

    agent = pretrained(steps=3, prior_decay_steps=10)
    agent.on_online_start()
    for seed in range(3):
        agent.update(make_batch(seed=30 + seed))
    state = agent.state_dict()
    assert state["online"] is True and {"reference_actor", "reference_encoder", "z"} <= set(state)
    atomic_torch_save(state, tmp_path / "agent.pt")
    restored = make_agent(seed=123)
    restored.load_state_dict(load_checkpoint(tmp_path / "agent.pt"))
    assert restored.online and len(restored.critic.heads) == agent.cfg.num_z
    for a, b in ((agent.reference_actor, restored.reference_actor), (agent.reference_encoder, restored.reference_encoder)):
        torch.testing.assert_close(snapshot(a), snapshot(b), rtol=0, atol=0)
        assert all(not p.requires_grad for p in b.parameters())
    assert restored.prior_weight == pytest.approx(1.0 - 3 * 0.05)
    assert_same_agent(agent, restored)

    with pytest.raises(ValueError, match="offline ACA state"):
        restored.load_state_dict(make_agent().state_dict())


# ---------------------------------------------------------------------- 6. encoder ownership
@pytest.mark.parametrize("online", [False, True])
def test_actor_loss_never_moves_the_encoder(online):
    agent = pretrained(steps=2)
    if online:
        agent.on_online_start()
    batch = make_batch(seed=3)
    # The actor objective alone, fed features WITH gradient: nothing reaches the encoder.
    features = agent.encode(agent.encoder, batch["obs"], batch["proprio"])
    alpha = agent.log_alpha.exp().detach()
    if online:
        reference = agent._reference(agent.encode(agent.reference_encoder, batch["obs"], batch["proprio"]))
        loss, _ = agent._online_actor_loss(features, reference, alpha)
    else:
        loss = agent._offline_actor_loss(batch, features, alpha)[0]
    agent.actor_optimizer.zero_grad(set_to_none=True)
    agent.critic_optimizer.zero_grad(set_to_none=True)  # what the last update left
    loss.backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())
    encoder_ids = {id(p) for p in agent.encoder.parameters()}
    assert encoder_ids <= optimized_ids(agent.critic_optimizer)
    assert not encoder_ids & optimized_ids(agent.actor_optimizer)

    # A whole update with the critic side frozen (lr 0): the actor moves, the encoder does not.
    for group in agent.critic_optimizer.param_groups:
        group["lr"] = 0.0
    encoder_before, actor_before = snapshot(agent.encoder), snapshot(agent.actor)
    agent.update(batch)
    assert not changed(encoder_before, agent.encoder)
    assert changed(actor_before, agent.actor)


def test_online_actor_gradient_flows_through_the_clipped_prior():
    # With R = 0 and alpha = exp(-200) = 0, the actor's only signal is w c(log pi_0(a~|s)).
    agent = pretrained(steps=2, clip_beta=10.0)
    agent.on_online_start()
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.zero_()
        agent.log_alpha.fill_(-200.0)
    batch = make_batch(seed=4)
    features = agent.encode(agent.encoder, batch["obs"], batch["proprio"])
    reference = agent._reference(agent.encode(agent.reference_encoder, batch["obs"], batch["proprio"]))
    loss, _ = agent._online_actor_loss(features, reference, agent.log_alpha.exp().detach())
    agent.actor_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    assert agent.actor.net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in agent.reference_actor.parameters())


def test_the_algo_config_file_builds_an_agent():
    from calql_vision.config import load_group_file

    algo = OmegaConf.merge(OmegaConf.structured(ACAConfig), load_group_file("algo", "aca"), {"hidden_dims": [32, 32]})
    encoder = OmegaConf.merge(OmegaConf.structured(EncoderConfig), {"channels": 8, "strides": [2, 2], "feature_dim": 16})
    spec = ObsSpec(image_keys=tuple(KEYS), image_shape=IMAGE_SHAPE, proprio_dim=9, action_dim=7)
    agent = ACAAgent(algo, encoder, spec, device=torch.device("cpu"), precision="bf16")
    assert agent.cfg.backup_entropy and len(agent.z.heads) == algo.num_z
    offline = agent.update(make_batch())
    agent.on_online_start()
    online = agent.update(make_batch(seed=1))
    for metrics in (offline, online):
        assert set(metrics) <= set(ACAAgent.METRICS) and all(math.isfinite(v) for v in metrics.values())
    assert {"z_loss", "bc_lambda"} <= set(offline) and {"prior_weight", "prior_mean"} <= set(online)


def test_the_entropy_bonus_warning_names_settings_whose_bonus_outweighs_a_step():
    from calql_vision.config import TrainConfig, load_config
    from calql_vision.launch import PRESETS
    from calql_vision.validation import entropy_bonus_warning

    def warning(*args: str) -> str | None:
        cfg = load_config(TrainConfig, ["task=lift_state", *args], "test", "test", presets=PRESETS, base_file="base.yaml")
        return entropy_bonus_warning(cfg, action_dim=7)

    # alpha 1 against 7 log 2 = 4.85 nats: positive steps until alpha < 1 / 4.85.
    assert "until alpha falls below 0.206" in warning("algo=aca", "algo.init_log_alpha=0")
    assert warning("algo=aca", "algo.init_log_alpha=-1.6") is None  # alpha 0.20
    assert warning("algo=aca") is None, "configs/algo/aca.yaml starts at 0.1"
    assert warning("algo=sac") is None  # 0.1 x 4.85 < 1
    assert "at any temperature above 0" in warning("algo=sac", "reward_bias=0")  # no cost to a step at all
    assert warning("algo=calql", "algo.init_log_alpha=0") is None  # no entropy in its target
