"""FrameReplay (frames once, ring wrap-around, checkpoint round trip), mixed_batch and
EpisodeRecorder, on tiny buffers whose every frame carries its own counter in its pixels."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from calql_vision.replay import EpisodeRecorder, FrameReplay, mixed_batch
from datasets import load_robomimic_hdf5, reward_to_go

SHAPES = {"agentview_image": (3, 4, 4), "robot0_eye_in_hand_image": (3, 2, 2)}
PROPRIO_DIM = 2
ACTION_DIM = 3


def frame_pixels(counter: int, key: str) -> np.ndarray:
    """uint8 (C, H, W) that names its frame counter (mod 256) and its camera."""
    camera = list(SHAPES).index(key)
    return np.full(SHAPES[key], (counter + 100 * camera) % 256, dtype=np.uint8)


def make_episode(first_frame: int, num_steps: int, *, success: bool, tag: float = 0.0) -> dict:
    """add_episode arguments for frames first_frame..first_frame+T; proprio[:, 0] is the frame
    counter, actions[:, 0] the step, rewards the tag (so a sample tells where it came from)."""
    counters = first_frame + np.arange(num_steps + 1)
    terminals = np.zeros(num_steps, np.float32)
    truncations = np.zeros(num_steps, np.float32)
    (terminals if success else truncations)[-1] = 1.0
    return {
        "images": {key: np.stack([frame_pixels(c, key) for c in counters]) for key in SHAPES},
        "proprio": np.stack([counters, -counters], axis=1).astype(np.float32),
        "actions": np.tile(np.arange(num_steps, dtype=np.float32)[:, None], (1, ACTION_DIM)),
        "rewards": np.full(num_steps, tag, np.float32),
        "terminals": terminals,
        "truncations": truncations,
        "reward_to_go": np.arange(num_steps, dtype=np.float32) + 0.5,
    }


def new_replay(capacity: int) -> FrameReplay:
    return FrameReplay(capacity, SHAPES, PROPRIO_DIM, ACTION_DIM)


def all_transitions(replay: FrameReplay) -> dict:
    return replay.gather(np.arange(replay.valid_start, replay.num_transitions_added), "cpu")


def assert_frames_match_counters(batch: dict, obs_counters: np.ndarray, next_counters: np.ndarray) -> None:
    for key in SHAPES:
        expected_obs = np.stack([frame_pixels(c, key) for c in obs_counters])
        expected_next = np.stack([frame_pixels(c, key) for c in next_counters])
        np.testing.assert_array_equal(batch["obs"][key].numpy(), expected_obs)
        np.testing.assert_array_equal(batch["next_obs"][key].numpy(), expected_next)
    np.testing.assert_array_equal(batch["proprio"][:, 0].numpy(), obs_counters)
    np.testing.assert_array_equal(batch["next_proprio"][:, 0].numpy(), next_counters)


def test_an_episode_adds_its_frames_once_and_next_obs_is_the_next_frame():
    replay = new_replay(32)
    replay.add_episode(**make_episode(0, 5, success=True))
    assert (replay.num_frames_added, replay.num_transitions_added, len(replay)) == (6, 5, 5)
    replay.add_episode(**make_episode(6, 3, success=False))
    assert (replay.num_frames_added, len(replay)) == (6 + 4, 5 + 3)

    batch = all_transitions(replay)
    obs = np.array([0, 1, 2, 3, 4, 6, 7, 8])
    assert_frames_match_counters(batch, obs, obs + 1)
    # Within an episode next_obs[t] is obs[t + 1]; each episode's final next_obs is its last frame.
    for key in SHAPES:
        np.testing.assert_array_equal(batch["next_obs"][key][:4], batch["obs"][key][1:5])
        np.testing.assert_array_equal(batch["next_obs"][key][4], frame_pixels(5, key))
        np.testing.assert_array_equal(batch["next_obs"][key][7], frame_pixels(9, key))
        assert batch["obs"][key].dtype == torch.uint8 and batch["obs"][key].shape == (8, *SHAPES[key])
    for name in ("proprio", "actions", "rewards", "terminals", "truncations", "reward_to_go"):
        assert batch[name].dtype == torch.float32, name
    assert batch["actions"].shape == (8, ACTION_DIM) and batch["rewards"].shape == (8,)


def test_terminals_and_truncations_are_stored_separately():
    replay = new_replay(32)
    replay.add_episode(**make_episode(0, 3, success=True))  # ends in a terminal
    replay.add_episode(**make_episode(4, 2, success=False))  # cut by the time limit
    batch = all_transitions(replay)
    np.testing.assert_array_equal(batch["terminals"].numpy(), [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(batch["truncations"].numpy(), [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(batch["reward_to_go"].numpy(), [0.5, 1.5, 2.5, 0.5, 1.5])


def _fake_obs(step: int) -> dict[str, np.ndarray]:
    obs = {key: frame_pixels(step, key) for key in SHAPES}
    obs["proprio"] = np.array([step, -step], dtype=np.float32)
    return obs


def _record(rewards: list[float], *, terminated_at_end: bool, gamma: float = 0.99):
    recorder = EpisodeRecorder()
    recorder.start(_fake_obs(0))
    for t, reward in enumerate(rewards):
        last = t == len(rewards) - 1
        recorder.add(np.full(ACTION_DIM, 0.1 * t), reward, terminated=last and terminated_at_end,
                     truncated=last and not terminated_at_end, next_obs=_fake_obs(t + 1))
    return recorder.finish(gamma=gamma, reward_scale=1.0, reward_bias=-1.0)


def test_recorder_reward_to_go_of_a_success_is_the_shared_function():
    episode = _record([0.0, 0.0, 1.0], terminated_at_end=True)
    # data.md worked example: r' = [-1, -1, 0], G = [-1.99, -1, 0].
    np.testing.assert_allclose(episode["reward_to_go"], [-1.99, -1.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(episode["reward_to_go"],
                                  reward_to_go(np.array([0.0, 0.0, 1.0]), np.array([0, 0, 1]), 0.99, 1.0, -1.0))
    np.testing.assert_array_equal(episode["rewards"], [-1, -1, 0])
    np.testing.assert_array_equal(episode["terminals"], [0, 0, 1])
    np.testing.assert_array_equal(episode["truncations"], [0, 0, 0])
    assert (episode.episode_return, episode.length, episode.success) == (1.0, 3, True)
    assert (episode["episode_return"], episode["length"], episode["success"]) == (1.0, 3, True)
    for key in SHAPES:
        assert episode["images"][key].shape == (4, *SHAPES[key])
    np.testing.assert_array_equal(episode["proprio"][:, 0], [0, 1, 2, 3])

    replay = new_replay(16)
    replay.add_episode(**episode.replay_arrays())
    batch = all_transitions(replay)
    assert_frames_match_counters(batch, np.arange(3), np.arange(1, 4))
    np.testing.assert_allclose(batch["reward_to_go"].numpy(), [-1.99, -1.0, 0.0], rtol=1e-6)


def test_recorder_reward_to_go_of_a_failure_is_failing_forever():
    episode = _record([0.0, 0.0, 0.0], terminated_at_end=False)
    # Never succeeded: r_neg / (1 - gamma) = -1 / 0.01 at every step, not the finite sum.
    np.testing.assert_allclose(episode["reward_to_go"], [-100.0, -100.0, -100.0], rtol=1e-6)
    np.testing.assert_array_equal(episode["reward_to_go"],
                                  reward_to_go(np.zeros(3), np.zeros(3), 0.99, 1.0, -1.0))
    np.testing.assert_array_equal(episode["terminals"], [0, 0, 0])
    np.testing.assert_array_equal(episode["truncations"], [0, 0, 1])
    assert (episode.episode_return, episode.length, episode.success) == (0.0, 3, False)


def test_recorder_refuses_steps_after_the_end_and_an_empty_finish():
    recorder = EpisodeRecorder()
    with pytest.raises(RuntimeError, match="start"):
        recorder.add(np.zeros(ACTION_DIM), 0.0, False, False, _fake_obs(1))
    recorder.start(_fake_obs(0))
    with pytest.raises(RuntimeError, match="no steps"):
        recorder.finish(0.99, 1.0, -1.0)
    recorder.add(np.zeros(ACTION_DIM), 1.0, True, False, _fake_obs(1))
    with pytest.raises(RuntimeError, match="already ended"):
        recorder.add(np.zeros(ACTION_DIM), 0.0, False, False, _fake_obs(2))
    bad = _fake_obs(1)
    bad["agentview_image"] = bad["agentview_image"].astype(np.float32)
    recorder.start(_fake_obs(0))
    with pytest.raises(ValueError, match="uint8"):
        recorder.add(np.zeros(ACTION_DIM), 0.0, False, False, bad)


def test_ring_wrap_around_samples_only_intact_transitions_with_their_own_frames():
    capacity = 16
    replay = new_replay(capacity)
    rng = np.random.default_rng(0)
    obs_frame_of: list[int] = []  # transition counter -> frame counter of its obs, bookkept here
    frames_added = 0
    for _ in range(25):
        num_steps = int(rng.integers(1, 7))
        replay.add_episode(**make_episode(frames_added, num_steps, success=bool(rng.integers(2))))
        obs_frame_of.extend(frames_added + np.arange(num_steps))
        frames_added += num_steps + 1

        intact = [t for t, f in enumerate(obs_frame_of) if f >= frames_added - capacity]
        assert replay.valid_start == intact[0] and len(replay) == len(intact) <= capacity
        indices = replay.sample_indices(400, rng)
        assert indices.min() >= replay.valid_start and indices.max() < len(obs_frame_of)
        assert set(indices.tolist()) == set(intact)  # 400 draws cover every intact transition
        batch = replay.gather(indices, "cpu")
        expected_obs = np.array([obs_frame_of[t] for t in indices])
        assert_frames_match_counters(batch, expected_obs, expected_obs + 1)
    assert frames_added > 5 * capacity  # wrapped several times
    with pytest.raises(IndexError):
        replay.gather(np.array([replay.valid_start - 1]), "cpu")


def test_an_episode_longer_than_the_capacity_is_refused():
    replay = new_replay(8)
    replay.add_episode(**make_episode(0, 7, success=True))  # 8 frames: exactly fits
    assert len(replay) == 7
    with pytest.raises(ValueError, match="capacity"):
        replay.add_episode(**make_episode(8, 8, success=True))
    assert (replay.num_frames_added, len(replay)) == (8, 7)  # the refused episode left no trace


def test_add_episode_validates_shapes_and_dtypes():
    replay = new_replay(16)
    episode = make_episode(0, 3, success=True)
    cases = {
        "uint8": {**episode, "images": {**episode["images"], "agentview_image": episode["images"]["agentview_image"] / 1.0}},
        "image keys": {**episode, "images": {"agentview_image": episode["images"]["agentview_image"]}},
        "proprio": {**episode, "proprio": episode["proprio"][:-1]},
        "actions": {**episode, "actions": episode["actions"][:, :2]},
        "rewards": {**episode, "rewards": episode["rewards"][:2]},
        "both terminal and truncated": {**episode, "truncations": np.ones(3, np.float32)},
    }
    for match, arguments in cases.items():
        with pytest.raises(ValueError, match=match):
            replay.add_episode(**arguments)
    assert len(replay) == 0


def _write_robomimic(path: Path, demos: dict[str, tuple[int, bool]]) -> Path:
    """Minimal robomimic file: per demo n steps over frames 0..n, next_obs = obs shifted."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for number, (name, (n, success)) in enumerate(demos.items()):
            group = data.create_group(name)
            group["actions"] = np.zeros((n, ACTION_DIM))
            group["rewards"] = np.r_[np.zeros(n - 1), float(success)]
            group["dones"] = np.r_[np.zeros(n - 1), int(success)].astype(np.int64)
            t = np.arange(n + 1)
            image = np.broadcast_to((10 * number + t).astype(np.uint8)[:, None, None, None], (n + 1, 4, 4, 3))
            track = {"agentview_image": image, "robot0_eef_pos": np.stack([t, t, t], axis=1).astype(np.float64)}
            for key, values in track.items():
                group[f"obs/{key}"] = np.ascontiguousarray(values[:n])
                group[f"next_obs/{key}"] = np.ascontiguousarray(values[1:])
        data.attrs["total"] = sum(n for n, _ in demos.values())
    return path


def test_from_dataset_shares_the_dataset_frames(tmp_path: Path):
    path = _write_robomimic(tmp_path / "demos.hdf5", {"demo_0": (4, True), "demo_1": (3, False)})
    dataset = load_robomimic_hdf5(path, ["agentview_image"], ["robot0_eef_pos"], gamma=0.99,
                                  reward_bias=-1.0, show_progress=False)
    replay = FrameReplay.from_dataset(dataset)
    assert np.shares_memory(replay.images["agentview_image"], dataset.images["agentview_image"])
    assert np.shares_memory(replay.proprio, dataset.proprio)
    assert np.shares_memory(replay.obs_frame, dataset.obs_index)
    assert replay.capacity == dataset.num_frames == 4 + 1 + 3 + 1
    assert len(replay) == len(dataset) == 7 and replay.valid_start == 0

    batch = all_transitions(replay)
    images = dataset.images["agentview_image"]
    np.testing.assert_array_equal(batch["obs"]["agentview_image"].numpy(), images[dataset.obs_index])
    np.testing.assert_array_equal(batch["next_obs"]["agentview_image"].numpy(), images[dataset.next_obs_index])
    np.testing.assert_array_equal(batch["obs"]["agentview_image"][:, 0, 0, 0].numpy(), [0, 1, 2, 3, 10, 11, 12])
    for name in ("rewards", "terminals", "truncations", "reward_to_go", "actions"):
        np.testing.assert_array_equal(batch[name].numpy(), getattr(dataset, name), err_msg=name)
    np.testing.assert_allclose(batch["reward_to_go"][4:].numpy(), -100.0, rtol=1e-6)  # failed demo
    with pytest.raises(RuntimeError, match="dataset"):
        replay.add_episode(**make_episode(0, 1, success=True))


def test_mixed_batch_takes_the_offline_fraction_from_the_offline_buffer():
    offline, online = new_replay(64), new_replay(64)
    offline.add_episode(**make_episode(0, 20, success=True, tag=1.0))
    online.add_episode(**make_episode(0, 20, success=False, tag=2.0))
    rng = np.random.default_rng(1)

    def counts(batch: dict) -> tuple[int, int]:
        rewards = batch["rewards"].numpy()
        return int((rewards == 1.0).sum()), int((rewards == 2.0).sum())

    assert counts(mixed_batch(offline, online, 10, 0.5, rng, "cpu")) == (5, 5)
    assert counts(mixed_batch(offline, online, 10, 0.3, rng, "cpu")) == (3, 7)
    assert counts(mixed_batch(offline, online, 10, 1.0, rng, "cpu")) == (10, 0)
    assert counts(mixed_batch(offline, online, 10, 0.0, rng, "cpu")) == (0, 10)
    assert counts(mixed_batch(offline, None, 10, 0.5, rng, "cpu")) == (10, 0)
    assert counts(mixed_batch(offline, new_replay(8), 10, 0.5, rng, "cpu")) == (10, 0)

    batch = mixed_batch(offline, online, 8, 0.5, rng, "cpu")
    assert batch["obs"]["agentview_image"].shape == (8, *SHAPES["agentview_image"])
    assert batch["next_proprio"].shape == (8, PROPRIO_DIM)
    # Each row's frames belong to its own transition: obs frame counter = action's step.
    np.testing.assert_array_equal(batch["proprio"][:, 0].numpy(), batch["actions"][:, 0].numpy())
    np.testing.assert_array_equal(batch["next_proprio"][:, 0].numpy(), batch["proprio"][:, 0].numpy() + 1)
    np.testing.assert_array_equal(batch["terminals"][:4].numpy(), batch["actions"][:4, 0].numpy() == 19)
    np.testing.assert_array_equal(batch["truncations"][4:].numpy(), batch["actions"][4:, 0].numpy() == 19)

    with pytest.raises(ValueError, match="differ"):
        other = FrameReplay(16, {"agentview_image": (3, 4, 4)}, PROPRIO_DIM, ACTION_DIM)
        other.add_episode(**{**make_episode(0, 2, success=True),
                             "images": {"agentview_image": np.zeros((3, 3, 4, 4), np.uint8)}})
        mixed_batch(offline, other, 8, 0.5, rng, "cpu")
    with pytest.raises(ValueError, match="mixing_ratio"):
        mixed_batch(offline, online, 8, 1.5, rng, "cpu")


def _wrapped_replay() -> FrameReplay:
    replay = new_replay(16)
    first = 0
    for num_steps in (5, 3, 6, 4, 2, 5):
        replay.add_episode(**make_episode(first, num_steps, success=num_steps % 2 == 0, tag=num_steps))
        first += num_steps + 1
    assert replay.num_frames_added > replay.capacity and replay.valid_start > 0
    return replay


def _assert_same_batches(a: FrameReplay, b: FrameReplay) -> None:
    batch_a = a.sample(64, np.random.default_rng(7), "cpu")
    batch_b = b.sample(64, np.random.default_rng(7), "cpu")
    for name, value in batch_a.items():
        for key, tensor in (value.items() if isinstance(value, dict) else [(name, value)]):
            other = batch_b[name][key] if isinstance(value, dict) else batch_b[name]
            assert torch.equal(tensor, other), (name, key)


def test_state_dict_round_trip_stores_the_used_part_only():
    unwrapped = new_replay(16)
    unwrapped.add_episode(**make_episode(0, 4, success=True))
    state = unwrapped.state_dict()
    assert len(state["proprio"]) == 5 and len(state["actions"]) == 4  # not the 16 slots

    replay = _wrapped_replay()
    state = replay.state_dict()
    assert len(state["actions"]) == len(replay) and len(state["proprio"]) == replay.capacity
    restored = new_replay(16)
    restored.add_episode(**make_episode(0, 3, success=True))  # stale content gets replaced
    restored.load_state_dict(state)
    assert (restored.num_frames_added, restored.num_transitions_added, restored.valid_start) == (
        replay.num_frames_added, replay.num_transitions_added, replay.valid_start)
    _assert_same_batches(replay, restored)

    # Both keep behaving alike after the restore, wrap-around included.
    next_frame = replay.num_frames_added
    for buffer in (replay, restored):
        buffer.add_episode(**make_episode(next_frame, 6, success=True))
    _assert_same_batches(replay, restored)
    with pytest.raises(ValueError, match="capacity"):
        new_replay(32).load_state_dict(state)


def test_save_and_load_round_trip_atomically(tmp_path: Path):
    replay = _wrapped_replay()
    path = tmp_path / "online_replay.npz"
    replay.save(path)
    replay.save(path)  # overwriting goes through the same temporary-file-and-rename
    assert os.listdir(tmp_path) == ["online_replay.npz"]  # no temporary file left behind
    loaded = FrameReplay.load(path)
    assert loaded.image_shapes == replay.image_shapes and loaded.capacity == replay.capacity
    _assert_same_batches(replay, loaded)

    empty = new_replay(8)
    empty.save(tmp_path / "empty.npz")
    assert len(FrameReplay.load(tmp_path / "empty.npz")) == 0


def test_memory_accounting():
    replay = new_replay(10)
    frame_bytes = 3 * 4 * 4 + 3 * 2 * 2 + 4 * PROPRIO_DIM  # 68
    transition_bytes = 8 + 8 + 4 * ACTION_DIM + 4 * 4  # 44
    assert (replay.frame_bytes, replay.transition_bytes) == (frame_bytes, transition_bytes)
    assert replay.nbytes == 10 * (frame_bytes + transition_bytes)
    assert replay.bytes_per_transition() == frame_bytes + transition_bytes
    assert replay.bytes_per_transition(4.0) == pytest.approx(frame_bytes * 1.25 + transition_bytes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_reach_cuda_from_pinned_memory():
    offline, online = _wrapped_replay(), _wrapped_replay()
    indices = offline.sample_indices(32, np.random.default_rng(3))
    on_gpu, on_cpu = offline.gather(indices, "cuda"), offline.gather(indices, "cpu")
    assert on_gpu["obs"]["agentview_image"].is_cuda and on_gpu["rewards"].is_cuda
    assert torch.equal(on_gpu["obs"]["agentview_image"].cpu(), on_cpu["obs"]["agentview_image"])
    mixed = mixed_batch(offline, online, 32, 0.5, np.random.default_rng(3), torch.device("cuda"))
    assert mixed["next_obs"]["robot0_eye_in_hand_image"].device.type == "cuda"


def test_a_file_written_whole_gets_the_permissions_of_any_new_file(tmp_path: Path):
    from calql_vision.atomic_file import atomic_file

    (tmp_path / "plain.txt").write_text("x")
    with atomic_file(tmp_path / "whole.txt") as handle:
        handle.write(b"x")
    assert (tmp_path / "whole.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
