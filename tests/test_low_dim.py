"""Tasks without cameras: the state encoder, the config that picks it, the environment that
never renders for the policy, and robomimic-layout low-dim files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from calql_vision.agents import ALGORITHMS, ObsSpec, algo_schema, make_agent
from calql_vision.config import ConfigError, EncoderConfig, TrainConfig, load_config, load_group_file
from calql_vision.losses import return_range
from conftest import ROOT, task_config
from encoders import StateEncoder, StateNormalizer, build_encoder
from encoders.normalize import STD_EPSILON

LIFT_STATE_KEYS = ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
STATE_SPEC = ObsSpec(image_keys=(), image_shape=(3, 84, 84), proprio_dim=19, action_dim=7)


def train_config(*argv: str):
    return load_config(TrainConfig, list(argv), "calql_vision.train", "", base_file="base.yaml")


# ---------------------------------------------------------------------- the encoder
def test_identity_state_encoder_passes_the_state_through_unchanged():
    encoder = build_encoder("state", image_keys=(), image_shape=(3, 84, 84), proprio_dim=5)
    state = torch.randn(4, 5)
    assert encoder.output_dim == 5 and sum(p.numel() for p in encoder.parameters()) == 0
    assert torch.equal(encoder({}, state), state)


def test_mlp_state_encoder_shapes_and_bf16_autocast_leaves_it_in_fp32():
    encoder = StateEncoder((), (3, 8, 8), proprio_dim=5, hidden_dims=[16], feature_dim=8)
    state = torch.randn(4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = encoder({}, state)
    assert features.shape == (4, 8) and features.dtype == torch.float32 and encoder.output_dim == 8
    torch.testing.assert_close(features, encoder({}, state), rtol=0, atol=0)


@pytest.mark.parametrize("images,state,message", [
    ({"agentview_image": torch.zeros(4, 3, 8, 8, dtype=torch.uint8)}, torch.randn(4, 5), "takes no images"),
    ({}, torch.randn(4, 6), r"shape \(B, 5\)"),
    ({}, None, r"shape \(B, 5\)"),
])
def test_state_encoder_rejects_wrong_inputs(images, state, message):
    with pytest.raises(ValueError, match=message):
        StateEncoder((), (3, 8, 8), proprio_dim=5)(images, state)


def test_state_encoder_refuses_cameras():
    with pytest.raises(ValueError, match="use encoder=conv"):
        StateEncoder(("agentview_image",), (3, 8, 8), proprio_dim=5)


def build_state_agent(name: str, hidden_dims: list[int]):
    algo = OmegaConf.merge(OmegaConf.structured(algo_schema(name)), load_group_file("algo", name),
                           {"hidden_dims": [32, 32]})
    if "cql_n_actions" in algo:
        algo.cql_n_actions = 3
    encoder = OmegaConf.merge(OmegaConf.structured(EncoderConfig), load_group_file("encoder", "state"),
                              {"hidden_dims": hidden_dims, "feature_dim": 16})
    torch.manual_seed(0)
    agent = make_agent(algo, encoder, STATE_SPEC, torch.device("cpu"), "bf16")
    agent.return_range = return_range(-1.0, 0.0, float(algo.discount))  # as the trainer tells it: state_batch's rewards
    return agent


def state_batch(rows: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": {}, "next_obs": {},
        "proprio": torch.randn(rows, 19, generator=g), "next_proprio": torch.randn(rows, 19, generator=g),
        "actions": torch.rand(rows, 7, generator=g) * 1.8 - 0.9,
        "rewards": -(torch.rand(rows, generator=g) < 0.9).float(), "terminals": (torch.rand(rows, generator=g) < 0.1).float(),
        "truncations": torch.zeros(rows), "reward_to_go": -torch.rand(rows, generator=g) * 30,
    }


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("hidden_dims", [[], [16]])
def test_every_agent_learns_from_states_and_only_the_critic_side_moves_the_encoder(name, hidden_dims):
    agent = build_state_agent(name, hidden_dims)
    for phase in ("offline", "online"):
        if phase == "online":
            agent.on_online_start()
        critic = [p.detach().clone() for p in agent.critic.parameters()]
        metrics = agent.update(state_batch(8 * agent.batch_slices, seed=len(phase)))
        assert all(np.isfinite(v) for v in metrics.values()), metrics
        assert any(not torch.equal(a, b) for a, b in zip(critic, agent.critic.parameters()))
    actor_params = {id(p) for group in agent.actor_optimizer.param_groups for p in group["params"]}
    encoder_params = {id(p) for p in agent.encoder.parameters()}
    assert not actor_params & encoder_params
    if hidden_dims:  # the MLP trains through the critic's optimizer, and its target follows
        critic_params = {id(p) for group in agent.critic_optimizer.param_groups for p in group["params"]}
        assert encoder_params <= critic_params
        assert any(not torch.equal(a, b) for a, b in zip(agent.encoder.parameters(), agent.target_encoder.parameters()))
    action = agent.act({"proprio": np.linspace(-1, 1, 19)}, deterministic=True)
    assert action.shape == (7,) and np.all(np.abs(action) <= 1)


# ---------------------------------------------------------------------- state normalisation
def test_the_normaliser_is_the_identity_until_fit_then_centres_and_scales_the_data():
    normalizer = StateNormalizer(3)
    states = np.random.default_rng(0).normal([0.8, -2.0, 5.0], [0.003, 0.5, 0.0], size=(500, 3))
    x = torch.as_tensor(states, dtype=torch.float32)
    assert normalizer.is_identity and torch.equal(normalizer(x), x)
    normalizer.fit(states)
    y = normalizer(x).double()
    assert not normalizer.is_identity and not list(normalizer.parameters())  # statistics, never trained
    torch.testing.assert_close(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-4, rtol=0)
    # std / (std + eps): the mm-scale entry comes out near 0.75, the constant one at 0, finite.
    torch.testing.assert_close(y.std(0, correction=0), torch.tensor([0.003 / (0.003 + STD_EPSILON), 1.0, 0.0],
                                                                   dtype=torch.float64), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        normalizer.fit(states[:, :2])


def test_an_agent_reads_the_normalised_state_and_its_checkpoint_carries_the_statistics():
    agent = build_state_agent("calql", [])
    states = np.random.default_rng(1).normal(0.5, 0.01, size=(200, 19))
    raw = states[:4]
    before = agent.act({"proprio": raw}, deterministic=True)
    agent.state_normalizer.fit(states)
    after = agent.act({"proprio": raw}, deterministic=True)
    assert not np.allclose(before, after)
    # The same networks fed the hand-normalised state act alike: normalisation is all that changed.
    twin = build_state_agent("calql", [])
    by_hand = (raw - states.mean(0)) / (states.std(0) + STD_EPSILON)
    np.testing.assert_allclose(twin.act({"proprio": by_hand}, deterministic=True), after, atol=1e-5)
    restored = build_state_agent("calql", [])
    restored.load_state_dict(agent.state_dict())
    np.testing.assert_array_equal(restored.act({"proprio": raw}, deterministic=True), after)
    # A checkpoint from before normalisation existed loads as the raw-state agent it was.
    old = agent.state_dict()
    del old["state_normalizer"]
    restored.load_state_dict(old)
    assert restored.state_normalizer.is_identity
    np.testing.assert_array_equal(restored.act({"proprio": raw}, deterministic=True), before)


def test_state_tasks_normalise_by_default_and_runs_from_before_the_setting_keep_the_raw_state(tmp_path):
    from calql_vision.config import load_run_config

    assert train_config("task=lift_state").encoder.normalize_state is True
    assert train_config("task=lift_visual").encoder.normalize_state is False
    assert train_config("task=lift_state", "encoder.normalize_state=false").encoder.normalize_state is False
    saved = OmegaConf.to_container(train_config("task=lift_state"))
    del saved["encoder"]["normalize_state"]
    OmegaConf.save(OmegaConf.create(saved), tmp_path / "config.yaml")
    assert load_run_config(tmp_path).encoder.normalize_state is False


# ---------------------------------------------------------------------- the config
def test_a_task_without_cameras_gets_the_state_encoder_by_default():
    cfg = train_config("task=lift_state")
    assert list(cfg.task.cameras) == [] and cfg.encoder.kind == "state" and list(cfg.task.proprio_keys) == LIFT_STATE_KEYS
    assert train_config("task=pick_place_state").encoder.kind == "state"
    assert train_config("task=lift_visual").encoder.kind == "conv"
    # The task named last decides, wherever it stands on the command line.
    assert train_config("task=lift_visual", "seed=1", "task=lift_state").encoder.kind == "state"
    assert train_config("task=lift_state", "encoder.hidden_dims=[64]").encoder.hidden_dims == [64]


def test_the_default_encoder_keeps_the_place_of_a_group_file_before_presets_and_overrides():
    from calql_vision.launch import PRESETS

    for argv in (["preset=quick", "task=lift_visual"], ["task=lift_visual", "preset=quick"]):
        cfg = load_config(TrainConfig, argv, "calql_vision.train", "", presets=PRESETS, base_file="base.yaml")
        assert (cfg.encoder.kind, cfg.encoder.channels, list(cfg.encoder.strides)) == ("conv", 16, [2, 2, 2, 1])
    assert train_config("task=lift_visual", "task.cameras=[]", "task.proprio_keys=[object]").encoder.kind == "state"


def test_a_low_dim_task_ignores_the_render_quality_of_the_dataset_frames(tmp_path):
    """robomimic's low-dim files record no render quality (they count as `full`); a low-dim
    policy sees no frames, so an explicit other setting (for its videos) is no mismatch."""
    from calql_vision.training_data import resolve_task_render_quality

    path = tmp_path / "low_dim.hdf5"
    write_robomimic_low_dim(path)
    cfg = train_config("task=lift_state", f"dataset={path}", "task.render_quality=fast")
    resolve_task_render_quality(cfg)
    assert cfg.task.render_quality == "fast"
    pixels = train_config("task=lift_visual", f"dataset={path}", "task.render_quality=fast")
    with pytest.raises(ConfigError, match="allow_render_mismatch"):
        resolve_task_render_quality(pixels)


@pytest.mark.parametrize("argv,message", [
    (["task=lift_state", "encoder=conv"], "task.cameras=[] has no images; use encoder=state"),
    (["task=lift_visual", "encoder=state"], "are images; use encoder=conv"),
    (["task=lift_state", "task.proprio_keys=[]"], "the policy would see nothing"),
])
def test_an_encoder_that_does_not_fit_the_task_is_refused(argv, message):
    with pytest.raises(ConfigError) as error:
        train_config(*argv)
    assert message in str(error.value)


# ---------------------------------------------------------------------- the environment
def test_a_state_environment_never_renders_for_the_policy_but_draws_videos():
    import envs  # noqa: F401  (headless GL before robosuite)
    from envs.robosuite_env import make_env

    env = make_env(task_config("lift_state", horizon=5), seed=0)
    try:
        obs, info = env.reset(seed=7)
        obs, *_ = env.step(np.zeros(7))
        obs, reward, terminated, truncated, info = env.step(np.full(7, 0.1))
        assert set(obs) == {"proprio"} and obs["proprio"].dtype == np.float32
        expected = np.concatenate([info["low_dim"][key] for key in LIFT_STATE_KEYS]).astype(np.float32)
        np.testing.assert_array_equal(obs["proprio"], expected)
        assert obs["proprio"].shape == (10 + 3 + 4 + 2,)
        assert env._env.sim._render_context_offscreen is None, "stepping built no GL context"  # noqa: SLF001
        frame = env.render("agentview", 64)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
        # A reset keeps the context; the scene of the same seed renders the same.
        env.reset(seed=7)
        np.testing.assert_array_equal(env.render("agentview", 64), env.render("agentview", 64))
    finally:
        env.close()


# ---------------------------------------------------------------------- robomimic low-dim files
def write_robomimic_low_dim(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """A file laid out as robomimic's own `low_dim` datasets are: demos from demo_1, float64
    low-dim keys (more than a task reads), obs and next_obs, states, env_args, train/valid
    masks, no images. Returns each demo's arrays."""
    rng = np.random.default_rng(0)
    demos = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = '{"env_name": "Lift", "type": 1, "env_kwargs": {}}'
        total = 0
        for index, (steps, success) in enumerate([(6, True), (4, False), (5, True)], start=1):
            group = data.create_group(f"demo_{index}")
            group.attrs["num_samples"] = steps
            track = {"object": rng.normal(size=(steps + 1, 10)), "robot0_eef_pos": rng.normal(size=(steps + 1, 3)),
                     "robot0_eef_quat": rng.normal(size=(steps + 1, 4)),
                     "robot0_gripper_qpos": rng.normal(size=(steps + 1, 2)),
                     "robot0_joint_vel": rng.normal(size=(steps + 1, 7))}
            for key, values in track.items():
                group[f"obs/{key}"] = values[:steps]
                group[f"next_obs/{key}"] = values[1:]
            group["actions"] = rng.uniform(-1, 1, size=(steps, 7))
            group["states"] = rng.normal(size=(steps, 32))
            rewards = np.zeros(steps)
            rewards[-1] = float(success)
            group["rewards"], group["dones"] = rewards, rewards.astype(np.int64)
            demos[f"demo_{index}"] = {**track, "actions": group["actions"][()], "rewards": rewards}
            total += steps
        data.attrs["total"] = total
        f["mask/train"] = np.array([b"demo_1", b"demo_3"])
        f["mask/valid"] = np.array([b"demo_2"])
    return demos


def test_a_robomimic_low_dim_file_loads_with_exact_values(tmp_path):
    from datasets import load_robomimic_hdf5

    path = tmp_path / "low_dim.hdf5"
    demos = write_robomimic_low_dim(path)
    dataset = load_robomimic_hdf5(path, [], LIFT_STATE_KEYS, gamma=0.99, reward_bias=-1.0, filter_key="train",
                                  show_progress=False)
    assert dataset.images == {} and dataset.demo_names == ["demo_1", "demo_3"]
    first = 0
    for name in dataset.demo_names:
        demo = demos[name]
        steps = len(demo["actions"])
        expected = np.concatenate([demo[key] for key in LIFT_STATE_KEYS], axis=1).astype(np.float32)
        np.testing.assert_array_equal(dataset.proprio[first:first + steps + 1], expected)
        transitions = np.flatnonzero(dataset.demo_of_transition == dataset.demo_names.index(name))
        np.testing.assert_array_equal(dataset.actions[transitions], demo["actions"].astype(dataset.actions.dtype))
        np.testing.assert_array_equal(dataset.obs_index[transitions], first + np.arange(steps))
        np.testing.assert_array_equal(dataset.next_obs_index[transitions], first + 1 + np.arange(steps))
        # Success at the last step: r' = -1 ... -1, 0 and G_t = -(1 - 0.99^(T-1-t)) / 0.01.
        np.testing.assert_allclose(dataset.reward_to_go[transitions],
                                   -(1 - 0.99 ** (steps - 1 - np.arange(steps))) / 0.01, rtol=1e-5)
        first += steps + 1


@pytest.mark.slow
def test_collecting_a_state_task_writes_a_low_dim_file_robomimic_opens(tmp_path):
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    out = tmp_path / "lift_state.hdf5"
    result = subprocess.run([sys.executable, "-m", "calql_vision.collect", "task=lift_state", "episodes=2",
                             "task.horizon=20", f"out={out}", "valid_fraction=0.5"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with h5py.File(out, "r") as f:
        keys = set(f["data/demo_0/obs"])
    assert set(LIFT_STATE_KEYS) <= keys and not any(k.endswith("_image") for k in keys)
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": LIFT_STATE_KEYS}})
    dataset = SequenceDataset(
        hdf5_path=str(out), obs_keys=LIFT_STATE_KEYS, dataset_keys=["actions", "rewards", "dones"],
        load_next_obs=True, frame_stack=1, seq_length=1, pad_frame_stack=True, pad_seq_length=True,
        get_pad_mask=False, goal_mode=None, hdf5_cache_mode="all", hdf5_use_swmr=True,
        hdf5_normalize_obs=False, filter_by_attribute="train",
    )
    assert len(dataset) == 20 and dataset[0]["obs"]["object"].shape[-1] == 10
