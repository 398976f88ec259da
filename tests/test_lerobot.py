"""LeRobotDataset v3: our export read back by our loader and by LeRobot's own class, a dataset
written by LeRobot's own writer (videos) imported here, and training on such a directory.

LeRobot pins an older torch than ours, so its class runs in an environment of its own, built
once by scripts/lerobot_env.sh (Python 3.12, ~5 GB) and cached; without Python 3.12 on the
machine only those two tests are skipped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT, TINY_TRAIN_ARGS
from datasets import DatasetError, load_robomimic_hdf5, load_transitions, read_mask_names
from datasets.lerobot_writer import export_lerobot

IMAGE_KEYS = ["agentview_image"]
PROPRIO_KEYS = ["robot0_eef_pos", "robot0_gripper_qpos"]


@pytest.fixture(scope="module")
def exported(lift_demos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lerobot") / "lift"
    export_lerobot(lift_demos, out, show_progress=False)
    return out


def episode_order(source: Path) -> list[str]:
    """Train demos, then valid ones, each in demo-number order: the export's episode order."""
    with h5py.File(source) as handle:
        names = sorted(handle["data"], key=lambda name: int(name.split("_")[1]))
        valid = {n.decode() for n in handle["mask/valid"][()]}
    return [name for name in names if name not in valid] + [name for name in names if name in valid]


def test_the_export_writes_the_v3_layout_with_splits_from_the_masks(lift_demos, exported):
    info = json.loads((exported / "meta/info.json").read_text())
    order = episode_order(lift_demos)
    with h5py.File(lift_demos) as handle:
        lengths = [handle[f"data/{name}/actions"].shape[0] for name in order]
        num_valid = len(handle["mask/valid"])
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20
    assert info["total_episodes"] == 4 and info["total_frames"] == sum(lengths)
    assert info["splits"] == {"train": f"0:{4 - num_valid}", "valid": f"{4 - num_valid}:4"}
    assert info["features"]["observation.images.agentview_image"] == {
        "dtype": "image", "shape": [48, 48, 3], "names": ["height", "width", "channels"]}
    assert read_mask_names(exported) == {"train": 4 - num_valid, "valid": num_valid}
    for part in ("meta/tasks.parquet", "meta/stats.json", "meta/episodes/chunk-000/file-000.parquet",
                 "data/chunk-000/file-000.parquet", "meta/env_args.json"):
        assert (exported / part).is_file(), part


def test_the_export_loads_back_as_the_hdf5_file_does(lift_demos, exported):
    """Same frames, actions, rewards and reward-to-go; LeRobot keeps no final next_obs, so a
    demo that did not end in success loses its last transition and nothing else."""
    for split in ("train", "valid"):
        source = load_robomimic_hdf5(lift_demos, IMAGE_KEYS, PROPRIO_KEYS, filter_key=split, show_progress=False)
        ours = load_transitions(exported, IMAGE_KEYS, PROPRIO_KEYS, filter_key=split, show_progress=False)
        assert ours.num_demos == source.num_demos
        for demo in range(source.num_demos):
            a = np.flatnonzero(source.demo_of_transition == demo)
            b = np.flatnonzero(ours.demo_of_transition == demo)
            ended = source.terminals[a[-1]] == 1
            kept = a if ended else a[:-1]
            assert len(b) == len(kept) and len(b) > 0
            for name in ("actions", "rewards", "terminals", "reward_to_go"):
                np.testing.assert_array_equal(getattr(ours, name)[b], getattr(source, name)[kept], err_msg=name)
            np.testing.assert_array_equal(ours.images["agentview_image"][ours.obs_index[b]],
                                          source.images["agentview_image"][source.obs_index[kept]])
            np.testing.assert_array_equal(ours.proprio[ours.obs_index[b]], source.proprio[source.obs_index[kept]])
            assert ours.truncations[b[-1]] == (0.0 if ended else 1.0)


def test_a_dataset_without_reward_or_success_is_a_one_line_error(exported, tmp_path):
    import shutil

    broken = tmp_path / "no_reward"
    shutil.copytree(exported, broken)
    info = json.loads((broken / "meta/info.json").read_text())
    del info["features"]["next.reward"]
    (broken / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"no_reward: no reward and no success signal.*'next.reward' or 'next.success'"):
        load_transitions(broken, IMAGE_KEYS, PROPRIO_KEYS, show_progress=False)
    info["codebase_version"] = "v2.1"
    (broken / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"codebase_version.*'v3.0'.*got 'v2.1'"):
        load_transitions(broken, IMAGE_KEYS, PROPRIO_KEYS, show_progress=False)


@pytest.mark.slow
def test_a_damaged_data_file_is_one_error_line_and_leaves_no_run(exported, tmp_path):
    import shutil

    broken = tmp_path / "damaged"
    shutil.copytree(exported, broken)
    (broken / "data/chunk-000/file-000.parquet").write_bytes(b"not parquet")
    result = subprocess.run([sys.executable, "-m", "calql_vision.train", *TINY_TRAIN_ARGS, f"dataset={broken}",
                             "offline_steps=2", f"runs_root={tmp_path / 'runs'}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "damaged/data/chunk-000/file-000.parquet: not a readable parquet file" in last
    assert "Traceback" not in result.stderr and not list((tmp_path / "runs").rglob("config.yaml"))


def test_a_key_the_task_needs_and_the_dataset_lacks_names_what_it_has(exported):
    with pytest.raises(DatasetError, match=r"no feature for the task's 'frontview_image'.*observation.images.agentview_image"):
        load_transitions(exported, ["frontview_image"], PROPRIO_KEYS, show_progress=False)


def test_the_export_refuses_an_existing_directory_and_leaves_it(lift_demos, exported):
    before = sorted(p.relative_to(exported) for p in exported.rglob("*"))
    result = subprocess.run([sys.executable, "-m", "calql_vision.export_lerobot", f"dataset={lift_demos}",
                             f"out={exported}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "exists" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.relative_to(exported) for p in exported.rglob("*")) == before
    assert not list(exported.parent.glob(".*.tmp")), "no staging directory is left behind"


@pytest.mark.slow
def test_training_reads_a_lerobot_directory_like_a_file(exported, tmp_path):
    result = subprocess.run([sys.executable, "-m", "calql_vision.train", *TINY_TRAIN_ARGS, f"dataset={exported}",
                             "offline_steps=4", "online_env_steps=0", f"runs_root={tmp_path}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "lift_visual" / "calql").iterdir()
    assert (run / "checkpoints" / "step_4.pt").is_file()
    assert sorted(p.name for p in (run / "calibration").glob("*.npz")), "the valid split fed the calibration snapshot"
    missing = subprocess.run([sys.executable, "-m", "calql_vision.train", "task=lift_visual",
                              f"dataset={tmp_path / 'nothing_here'}", f"runs_root={tmp_path / 'runs'}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "nothing_here: no such file" in missing.stderr
    assert not (tmp_path / "runs").exists()


def test_help_names_both_formats_and_the_docs_page():
    train = subprocess.run([sys.executable, "-m", "calql_vision.train", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    export = subprocess.run([sys.executable, "-m", "calql_vision.export_lerobot", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert train.returncode == 0 and "LeRobotDataset v3 directory" in train.stdout
    assert export.returncode == 0 and "docs/data.md" in export.stdout and "overwrite" in export.stdout


# ---------------------------------------------------------------- LeRobot's own class
def lerobot_python() -> str:
    """The Python of LeRobot's environment, built on first use; skip where it cannot be."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "lerobot_env.sh")], capture_output=True, text=True,
                            timeout=1800)
    if result.returncode == 3:
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def run_in_lerobot(*args: str) -> None:
    result = subprocess.run([lerobot_python(), str(ROOT / "tests" / "lerobot_check.py"), *args],
                            capture_output=True, text=True, timeout=900, cwd="/")
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_lerobots_own_class_reads_the_export_frame_for_frame(lift_demos, exported, tmp_path):
    run_in_lerobot("read", str(exported), str(tmp_path / "read.npz"))
    read = np.load(tmp_path / "read.npz")
    order = episode_order(lift_demos)
    with h5py.File(lift_demos) as handle:
        demos = [handle[f"data/{name}"] for name in order]
        expected = {
            "observation.images.agentview_image": np.concatenate([d["obs/agentview_image"][()] for d in demos]),
            "observation.robot0_eef_pos": np.concatenate([d["obs/robot0_eef_pos"][()] for d in demos]),
            "action": np.concatenate([d["actions"][()] for d in demos]),
            "next.reward": np.concatenate([d["rewards"][()] for d in demos]),
            "next.done": np.concatenate([d["dones"][()] for d in demos]).astype(bool),
            "episode_index": np.concatenate([np.full(len(d["actions"]), i) for i, d in enumerate(demos)]),
        }
    assert int(read["num_episodes"]) == 4 and int(read["num_frames"]) == len(expected["action"])
    assert list(read["tasks"]) == ["Lift"]
    for key, values in expected.items():
        if values.dtype == np.float64:  # stored as float64; LeRobot's tensors are float32
            values = values.astype(np.float32)
        np.testing.assert_array_equal(read[key].reshape(values.shape), values, err_msg=key)


@pytest.mark.slow
def test_a_video_dataset_written_by_lerobot_trains_here(lift_demos, tmp_path):
    """LeRobot's writer encodes the frames as AV1 video and records only success: the import
    decodes the video, takes success as the reward and the terminal, and computes reward-to-go."""
    source = load_robomimic_hdf5(lift_demos, IMAGE_KEYS, PROPRIO_KEYS, show_progress=False)
    with h5py.File(lift_demos) as handle:
        names = sorted(handle["data"], key=lambda name: int(name.split("_")[1]))
        demos = [handle[f"data/{name}"] for name in names]
        # LeRobot's AV1 encoder needs frames of at least 64 px: the 48 px frames are padded.
        frames = np.pad(np.concatenate([d["obs/agentview_image"][()] for d in demos]), ((0, 0), (8, 8), (8, 8), (0, 0)))
        state = np.concatenate([np.concatenate([d[f"obs/{k}"][()] for k in PROPRIO_KEYS], axis=1) for d in demos])
        action = np.concatenate([d["actions"][()] for d in demos])
        success = np.concatenate([d["dones"][()] for d in demos])
        episode = np.concatenate([np.full(len(d["actions"]), i) for i, d in enumerate(demos)])
    np.savez(tmp_path / "episodes.npz", frames=frames, state=state, action=action, success=success, episode=episode)
    run_in_lerobot("write", str(tmp_path / "episodes.npz"), str(tmp_path / "video"))
    run_in_lerobot("read", str(tmp_path / "video"), str(tmp_path / "read.npz"))
    decoded_by_lerobot = np.load(tmp_path / "read.npz")["observation.images.agentview"]

    ours = load_transitions(tmp_path / "video", ["agentview_image"], ["state"], show_progress=False)
    frame_of_row = np.concatenate([np.arange(n) + offset for offset, n in _episode_frames(ours)])
    assert len(frame_of_row) == len(frames)
    imported = ours.images["agentview_image"][frame_of_row].transpose(0, 2, 3, 1)
    # Both decoders read the same lossy stream: equal up to rounding; the source itself differs by the codec's loss.
    assert np.abs(imported.astype(int) - decoded_by_lerobot.astype(int)).max() <= 2
    assert np.abs(imported.astype(float) - frames).mean() < 12
    assert ours.num_demos == source.num_demos and ours.terminals.sum() == source.terminals.sum()
    np.testing.assert_array_equal(ours.proprio[frame_of_row], state.astype(np.float32))
    np.testing.assert_array_equal(ours.demo_success, source.demo_success)
    np.testing.assert_allclose(ours.reward_to_go[ours.terminals == 1], 1.0)


def _episode_frames(dataset) -> list[tuple[int, int]]:
    """(first frame, number of recorded frames) per demo of a loaded LeRobot dataset."""
    out = []
    for demo in range(dataset.num_demos):
        rows = np.flatnonzero(dataset.demo_of_transition == demo)
        first = int(dataset.obs_index[rows[0]])
        recorded = len(rows) if dataset.terminals[rows[-1]] == 1 else len(rows) + 1
        out.append((first, recorded))
    return out
