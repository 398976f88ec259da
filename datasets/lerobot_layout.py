"""The LeRobotDataset v3.0 directory layout, as far as offline RL reads and writes it.

    meta/info.json                       codebase_version "v3.0", fps, features, splits, path templates
    meta/tasks.parquet                   task strings (the pandas index) and their task_index
    meta/episodes/chunk-000/file-000.parquet
                                         one row per episode: length, dataset_from_index/to_index,
                                         the data (and video) file holding it
    meta/stats.json                      per-feature min/max/mean/std/count and quantiles
    meta/env_args.json                   (ours, optional) robomimic's env_args, for render settings
    data/chunk-XXX/file-YYY.parquet      one row per frame
    videos/<key>/chunk-XXX/file-YYY.mp4  frames of `video` features, episodes back to back

Feature names follow LeRobot's conventions: `observation.images.<camera>` for frames,
`observation.<name>` for other observations, `action`, and `next.reward` / `next.done` /
`next.success` for what followed the action.
"""
from __future__ import annotations

import json
from pathlib import Path

from datasets.transitions import DatasetError

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATS_PATH = "meta/stats.json"
ENV_ARGS_PATH = "meta/env_args.json"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000  # files per chunk folder, LeRobot's default
DATA_FILE_SIZE_MB = 100  # a data file is closed once it holds about this much, LeRobot's default

# Columns every frame row carries besides the features proper.
INDEX_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
SUCCESS = "next.success"


def is_lerobot_dataset(path: str | Path) -> bool:
    """A directory holding meta/info.json: a LeRobotDataset (any version; read_info checks it)."""
    return (Path(path) / INFO_PATH).is_file()


def image_feature_name(key: str) -> str:
    """The feature an image key (e.g. agentview_image) is written as."""
    return f"observation.images.{key}"


def observation_feature_name(key: str) -> str:
    """The feature a low-dimensional observation key (e.g. robot0_eef_pos) is written as."""
    return f"observation.{key}"


def image_feature_candidates(key: str) -> list[str]:
    """Where a task's image key may live in a LeRobot dataset: ours first, then the camera's
    name alone (LeRobot's `observation.images.<camera>`), then the key as given."""
    camera = key[: -len("_image")] if key.endswith("_image") else key
    return list(dict.fromkeys([image_feature_name(key), image_feature_name(camera), observation_feature_name(key), key]))


def observation_feature_candidates(key: str) -> list[str]:
    return list(dict.fromkeys([observation_feature_name(key), key]))


def read_info(root: Path) -> dict:
    """meta/info.json, checked for what the reader relies on; DatasetError naming the file and key."""
    path = root / INFO_PATH
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{root}: no {INFO_PATH} (not a LeRobotDataset directory)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise DatasetError(f"{path}, key 'codebase_version': expected {CODEBASE_VERSION!r} (LeRobotDataset v3), "
                           f"got {version!r}; convert older datasets with LeRobot's convert_dataset_v21_to_v30")
    for key, kind in (("fps", (int, float)), ("features", dict), ("total_episodes", int)):
        if not isinstance(info.get(key), kind):
            raise DatasetError(f"{path}, key {key!r}: missing or not a {kind.__name__ if isinstance(kind, type) else 'number'}")
    for name, feature in info["features"].items():
        if not isinstance(feature, dict) or "dtype" not in feature or not isinstance(feature.get("shape"), list):
            raise DatasetError(f"{path}, key 'features.{name}': expected {{dtype, shape: [..]}}")
    return info


def parse_splits(info: dict, root: Path) -> dict[str, range]:
    """info.json's splits ({"train": "0:90", "valid": "90:100"}) as episode ranges."""
    splits = {}
    for name, value in (info.get("splits") or {}).items():
        try:
            start, stop = (int(part) for part in str(value).split(":"))
        except ValueError:
            raise DatasetError(f"{root / INFO_PATH}, key 'splits.{name}': expected 'start:stop' episode indices, "
                               f"got {value!r}") from None
        if not 0 <= start <= stop <= info["total_episodes"]:
            raise DatasetError(f"{root / INFO_PATH}, key 'splits.{name}': {value!r} is outside the "
                               f"{info['total_episodes']} episodes")
        splits[name] = range(start, stop)
    return splits


def read_env_args(root: Path) -> dict | None:
    """meta/env_args.json (robomimic's environment record, written by our export), or None."""
    path = root / ENV_ARGS_PATH
    if not path.is_file():
        return None
    try:
        env_args = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(env_args, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return env_args
