"""Run by tests/test_lerobot.py inside LeRobot's own environment (scripts/lerobot_env.sh), never
by calql_vision's: it imports lerobot, and none of this project.

    python lerobot_check.py read <dataset dir> <out.npz>
        Open the directory with LeRobot's LeRobotDataset and save every frame it yields.
    python lerobot_check.py write <in.npz> <dataset dir>
        Record the episodes in <in.npz> with LeRobot's own writer, frames as videos.
"""
from __future__ import annotations

import sys

import numpy as np


def read(root: str, out: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("local/calql_vision_export", root=root, video_backend="pyav")
    columns: dict[str, list] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        for key, value in item.items():
            if key == "task":
                continue
            array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            if dataset.features[key]["dtype"] in ("image", "video"):
                array = np.round(array * 255).astype(np.uint8).transpose(1, 2, 0)  # CHW [0, 1] -> HWC uint8
            columns.setdefault(key, []).append(array)
    splits = dataset.meta.info["splits"] if isinstance(dataset.meta.info, dict) else dataset.meta.info.splits
    np.savez(out, num_episodes=dataset.num_episodes, num_frames=dataset.num_frames, fps=dataset.fps,
             splits=str(sorted(splits.items())), tasks=np.array(sorted(dataset.meta.tasks.index)),
             **{key: np.stack(values) for key, values in columns.items()})


def write(source: str, root: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    data = np.load(source)
    frames, episode = data["frames"], data["episode"]
    features = {
        "observation.images.agentview": {"dtype": "video", "shape": list(frames.shape[1:]),
                                         "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [data["state"].shape[1]], "names": None},
        "action": {"dtype": "float32", "shape": [data["action"].shape[1]], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    }
    dataset = LeRobotDataset.create("local/calql_vision_video", fps=20, features=features, root=root, use_videos=True)
    for number in np.unique(episode):
        for t in np.flatnonzero(episode == number):
            dataset.add_frame({"observation.images.agentview": frames[t],
                               "observation.state": data["state"][t].astype(np.float32),
                               "action": data["action"][t].astype(np.float32),
                               "next.success": np.array([bool(data["success"][t])]), "task": "lift the cube"})
        dataset.save_episode()
    dataset.finalize()


if __name__ == "__main__":
    {"read": read, "write": write}[sys.argv[1]](*sys.argv[2:])
