"""Write a robomimic-layout HDF5 file as a LeRobotDataset v3.0 directory.

Every demo becomes an episode, every `obs` row a frame: images as `observation.images.<key>`
(lossless PNG inside the parquet files, LeRobot's `image` dtype, so frames come back exactly),
other observations as `observation.<key>` in the file's own dtype, then `action`,
`next.reward` and `next.done`. LeRobot keeps no next observation, so a demo's final
`next_obs` is not written (datasets/lerobot_reader.py says what loading does without it).
Train episodes come first and the `valid` demos last, so the file's masks become LeRobot's
splits ({"train": "0:90", "valid": "90:100"}); each episode's source demo is kept in the
episode index (`source_demo`). The directory is built under a temporary name beside `out`
and moved into place only when complete.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from datasets.lerobot_layout import (
    ACTION,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILE_SIZE_MB,
    DATA_PATH,
    DONE,
    ENV_ARGS_PATH,
    EPISODES_PATH,
    INDEX_FEATURES,
    INFO_PATH,
    REWARD,
    STATS_PATH,
    TASKS_PATH,
    image_feature_name,
    observation_feature_name,
)
from datasets.robomimic_hdf5 import demo_number, read_env_args, read_mask_names
from datasets.transitions import DatasetError

# Frames sampled per image feature for its statistics (evenly spaced, so the same every time).
IMAGE_STATS_FRAMES = 1000
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def export_lerobot(source: str | os.PathLike, out: str | os.PathLike, *, task: str | None = None,
                   fps: int | None = None, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Write `source` (robomimic HDF5) as a LeRobotDataset v3 at `out`; returns info.json's
    content. `task` defaults to the file's env_name, `fps` to its control_freq (else 20)."""
    source, out = Path(source), Path(out)
    env_args = read_env_args(source)  # DatasetError naming the file if it is not readable HDF5
    masks = read_mask_names(source)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another out or set overwrite=true")
    task = task or (env_args or {}).get("env_name") or source.stem
    fps = fps or int(((env_args or {}).get("env_kwargs") or {}).get("control_freq", 20))
    staging = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with h5py.File(source, "r") as handle:
            order = _episode_order(handle, source, masks)
            info = _write(handle, source, order, staging, task, fps, env_args, show_progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _episode_order(handle: h5py.File, source: Path, masks: dict[str, int] | None) -> tuple[list[str], dict[str, str]]:
    """Demo names in episode order (train, then valid) and the splits they make."""
    data = handle.get("data")
    if not isinstance(data, h5py.Group) or not len(data):
        raise DatasetError(f"{source}, key 'data': no demos (robomimic layout: data/demo_<i>/...)")
    names = sorted(data.keys(), key=lambda name: demo_number(str(source), name))
    valid = set()
    if masks and "valid" in masks:
        valid = {n.decode() if isinstance(n, bytes) else str(n) for n in handle["mask/valid"][()]}
    train = [name for name in names if name not in valid]
    held_out = [name for name in names if name in valid]
    splits = {"train": f"0:{len(train)}"}
    if held_out:
        splits["valid"] = f"{len(train)}:{len(names)}"
    return train + held_out, splits


def _write(handle: h5py.File, source: Path, order: tuple[list[str], dict[str, str]], root: Path, task: str,
           fps: int, env_args: dict | None, show_progress: bool) -> dict:
    names, splits = order
    features = _features(handle, source, names[0])
    writer = _DataFiles(root, features)
    stats = _Stats(features)
    episodes = []
    for episode_index, name in enumerate(tqdm(names, desc=f"export {source.name}", unit="demo",
                                              disable=not show_progress)):
        demo = handle[f"data/{name}"]
        columns = _episode_columns(demo, source, name, features, episode_index, writer.num_frames, fps)
        chunk, file = writer.add(columns)
        stats.add(columns)
        n = len(columns["index"])
        episodes.append({"episode_index": episode_index, "tasks": [task], "length": n,
                         "data/chunk_index": chunk, "data/file_index": file,
                         "dataset_from_index": writer.num_frames - n, "dataset_to_index": writer.num_frames,
                         "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, "source_demo": name})
    writer.close()
    info = {
        "codebase_version": CODEBASE_VERSION, "fps": fps, "features": features,
        "total_episodes": len(names), "total_frames": writer.num_frames, "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_SIZE_MB, "video_files_size_in_mb": 200,
        "data_path": DATA_PATH, "video_path": None, "robot_type": (env_args or {}).get("env_kwargs", {}).get("robots"),
        "splits": splits,
    }
    if isinstance(info["robot_type"], list):
        info["robot_type"] = ",".join(info["robot_type"])
    _write_json(root / INFO_PATH, info)
    _write_json(root / STATS_PATH, stats.result())
    if env_args is not None:
        _write_json(root / ENV_ARGS_PATH, env_args)
    _write_tasks(root, task)
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), path)
    return info


def _features(handle: h5py.File, source: Path, first: str) -> dict:
    """Feature specs from the first demo's arrays (every demo must match them)."""
    demo = handle[f"data/{first}"]
    if not isinstance(demo.get("obs"), h5py.Group) or "actions" not in demo:
        raise DatasetError(f"{source}, demo '{first}': expected obs/<key> and actions")
    features = {}
    for key, array in demo["obs"].items():
        if array.dtype == np.uint8 and array.ndim == 4 and array.shape[3] == 3:
            features[image_feature_name(key)] = {"dtype": "image", "shape": list(array.shape[1:]),
                                                 "names": ["height", "width", "channels"]}
        else:
            features[observation_feature_name(key)] = {"dtype": str(array.dtype), "shape": [int(np.prod(array.shape[1:]))],
                                                       "names": None}
    features[ACTION] = {"dtype": str(demo["actions"].dtype), "shape": [demo["actions"].shape[1]], "names": None}
    features[REWARD] = {"dtype": str(demo["rewards"].dtype), "shape": [1], "names": None}
    features[DONE] = {"dtype": "bool", "shape": [1], "names": None}
    return {**features, **INDEX_FEATURES}


def _episode_columns(demo: h5py.Group, source: Path, name: str, features: dict, episode_index: int,
                     first_index: int, fps: int) -> dict[str, np.ndarray | list]:
    n = demo["actions"].shape[0]
    columns: dict[str, np.ndarray | list] = {}
    for feature, spec in features.items():
        if feature in INDEX_FEATURES:
            continue
        if feature == ACTION:
            values = demo["actions"][()]
        elif feature == REWARD:
            values = demo["rewards"][()]
        elif feature == DONE:
            values = demo["dones"][()].astype(bool)
        else:
            key = feature.split(".")[-1]
            if f"obs/{key}" not in demo:
                raise DatasetError(f"{source}, demo '{name}', key 'obs/{key}': missing (the first demo has it)")
            values = demo[f"obs/{key}"][()]
        if len(values) != n:
            raise DatasetError(f"{source}, demo '{name}': {feature} has {len(values)} rows, actions {n}")
        if spec["dtype"] == "image":
            if values.shape[1:] != tuple(spec["shape"]):
                raise DatasetError(f"{source}, demo '{name}', key 'obs/{feature.split('.')[-1]}': frames "
                                   f"{values.shape[1:]}, the first demo's {tuple(spec['shape'])}")
            columns[feature] = values
        else:
            columns[feature] = values.reshape(n, -1) if spec["shape"] != [1] else values.reshape(n)
    frame_index = np.arange(n, dtype=np.int64)
    columns["timestamp"] = (frame_index / fps).astype(np.float32)
    columns["frame_index"] = frame_index
    columns["episode_index"] = np.full(n, episode_index, dtype=np.int64)
    columns["index"] = first_index + frame_index
    columns["task_index"] = np.zeros(n, dtype=np.int64)
    return columns


class _DataFiles:
    """data/chunk-XXX/file-YYY.parquet, one row group per episode, a new file every ~100 MB."""

    def __init__(self, root: Path, features: dict):
        self.root, self.features = root, features
        self.schema = pa.schema([(name, _arrow_type(spec)) for name, spec in features.items()])
        self.file_index, self.file_bytes, self.num_frames = 0, 0, 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, columns: dict) -> tuple[int, int]:
        if self._writer is not None and self.file_bytes >= DATA_FILE_SIZE_MB * 2**20:
            self._writer.close()
            self._writer, self.file_index, self.file_bytes = None, self.file_index + 1, 0
        chunk, file = divmod(self.file_index, CHUNKS_SIZE)
        if self._writer is None:
            path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        table = pa.table({name: _arrow_column(columns[name], spec, self.schema.field(name).type)
                          for name, spec in self.features.items()}, schema=self.schema)
        self._writer.write_table(table)
        self.file_bytes += table.nbytes
        self.num_frames += table.num_rows
        return chunk, file

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _arrow_type(spec: dict) -> pa.DataType:
    if spec["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    element = pa.from_numpy_dtype(np.dtype(spec["dtype"]))
    return element if spec["shape"] == [1] else pa.list_(element, spec["shape"][0])


def _arrow_column(values, spec: dict, arrow_type: pa.DataType) -> pa.Array:
    if spec["dtype"] == "image":
        return pa.array([{"bytes": _png(frame), "path": None} for frame in values], type=arrow_type)
    if spec["shape"] == [1]:
        return pa.array(values, type=arrow_type)
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=arrow_type.value_type)
    return pa.FixedSizeListArray.from_arrays(flat, spec["shape"][0])


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


class _Stats:
    """meta/stats.json: min, max, mean, std, count and quantiles per feature; images per channel
    in [0, 1] over evenly spaced frames, as LeRobot's normalisers expect."""

    def __init__(self, features: dict):
        self.features = features
        self.values: dict[str, list[np.ndarray]] = {name: [] for name in features}

    def add(self, columns: dict) -> None:
        for name, spec in self.features.items():
            values = np.asarray(columns[name])
            if spec["dtype"] == "image":
                values = values[:: max(1, len(values) // 20)]  # a sample per episode bounds the memory
            self.values[name].append(values)

    def result(self) -> dict:
        stats = {}
        for name, spec in self.features.items():
            values = np.concatenate(self.values[name])
            if spec["dtype"] == "image":
                pick = np.linspace(0, len(values) - 1, min(IMAGE_STATS_FRAMES, len(values))).astype(int)
                stats[name] = _summary(values[pick].reshape(-1, 3) / 255.0, len(values), per_channel=True)
            else:
                stats[name] = _summary(values.reshape(len(values), -1), len(values), per_channel=False)
        return stats


def _summary(values: np.ndarray, count: int, per_channel: bool) -> dict:
    """Column statistics of `values` (rows, columns); an image's per channel come out (C, 1, 1)."""
    values = values.astype(np.float64)

    def shaped(column_values: np.ndarray) -> list:
        return [[[float(v)]] for v in column_values] if per_channel else [float(v) for v in column_values]

    entry = {"min": shaped(values.min(0)), "max": shaped(values.max(0)), "mean": shaped(values.mean(0)),
             "std": shaped(values.std(0)), "count": [int(count)]}
    for key, q in QUANTILES.items():
        entry[key] = shaped(np.quantile(values, q, axis=0))
    return entry


def _write_tasks(root: Path, task: str) -> None:
    """meta/tasks.parquet with the task string as the pandas index, as LeRobot reads it back."""
    pandas_meta = {"index_columns": ["task"], "column_indexes": [],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}}
    table = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task], pa.string())})
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, root / TASKS_PATH)


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
