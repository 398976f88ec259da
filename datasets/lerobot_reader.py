"""Load a LeRobotDataset v3.0 directory into the same transitions an HDF5 file gives.

LeRobot stores one row per frame: the observation, the action taken from it, and what followed
(`next.reward`, `next.done`, `next.success`). The next observation of frame t is frame t + 1 of
the same episode, so an episode of N frames has N - 1 transitions with a next frame. Its last
action is kept as a terminal when the episode ended done (or successful): a terminal's target
never reads the next frame, which repeats the last one, as for robomimic files without
next_obs. Otherwise it is dropped. Rewards come from `next.reward`, or from `next.success`
(1 on success, else 0) when a dataset records only success; reward-to-go is computed exactly as
for HDF5 files (datasets/reward_to_go.py). Frames come from `image` features (PNG in the
parquet files) or `video` features (decoded with the ffmpeg that imageio-ffmpeg ships, which
reads LeRobot's AV1 and H.264 files). Layout: datasets/lerobot_layout.py; docs/data.md.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from datasets.lerobot_layout import (
    ACTION,
    DATA_PATH,
    DONE,
    REWARD,
    SUCCESS,
    VIDEO_PATH,
    image_feature_candidates,
    observation_feature_candidates,
    parse_splits,
    read_info,
)
from datasets.transitions import (
    DatasetError,
    DatasetFileNotFoundError,
    DemoPlan,
    TransitionDataset,
    assemble_transitions,
    first_action_out_of_range,
)


def load_lerobot(
    path: str | os.PathLike,
    image_keys: Sequence[str],
    proprio_keys: Sequence[str],
    *,
    gamma: float = 0.99,
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
    filter_key: str | None = None,
    max_demos: int | None = None,
    show_progress: bool = True,
) -> TransitionDataset:
    """Read the episodes (those of split `filter_key` when given, the first `max_demos`) of a
    LeRobotDataset v3 directory. DatasetError, naming the directory, episode and feature, for
    anything offline RL cannot use."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetFileNotFoundError(f"{root}: no such dataset directory")
    info = read_info(root)
    features = info["features"]
    images = {key: _find_feature(root, features, image_feature_candidates(key), key, ("image", "video"))
              for key in image_keys}
    proprio = {key: _find_feature(root, features, observation_feature_candidates(key), key, None)
               for key in proprio_keys}
    _find_feature(root, features, [ACTION], ACTION, None)
    if REWARD not in features and SUCCESS not in features:
        raise DatasetError(f"{root}: no reward and no success signal; offline RL needs the feature "
                           f"{REWARD!r} or {SUCCESS!r} (features: {sorted(features)})")
    episodes = _select_episodes(root, info, filter_key, max_demos)
    columns = [ACTION, "episode_index", "frame_index", *proprio.values(),
               *(name for name in (REWARD, DONE, SUCCESS) if name in features)]
    plans, frames_of = [], {}
    with tqdm(total=len(episodes), desc=f"checking {root.name}", unit="episode", disable=not show_progress) as bar:
        for file_key, rows in _episodes_by_data_file(episodes):  # each data file read once, frames later
            table = _read_table(root, DATA_PATH.format(chunk_index=file_key[0], file_index=file_key[1]), columns)
            rows_of = _rows_by_episode(table)
            for episode in rows:
                frame_rows = rows_of.get(episode["episode_index"], np.zeros(0, dtype=np.int64))
                plan = _plan_episode(root, table.take(pa.array(frame_rows)), episode, proprio, image_keys, images,
                                     features)
                bar.update(1)
                if plan.num_transitions == 0:
                    continue
                plans.append(plan)
                frames_of[plan.name] = (episode, frame_rows)
    if not plans:
        raise DatasetError(f"{root}: no episode with a usable transition")
    _check_same_sizes(root, plans)
    frames = _read_frames(root, info, plans, frames_of, image_keys, images, show_progress)
    return assemble_transitions(str(root), plans, frames, list(proprio_keys), gamma, reward_scale, reward_bias)


def read_lerobot_splits(path: str | os.PathLike) -> dict[str, int]:
    """The dataset's splits (info.json) with the number of episodes each holds: the counterpart
    of an HDF5 file's masks, so filter_key=valid selects the held-out episodes."""
    root = Path(path)
    info = read_info(root)
    return {name: len(episodes) for name, episodes in parse_splits(info, root).items()}


def _find_feature(root: Path, features: dict, candidates: list[str], key: str, dtypes: tuple | None) -> str:
    for name in candidates:
        if name in features:
            if dtypes is not None and features[name]["dtype"] not in dtypes:
                raise DatasetError(f"{root}, feature {name!r}: expected dtype {' or '.join(dtypes)} for "
                                   f"the task's '{key}', got {features[name]['dtype']}")
            return name
    raise DatasetError(f"{root}: no feature for the task's '{key}' (looked for {', '.join(candidates)}; "
                       f"the dataset has {', '.join(sorted(features))})")


def _select_episodes(root: Path, info: dict, filter_key: str | None, max_demos: int | None) -> list[dict]:
    episodes = []
    for table in _episode_tables(root):
        episodes.extend(table.to_pylist())
    episodes.sort(key=lambda row: row["episode_index"])
    if len(episodes) != info["total_episodes"]:
        raise DatasetError(f"{root}, meta/episodes: {len(episodes)} episode rows, info.json's total_episodes "
                           f"says {info['total_episodes']}")
    if filter_key is not None:
        splits = parse_splits(info, root)
        if filter_key not in splits:
            raise DatasetError(f"{root}, key 'splits.{filter_key}': no such split; available splits: "
                               f"{sorted(splits) or 'none'}")
        wanted = set(splits[filter_key])
        episodes = [row for row in episodes if row["episode_index"] in wanted]
    if max_demos is not None:
        episodes = episodes[:max_demos]
    if not episodes:
        selection = f" in split {filter_key}" if filter_key is not None else ""
        raise DatasetError(f"{root}: no episodes{selection}")
    return episodes


def _episode_tables(root: Path) -> list[pa.Table]:
    paths = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not paths:
        raise DatasetError(f"{root}: no meta/episodes/chunk-*/file-*.parquet (episode index of a v3 dataset)")
    needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    tables = []
    for path in paths:
        table = _read_table(root, str(path.relative_to(root)), None)
        missing = [name for name in needed if name not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}")
        tables.append(table.select([name for name in table.column_names if not name.startswith("stats/")]))
    return tables


def _episodes_by_data_file(episodes: list[dict]) -> list[tuple[tuple[int, int], list[dict]]]:
    """Episodes grouped by the data file that holds them, in episode order, each file read once."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for row in episodes:
        groups.setdefault((row["data/chunk_index"], row["data/file_index"]), []).append(row)
    return list(groups.items())


def _read_table(root: Path, relative: str, columns: list[str] | None) -> pa.Table:
    path = root / relative
    if not path.is_file():
        raise DatasetError(f"{root}: missing {relative}")
    try:
        schema = pq.read_schema(path)
        if columns is not None:
            missing = [name for name in columns if name not in schema.names]
            if missing:
                raise DatasetError(f"{path}: missing column(s) {missing}")
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as error:
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from None


def _rows_by_episode(table: pa.Table) -> dict[int, np.ndarray]:
    """{episode_index: its rows in the data file, in frame order}, from one sort of the file."""
    episodes = table.column("episode_index").to_numpy()
    order = np.lexsort((table.column("frame_index").to_numpy(), episodes))
    numbers, starts = np.unique(episodes[order], return_index=True)
    return {int(number): rows for number, rows in zip(numbers, np.split(order, starts[1:]))}


def _plan_episode(root: Path, episode_table: pa.Table, episode: dict, proprio: dict[str, str],
                  image_keys: Sequence[str], images: dict[str, str], features: dict) -> DemoPlan:
    """One episode's frames (episode_table: its rows, in frame order) as a DemoPlan."""
    index = episode["episode_index"]
    where = f"{root}, episode {index}"
    n = episode_table.num_rows
    if n != episode["length"] or n == 0:
        raise DatasetError(f"{where}: {n} frame rows, meta/episodes says length {episode['length']}")
    actions = _numeric(episode_table, ACTION, where, n)
    t = first_action_out_of_range(actions)
    if t is not None:
        raise DatasetError(f"{where}, feature 'action': expected values in [-1, 1]; frame {t} has {actions[t].tolist()}")
    success = _numeric(episode_table, SUCCESS, where, n)[:, 0] if SUCCESS in features else None
    rewards = _numeric(episode_table, REWARD, where, n)[:, 0] if REWARD in features else (success > 0).astype(np.float64)
    if DONE in features:
        dones = _numeric(episode_table, DONE, where, n)[:, 0]
    elif success is not None:
        dones = (success > 0).astype(np.float64)
    else:
        dones = np.zeros(n)
    if not np.isin(dones, (0, 1)).all():
        raise DatasetError(f"{where}, feature {DONE!r}: expected 0/1 values, got {np.unique(dones)[:10].tolist()}")
    parts = [_numeric(episode_table, name, where, n).astype(np.float32) for name in proprio.values()]
    obs_proprio = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)
    if dones[-1] == 1:
        num_transitions, final_frame = n, "repeat"
        frames = np.concatenate([obs_proprio, obs_proprio[-1:]])
    else:  # the last action's next frame was not recorded
        num_transitions, final_frame = n - 1, "none"
        frames = obs_proprio
    plan = DemoPlan(
        name=f"episode_{index}", num_steps=n, num_transitions=num_transitions, num_frames=num_transitions + 1,
        final_frame=final_frame, actions=actions[:num_transitions].astype(np.float32),
        rewards_raw=rewards[:num_transitions], dones=dones[:num_transitions], proprio=frames[: num_transitions + 1],
        proprio_dims={key: parts[i].shape[1] for i, key in enumerate(proprio)},
        image_hw={key: tuple(features[images[key]]["shape"][:2]) for key in image_keys},
    )
    return plan


def _numeric(table: pa.Table, name: str, where: str, n: int) -> np.ndarray:
    """A feature column as float64 (n, d): scalars, fixed-size lists and lists alike."""
    column = table.column(name).combine_chunks()
    try:
        if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            if len(set(lengths.tolist())) > 1:
                raise ValueError(f"rows of {sorted(set(lengths.tolist()))[:5]} values")
            values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        values = values.reshape(n, -1)
    except (TypeError, ValueError, pa.ArrowException) as error:
        raise DatasetError(f"{where}, feature {name!r}: expected numbers of one shape per frame ({error})") from None
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0].tolist()
        raise DatasetError(f"{where}, feature {name!r}: expected finite values; NaN/inf at index {bad}")
    return values


def _check_same_sizes(root: Path, plans: list[DemoPlan]) -> None:
    first = plans[0]
    for plan in plans[1:]:
        if plan.actions.shape[1] != first.actions.shape[1]:
            raise DatasetError(f"{root}, {plan.name}: action dimension {plan.actions.shape[1]} differs from "
                               f"{first.name}'s {first.actions.shape[1]}")
        for key, dim in plan.proprio_dims.items():
            if dim != first.proprio_dims[key]:
                raise DatasetError(f"{root}, {plan.name}: '{key}' has {dim} values per frame, {first.name} "
                                   f"{first.proprio_dims[key]}")


def _read_frames(root: Path, info: dict, plans: list[DemoPlan], frames_of: dict, image_keys: Sequence[str],
                 images: dict[str, str], show_progress: bool) -> dict[str, np.ndarray]:
    """Every frame of every selected episode, (F, 3, H, W) uint8 per key, allocated once and
    filled in place (as the HDF5 loader does: never two copies of the frames)."""
    total = sum(plan.num_frames for plan in plans)
    out = {}
    for key in image_keys:
        name, feature = images[key], info["features"][images[key]]
        height, width = feature["shape"][:2]
        frames = np.empty((total, 3, height, width), dtype=np.uint8)
        with tqdm(total=len(plans), desc=f"loading {name}", unit="episode", disable=not show_progress) as bar:
            source = _image_frames if feature["dtype"] == "image" else _video_frames
            offset = 0
            for plan, recorded in zip(plans, source(root, info, plans, frames_of, name)):
                for i, frame in enumerate(recorded):
                    _put(root, plan, name, i, frame, frames[offset + i])
                if plan.final_frame == "repeat":  # a terminal's next frame: never read, the last one again
                    frames[offset + plan.num_steps] = frames[offset + plan.num_steps - 1]
                offset += plan.num_frames
                bar.update(1)
        out[key] = frames
    return out


def _image_frames(root: Path, info: dict, plans: list[DemoPlan], frames_of: dict, name: str):
    """Per episode, its recorded frames (H, W, 3) decoded from the PNG bytes in the data files."""
    from PIL import Image

    table, table_key = None, None
    for plan in plans:
        episode, rows = frames_of[plan.name]
        file_key = (episode["data/chunk_index"], episode["data/file_index"])
        if file_key != table_key:  # one data file's image column at a time
            table = _read_table(root, DATA_PATH.format(chunk_index=file_key[0], file_index=file_key[1]), [name])
            table_key = file_key
        cells = table.column(name).take(pa.array(rows[: min(plan.num_steps, plan.num_frames)])).to_pylist()
        recorded = []
        for i, cell in enumerate(cells):
            data = cell.get("bytes") if isinstance(cell, dict) else None
            if not data:
                raise DatasetError(f"{root}, {plan.name}, feature {name!r}: frame {i} has no embedded image bytes")
            try:
                recorded.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            except OSError as error:
                raise DatasetError(f"{root}, {plan.name}, feature {name!r}: frame {i} is not a readable image "
                                   f"({error})") from None
        yield recorded


def _video_frames(root: Path, info: dict, plans: list[DemoPlan], frames_of: dict, name: str):
    """Per episode, its recorded frames: frame t is the video frame at from_timestamp + t / fps
    of the episode's video file."""
    fps = float(info["fps"])
    decoded, decoded_key = None, None
    for plan in plans:
        episode, _ = frames_of[plan.name]
        try:
            file_key = (episode[f"videos/{name}/chunk_index"], episode[f"videos/{name}/file_index"])
            start = episode[f"videos/{name}/from_timestamp"]
        except KeyError as missing:
            raise DatasetError(f"{root}, meta/episodes: no column {missing} for video feature {name!r}") from None
        if file_key != decoded_key:
            relative = VIDEO_PATH.format(video_key=name, chunk_index=file_key[0], file_index=file_key[1])
            decoded, decoded_key = _decode_video(root, relative), file_key
        first = int(round(start * fps))
        count = min(plan.num_steps, plan.num_frames)
        if first + count > len(decoded):
            raise DatasetError(f"{root}, {plan.name}, feature {name!r}: the video has {len(decoded)} frames, "
                               f"frame {len(decoded) - first} would be number {len(decoded)}")
        yield decoded[first: first + count]


def _decode_video(root: Path, relative: str) -> np.ndarray:
    import imageio_ffmpeg

    path = root / relative
    if not path.is_file():
        raise DatasetError(f"{root}: missing {relative}")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3) for raw in reader]
    except (OSError, RuntimeError, StopIteration) as error:
        raise DatasetError(f"{path}: not a readable video ({error})") from None
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)


def _put(root: Path, plan: DemoPlan, name: str, i: int, frame: np.ndarray, out: np.ndarray) -> None:
    if frame.shape != (out.shape[1], out.shape[2], 3):
        raise DatasetError(f"{root}, {plan.name}, feature {name!r}: frame {i} is {frame.shape} (H, W, C), "
                           f"info.json says {(out.shape[1], out.shape[2], 3)}")
    out[:] = frame.transpose(2, 0, 1)
