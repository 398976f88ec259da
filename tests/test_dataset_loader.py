"""The robomimic HDF5 loader on tiny files written here: frame indexing, demo order, masks,
derived next_obs, rewards, and one DatasetError per way a file can be broken."""
from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets import DatasetError, DatasetFileNotFoundError, TransitionDataset, load_robomimic_hdf5, read_mask_names
from datasets.transitions import describe

IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")
PROPRIO_KEYS = ("robot0_eef_pos", "robot0_gripper_qpos")
ACTION_DIM = 4


def frames(demo_id: int, count: int, hw: tuple[int, int] = (8, 8), camera: int = 0) -> np.ndarray:
    """(count, H, W, 3) uint8; every frame, channel and camera differs, so a wrong index or a
    missing HWC -> CHW transpose shows up as a mismatch."""
    h, w = hw
    t = np.arange(count)[:, None, None, None]
    rows = np.arange(h)[None, :, None, None]
    cols = np.arange(w)[None, None, :, None]
    channel = np.arange(3)[None, None, None, :]
    return ((demo_id * 40 + t + 100 * camera) + 7 * channel + rows + 2 * cols).astype(np.uint8)


def proprio_track(demo_id: int, count: int) -> dict[str, np.ndarray]:
    """Per-frame low-dim values that encode (demo, frame)."""
    t = np.arange(count, dtype=np.float64)
    return {
        "robot0_eef_pos": np.stack([np.full(count, demo_id), t, t / 10.0], axis=1),
        "robot0_gripper_qpos": np.stack([t + 0.5, -t], axis=1),
    }


def write_demo(data: h5py.Group, name: str, n: int, *, success: bool, next_obs: bool = True,
               hw: tuple[int, int] = (8, 8), action_dim: int = ACTION_DIM) -> None:
    """A demo of n steps whose n + 1 observations are frame 0..n; next_obs = obs shifted."""
    demo_id = int(name.split("_")[1])
    group = data.create_group(name)
    group.attrs["num_samples"] = n
    group["actions"] = np.linspace(-1.0, 1.0, n * action_dim).reshape(n, action_dim) * (1 - 0.01 * demo_id)
    group["rewards"] = np.zeros(n)
    group["dones"] = np.zeros(n, dtype=np.int64)
    if success:
        group["rewards"][-1] = 1.0
        group["dones"][-1] = 1
    track = {key: frames(demo_id, n + 1, hw, camera) for camera, key in enumerate(IMAGE_KEYS)}
    track.update(proprio_track(demo_id, n + 1))
    for key, values in track.items():
        group[f"obs/{key}"] = values[:n]
        if next_obs:
            group[f"next_obs/{key}"] = values[1:]


def write_file(path: Path, demos: dict[str, tuple[int, bool]], *, next_obs: bool = True,
               masks: dict[str, list[str]] | None = None) -> Path:
    """demos: name -> (steps, success), written in the given (possibly unsorted) order."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for name, (n, success) in demos.items():
            write_demo(data, name, n, success=success, next_obs=next_obs)
        data.attrs["total"] = sum(n for n, _ in demos.values())
        for key, names in (masks or {}).items():
            f[f"mask/{key}"] = np.array(names, dtype="S")
    return path


def load(path: Path, **kwargs) -> TransitionDataset:
    kwargs.setdefault("show_progress", False)
    return load_robomimic_hdf5(path, IMAGE_KEYS, PROPRIO_KEYS, **kwargs)


@pytest.fixture
def two_demos(tmp_path: Path) -> Path:
    return write_file(tmp_path / "two.hdf5", {"demo_0": (5, True), "demo_1": (4, False)})


def test_frames_are_held_once_and_indexed_exactly(two_demos: Path):
    dataset = load(two_demos)
    assert len(dataset) == 5 + 4
    assert dataset.num_frames == (5 + 1) + (4 + 1)
    assert dataset.images["agentview_image"].shape == (11, 3, 8, 8)
    np.testing.assert_array_equal(dataset.next_obs_index, dataset.obs_index + 1)
    with h5py.File(two_demos, "r") as f:
        for t in range(len(dataset)):
            demo = f["data"][dataset.demo_names[dataset.demo_of_transition[t]]]
            step = t if t < 5 else t - 5
            for key in IMAGE_KEYS:
                images = dataset.images[key]
                np.testing.assert_array_equal(images[dataset.obs_index[t]], demo[f"obs/{key}"][step].transpose(2, 0, 1))
                np.testing.assert_array_equal(images[dataset.next_obs_index[t]],
                                              demo[f"next_obs/{key}"][step].transpose(2, 0, 1))
            expected = np.concatenate([demo[f"next_obs/{key}"][step] for key in PROPRIO_KEYS])
            np.testing.assert_allclose(dataset.proprio[dataset.next_obs_index[t]], expected)
            np.testing.assert_allclose(dataset.actions[t], demo["actions"][step], rtol=1e-6)
    assert dataset.proprio.shape == (11, 3 + 2) and dataset.proprio.dtype == np.float32
    assert dataset.obs_index.dtype == np.int64 and dataset.demo_of_transition.dtype == np.int32


def test_rewards_flags_and_reward_to_go_by_hand(two_demos: Path):
    dataset = load(two_demos, gamma=0.5, reward_scale=1.0, reward_bias=-1.0)
    # demo_0 succeeds at its last step: r' = [-1, -1, -1, -1, 0];
    # G = [-1.875, -1.75, -1.5, -1, 0]. demo_1 never succeeds: -1 / (1 - 0.5) = -2 each.
    np.testing.assert_allclose(dataset.rewards, [-1, -1, -1, -1, 0, -1, -1, -1, -1])
    np.testing.assert_allclose(dataset.reward_to_go, [-1.875, -1.75, -1.5, -1.0, 0.0, -2, -2, -2, -2])
    np.testing.assert_array_equal(dataset.terminals, [0, 0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(dataset.truncations, [0, 0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(dataset.demo_success, [True, False])
    for name in ("rewards", "terminals", "truncations", "reward_to_go", "actions"):
        assert getattr(dataset, name).dtype == np.float32, name


def test_scaled_rewards(two_demos: Path):
    dataset = load(two_demos, gamma=0.5, reward_scale=10.0, reward_bias=5.0)
    # demo_0: r' = [5, 5, 5, 5, 15] -> G4 = 15, G3 = 12.5, G2 = 11.25, G1 = 10.625, G0 = 10.3125.
    # demo_1: r_neg = 5 -> 5 / 0.5 = 10.
    np.testing.assert_allclose(dataset.rewards, [5, 5, 5, 5, 15, 5, 5, 5, 5])
    np.testing.assert_allclose(dataset.reward_to_go, [10.3125, 10.625, 11.25, 12.5, 15, 10, 10, 10, 10])


def test_demos_sorted_numerically(tmp_path: Path):
    path = write_file(tmp_path / "order.hdf5", {"demo_10": (2, True), "demo_2": (3, False), "demo_1": (2, True)})
    dataset = load(path)
    assert dataset.demo_names == ["demo_1", "demo_2", "demo_10"]
    np.testing.assert_array_equal(dataset.demo_of_transition, [0, 0, 1, 1, 1, 2, 2])
    # The frames follow the same order: the first frame of each block is that demo's frame 0.
    first_frames = dataset.obs_index[[0, 2, 5]]
    for frame, demo_id in zip(first_frames, (1, 2, 10)):
        np.testing.assert_array_equal(dataset.images["agentview_image"][frame], frames(demo_id, 1)[0].transpose(2, 0, 1))


def test_filter_key_and_max_demos(tmp_path: Path):
    path = write_file(tmp_path / "masked.hdf5", {f"demo_{i}": (3, i % 2 == 0) for i in range(4)},
                      masks={"train": ["demo_3", "demo_0", "demo_2"], "valid": ["demo_1"]})
    assert load(path, filter_key="train").demo_names == ["demo_0", "demo_2", "demo_3"]
    assert load(path, filter_key="valid").demo_names == ["demo_1"]
    assert load(path, filter_key="train", max_demos=2).demo_names == ["demo_0", "demo_2"]
    assert load(path, max_demos=1).num_frames == 4


def test_missing_filter_key_lists_the_available_ones(tmp_path: Path):
    path = write_file(tmp_path / "masked.hdf5", {"demo_0": (3, True)}, masks={"train": ["demo_0"], "valid": []})
    with pytest.raises(DatasetError, match=re.escape(str(path)) + r".*mask/test.*\['train', 'valid'\]"):
        load(path, filter_key="test")


def test_mask_naming_an_absent_demo(tmp_path: Path):
    path = write_file(tmp_path / "masked.hdf5", {"demo_0": (3, True)}, masks={"train": ["demo_0", "demo_7"]})
    with pytest.raises(DatasetError, match=re.escape(f"{path}, demo 'demo_7', key 'mask/train'")):
        load(path, filter_key="train")


def test_derived_next_obs_without_next_obs_in_the_file(tmp_path: Path):
    path = write_file(tmp_path / "mimicgen.hdf5", {"demo_0": (5, True), "demo_1": (4, False)}, next_obs=False)
    dataset = load(path, gamma=0.5, reward_bias=-1.0)
    # demo_0 ended in success: all 5 transitions kept, the 6th frame repeats obs[4].
    # demo_1 did not: its last transition has no s_N and is dropped (3 transitions, 4 frames).
    assert len(dataset) == 5 + 3
    assert dataset.num_frames == 6 + 4
    np.testing.assert_array_equal(dataset.next_obs_index, dataset.obs_index + 1)
    images = dataset.images["agentview_image"]
    chw = lambda demo_id, t: frames(demo_id, t + 1)[t].transpose(2, 0, 1)  # noqa: E731
    for t in range(5):
        np.testing.assert_array_equal(images[dataset.obs_index[t]], chw(0, t))
    for t in range(4):
        np.testing.assert_array_equal(images[dataset.next_obs_index[t]], chw(0, t + 1))
    np.testing.assert_array_equal(images[dataset.next_obs_index[4]], chw(0, 4))  # the repeat
    np.testing.assert_array_equal(dataset.proprio[dataset.next_obs_index[4]], dataset.proprio[dataset.obs_index[4]])
    for t in range(3):
        np.testing.assert_array_equal(images[dataset.obs_index[5 + t]], chw(1, t))
        np.testing.assert_array_equal(images[dataset.next_obs_index[5 + t]], chw(1, t + 1))
    np.testing.assert_array_equal(dataset.terminals, [0, 0, 0, 0, 1, 0, 0, 0])
    # The new last transition of demo_1 is a cut, so the target bootstraps from obs[3] there.
    np.testing.assert_array_equal(dataset.truncations, [0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(dataset.reward_to_go, [-1.875, -1.75, -1.5, -1.0, 0.0, -2, -2, -2])


def test_single_step_failure_without_next_obs_is_skipped(tmp_path: Path):
    path = write_file(tmp_path / "short.hdf5", {"demo_0": (1, False), "demo_1": (3, True)}, next_obs=False)
    with pytest.warns(UserWarning, match="demo_0"):
        dataset = load(path)
    assert dataset.demo_names == ["demo_1"] and len(dataset) == 3 and dataset.num_frames == 4


def test_memory_holds_each_frame_once(two_demos: Path):
    dataset = load(two_demos)
    num_frames, num_transitions = 11, 9
    image_bytes = 0
    for key in IMAGE_KEYS:
        images = dataset.images[key]
        assert images.nbytes == num_frames * 3 * 8 * 8
        # Owns its memory: not a transposed view that keeps a HWC copy (or a bigger buffer) alive.
        assert images.base is None and images.flags.c_contiguous
        image_bytes += images.nbytes
    low_dim_bytes = (num_frames * 5 * 4  # proprio float32
                     + num_transitions * (8 + 8 + ACTION_DIM * 4 + 4 * 4 + 4))  # indices, actions, 4 floats, demo id
    arrays = [getattr(dataset, f.name) for f in fields(dataset) if isinstance(getattr(dataset, f.name), np.ndarray)]
    assert sum(a.nbytes for a in arrays) == low_dim_bytes
    assert dataset.nbytes == image_bytes + low_dim_bytes
    assert not any(a.dtype == np.uint8 for a in arrays)
    for key in IMAGE_KEYS:
        assert not any(np.shares_memory(dataset.images[key], a) for a in arrays)
    assert not np.shares_memory(*dataset.images.values())


def test_peak_memory_while_loading_is_one_copy_of_the_frames(tmp_path: Path):
    # Six demos of 80 steps: a loader that concatenated per-demo arrays or kept a HWC copy
    # would peak near twice the frame bytes; reading into the buffer in chunks stays close to 1x.
    path = tmp_path / "big.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i in range(6):
            write_demo(data, f"demo_{i}", 80, success=i % 2 == 0, hw=(32, 32))
    tracemalloc.start()
    try:
        dataset = load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    image_bytes = sum(images.nbytes for images in dataset.images.values())
    assert image_bytes == 2 * 6 * 81 * 3 * 32 * 32
    assert peak < 1.4 * image_bytes, (peak, image_bytes)


def test_file_is_closed_after_loading(two_demos: Path):
    dataset = load(two_demos)
    # HDF5 refuses to reopen a file for writing in a process that still holds it read-only.
    with h5py.File(two_demos, "a") as f:
        f.attrs["touched"] = 1
    assert not any(isinstance(getattr(dataset, f.name), (h5py.File, h5py.Group, h5py.Dataset)) for f in fields(dataset))


def test_describe(two_demos: Path):
    text = describe(load(two_demos))
    for part in (str(two_demos), "2 demos", "9 transitions", "11 frames", "agentview_image (3, 8, 8)", "50%", "MiB"):
        assert part in text, (part, text)


def test_actions_within_tolerance_are_accepted(two_demos: Path):
    with h5py.File(two_demos, "a") as f:
        f["data/demo_1/actions"][0, 0] = 1.0 + 1e-7
    load(two_demos)


# ---------------------------------------------------------------- broken files

def _replace(group: h5py.Group, key: str, value: np.ndarray) -> None:
    del group[key]
    group[key] = value


def _set_value(key: str, index: tuple, value: float) -> Callable[[h5py.Group], None]:
    def mutate(demo: h5py.Group) -> None:
        array = demo[key][()]
        array[index] = value
        _replace(demo, key, array)
    return mutate


def _truncate(key: str, length: int) -> Callable[[h5py.Group], None]:
    return lambda demo: _replace(demo, key, demo[key][:length])


def _delete(key: str) -> Callable[[h5py.Group], None]:
    def mutate(demo: h5py.Group) -> None:
        del demo[key]
    return mutate


BROKEN_DEMOS = {
    # name: (key named in the message, what to do to demo_1 (4 steps), text in the message)
    "missing actions": ("actions", _delete("actions"), "missing"),
    "missing rewards": ("rewards", _delete("rewards"), "missing"),
    "missing dones": ("dones", _delete("dones"), "missing"),
    "missing image": ("obs/agentview_image", _delete("obs/agentview_image"), "missing"),
    "missing proprio": ("obs/robot0_eef_pos", _delete("obs/robot0_eef_pos"), "missing"),
    "missing obs group": ("obs/agentview_image", _delete("obs"), "missing"),
    "missing next image": ("next_obs/robot0_eye_in_hand_image", _delete("next_obs/robot0_eye_in_hand_image"), "missing"),
    "short rewards": ("rewards", _truncate("rewards", 3), r"expected shape \(N,\) with N = 4"),
    "short dones": ("dones", _truncate("dones", 2), r"expected shape \(N,\) with N = 4"),
    "short image": ("obs/agentview_image", _truncate("obs/agentview_image", 3), r"\(N, H, W, 3\) with N = 4"),
    "short next image": ("next_obs/agentview_image", _truncate("next_obs/agentview_image", 3), r"N = 4"),
    "short proprio": ("obs/robot0_gripper_qpos", _truncate("obs/robot0_gripper_qpos", 3), "length N = 4"),
    "short next proprio": ("next_obs/robot0_eef_pos", _truncate("next_obs/robot0_eef_pos", 2), "length N = 4"),
    "next proprio width": ("next_obs/robot0_eef_pos",
                           lambda d: _replace(d, "next_obs/robot0_eef_pos", d["next_obs/robot0_eef_pos"][:, :2]),
                           r"shape \(4, 2\) differs from obs/robot0_eef_pos \(4, 3\)"),
    "scalar proprio": ("obs/robot0_eef_pos", lambda d: _replace(d, "obs/robot0_eef_pos", np.float64(1.0)), "length N = 4"),
    "proprio width across demos": ("obs/robot0_gripper_qpos",
                                   lambda d: [_replace(d, f"{s}/robot0_gripper_qpos", d[f"{s}/robot0_gripper_qpos"][:, :1])
                                              for s in ("obs", "next_obs")], "1 values per step differ from demo_0's 2"),
    "float image": ("obs/agentview_image",
                    lambda d: _replace(d, "obs/agentview_image", d["obs/agentview_image"][()].astype(np.float32)),
                    r"expected uint8 images of shape \(N, H, W, 3\).*float32"),
    "CHW image": ("obs/agentview_image",
                  lambda d: _replace(d, "obs/agentview_image", d["obs/agentview_image"][()].transpose(0, 3, 1, 2)),
                  r"\(N, H, W, 3\).*\(4, 3, 8, 8\)"),
    "gray image": ("obs/agentview_image",
                   lambda d: _replace(d, "obs/agentview_image", d["obs/agentview_image"][..., :1]), r"\(4, 8, 8, 1\)"),
    "nan action": ("actions", _set_value("actions", (2, 1), np.nan), "finite"),
    "inf reward": ("rewards", _set_value("rewards", (1,), np.inf), "finite"),
    "nan proprio": ("obs/robot0_eef_pos", _set_value("obs/robot0_eef_pos", (0, 2), np.nan), "finite"),
    "nan next proprio": ("next_obs/robot0_gripper_qpos", _set_value("next_obs/robot0_gripper_qpos", (3, 0), np.nan),
                         "finite"),
    "action out of range": ("actions", _set_value("actions", (3, 0), 1.5), r"\[-1, 1\].*step 3"),
    "action dimension": ("actions", lambda d: _replace(d, "actions", d["actions"][:, :3]), "action dimension 3 differs"),
    "dones not binary": ("dones", _set_value("dones", (0,), 2), "0/1"),
    "image size": ("obs/agentview_image", None, r"\(H, W\) = \(12, 12\) differs"),
    "next_obs not shifted": ("next_obs/robot0_eef_pos", _set_value("next_obs/robot0_eef_pos", (0, 1), 99.0),
                             r"next_obs\[t\] differs from obs\[t \+ 1\]"),
    "next image not shifted": ("next_obs/agentview_image", _set_value("next_obs/agentview_image", (0, 0, 0, 0), 255),
                               r"next_obs\[0\] differs from obs\[1\]"),
}


@pytest.mark.parametrize("case", list(BROKEN_DEMOS))
def test_broken_demo_names_file_demo_and_key(tmp_path: Path, case: str):
    key, mutate, problem = BROKEN_DEMOS[case]
    path = write_file(tmp_path / "broken.hdf5", {"demo_0": (5, True), "demo_1": (4, False)})
    with h5py.File(path, "a") as f:
        if mutate is None:  # "image size": rewrite demo_1 whole with 12x12 images
            del f["data/demo_1"]
            write_demo(f["data"], "demo_1", 4, success=False, hw=(12, 12))
        else:
            mutate(f["data/demo_1"])
    with pytest.raises(DatasetError, match=re.escape(f"{path}, demo 'demo_1', key '{key}'") + ".*" + problem):
        load(path)


def test_missing_file_names_the_path(tmp_path: Path):
    path = tmp_path / "nowhere.hdf5"
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        load(path)
    with pytest.raises(FileNotFoundError):
        load(path)


def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.hdf5"
    path.write_bytes(b"")
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.hdf5"
    path.write_text("not an HDF5 file")
    return path


def _truncated_file(tmp_path: Path) -> Path:
    """A valid file (with masks) cut at half, as an interrupted copy or download leaves it."""
    whole = write_file(tmp_path / "whole.hdf5", {"demo_0": (5, True), "demo_1": (4, False)},
                       masks={"train": ["demo_0"], "valid": ["demo_1"]})
    data = whole.read_bytes()
    path = tmp_path / "truncated.hdf5"
    path.write_bytes(data[: len(data) // 2])
    return path


UNREADABLE_FILES = {"empty": _empty_file, "text": _text_file, "truncated": _truncated_file}
READERS = {"loader": load, "read_mask_names": read_mask_names}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("kind", list(UNREADABLE_FILES))
def test_unreadable_file_names_the_path(tmp_path: Path, kind: str, reader: str):
    path = UNREADABLE_FILES[kind](tmp_path)
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ": not a readable HDF5 file"):
        READERS[reader](path)


def test_read_mask_names(tmp_path: Path):
    path = write_file(tmp_path / "masked.hdf5", {f"demo_{i}": (3, True) for i in range(4)},
                      masks={"train": ["demo_0", "demo_2", "demo_3"], "valid": ["demo_1"], "test": []})
    assert read_mask_names(path) == {"train": 3, "valid": 1, "test": 0}
    assert read_mask_names(str(path)) == {"train": 3, "valid": 1, "test": 0}
    assert read_mask_names(write_file(tmp_path / "plain.hdf5", {"demo_0": (3, True)})) is None


def test_read_mask_names_missing_file(tmp_path: Path):
    path = tmp_path / "nowhere.hdf5"
    with pytest.raises(DatasetFileNotFoundError, match=re.escape(str(path))):
        read_mask_names(path)


def test_read_mask_names_rejects_a_mask_that_is_not_a_list(tmp_path: Path):
    path = write_file(tmp_path / "odd.hdf5", {"demo_0": (3, True)})
    with h5py.File(path, "a") as f:
        f.create_group("mask/train")
    with pytest.raises(DatasetError, match=re.escape(f"{path}, key 'mask/train'") + ".*1-D"):
        read_mask_names(path)


# ---------------------------------------------------------------- damaged storage

def _compress(group: h5py.Group, key: str) -> None:
    """Rewrite group[key] gzip-compressed, one chunk per step, so single frames can be damaged."""
    values = group[key][()]
    del group[key]
    group.create_dataset(key, data=values, chunks=(1, *values.shape[1:]), compression="gzip")


def _corrupt_chunk(path: Path, key: str, chunk: int) -> None:
    """Invert the middle half of one stored chunk of `key`, leaving the file's metadata intact."""
    with h5py.File(path, "r") as f:
        info = f[key].id.get_chunk_info(chunk)
    start, length = info.byte_offset + info.size // 4, max(1, info.size // 2)
    with open(path, "r+b") as stream:
        stream.seek(start)
        damaged = bytes(b ^ 0xFF for b in stream.read(length))
        stream.seek(start)
        stream.write(damaged)


CORRUPT_CHUNKS = {
    # name: (key in demo_0 (5 steps), chunk (= step) damaged); the comment says which read meets it
    "image frame": ("obs/agentview_image", 3),  # copying frames into the buffer
    "image checked against next_obs": ("obs/agentview_image", 1),  # the next_obs[0] == obs[1] check
    "final next frame": ("next_obs/robot0_eye_in_hand_image", 4),  # the demo's last frame s_N
    "actions": ("actions", 2),
    "rewards": ("rewards", 0),
    "dones": ("dones", 4),
    "proprio": ("obs/robot0_eef_pos", 1),
    "next proprio": ("next_obs/robot0_gripper_qpos", 3),
}


@pytest.mark.parametrize("case", list(CORRUPT_CHUNKS))
def test_corrupt_chunk_names_file_demo_and_key(tmp_path: Path, case: str):
    key, chunk = CORRUPT_CHUNKS[case]
    path = write_file(tmp_path / "damaged.hdf5", {"demo_0": (5, True), "demo_1": (4, False)})
    with h5py.File(path, "a") as f:
        _compress(f["data/demo_0"], key)
    load(path)  # compressed and intact: loads
    _corrupt_chunk(path, f"data/demo_0/{key}", chunk)
    with pytest.raises(DatasetError, match=re.escape(f"{path}, demo 'demo_0', key '{key}'") + ": cannot read"):
        load(path)


def test_corrupt_mask_names_file_and_key(tmp_path: Path):
    path = write_file(tmp_path / "damaged.hdf5", {"demo_0": (3, True), "demo_1": (3, True)},
                      masks={"train": ["demo_0", "demo_1"]})
    with h5py.File(path, "a") as f:
        _compress(f, "mask/train")
    _corrupt_chunk(path, "mask/train", 1)
    assert read_mask_names(path) == {"train": 2}  # sizes come from metadata, not the damaged data
    with pytest.raises(DatasetError, match=re.escape(f"{path}, key 'mask/train'") + ": cannot read"):
        load(path, filter_key="train")


def test_missing_data_group(tmp_path: Path):
    path = tmp_path / "nodata.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("mask")
    with pytest.raises(DatasetError, match=re.escape(f"{path}, key 'data'") + ".*missing group"):
        load(path)


def test_no_demos(tmp_path: Path):
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("data")
    with pytest.raises(DatasetError, match=re.escape(f"{path}, key 'data'") + ".*no demos"):
        load(path)


def test_entry_not_named_like_a_demo(tmp_path: Path):
    path = write_file(tmp_path / "odd.hdf5", {"demo_0": (3, True)})
    with h5py.File(path, "a") as f:
        f.create_group("data/episode_a")
    with pytest.raises(DatasetError, match=re.escape(f"{path}, demo 'episode_a', key 'data/episode_a'")):
        load(path)
