"""Load robomimic-layout HDF5 demonstrations into a transition dataset that holds each frame once.

Works on our own collected files and on robomimic's / MimicGen's released image datasets
(layout and reward rules: docs data.md). Real image files are tens of GB, so the loader
validates everything it can from metadata and low-dimensional arrays first, then allocates
the frame buffers once and reads each demo's images straight into them in small chunks:
peak memory is the final arrays plus one chunk, never two copies of the frames.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import h5py
import numpy as np
from tqdm.auto import tqdm

from datasets.transitions import (
    DatasetError,
    DatasetFileNotFoundError,
    DemoPlan,
    TransitionDataset,
    assemble_transitions,
    first_action_out_of_range,
)

# Frames read per h5py call when copying images into the buffer: bounds the scratch memory
# (64 frames of 84x84x3 is 1.3 MB) while keeping the number of HDF5 reads small.
READ_CHUNK_FRAMES = 64

_DEMO_NAME = re.compile(r"^demo_(\d+)$")


def load_robomimic_hdf5(
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
    """Read demos (sorted by number; optionally those in mask/<filter_key>, the first max_demos).

    Raises DatasetError, naming file, demo and key, for anything that breaks the layout or
    cannot be read (a corrupt chunk, a truncated file); all layout checks run before the frame
    buffers are allocated.
    """
    path = os.fspath(path)
    image_keys, proprio_keys = list(image_keys), list(proprio_keys)
    # The outer guard catches what the per-key guards cannot place, e.g. a damaged group index.
    with _open_hdf5(path) as handle, _reading(path, None, None):
        data = _data_group(handle, path)
        names = _select_demos(handle, data, path, filter_key, max_demos)
        plans = []
        for name in tqdm(names, desc=f"checking {os.path.basename(path)}", unit="demo",
                         disable=not show_progress):
            plan = _plan_demo(data[name], path, name, image_keys, proprio_keys)
            if plan.num_transitions == 0:
                warnings.warn(f"{path}, demo '{name}': its only transition has no next "
                              "observation and is not terminal; demo skipped", stacklevel=2)
                continue
            plans.append(plan)
        if not plans:
            raise DatasetError(f"{path}, key 'data': no demo with a usable transition")
        _check_across_demos(plans, path, image_keys)
        images = _allocate_images(plans, image_keys)
        offset = 0
        for plan in tqdm(plans, desc=f"loading {os.path.basename(path)}", unit="demo",
                         disable=not show_progress):
            for key in image_keys:
                _read_demo_frames(data[plan.name], path, key, plan,
                                  images[key][offset : offset + plan.num_frames])
            offset += plan.num_frames
    return assemble_transitions(path, plans, images, proprio_keys, gamma, reward_scale, reward_bias)


def read_mask_names(path: str | os.PathLike) -> dict[str, int] | None:
    """The file's filter keys (mask/<name>) with the number of demos each lists; None when the
    file has no mask group.

    Opens the file exactly as load_robomimic_hdf5 does, so a missing file raises
    DatasetFileNotFoundError and an unreadable one DatasetError, both naming the path.
    """
    path = os.fspath(path)
    with _open_hdf5(path) as handle, _reading(path, None, "mask"):
        masks = handle.get("mask")
        if masks is None:
            return None
        if not isinstance(masks, h5py.Group):
            raise _error(path, None, "mask", "expected a group of filter keys (mask/<name>)")
        sizes = {}
        for name, item in masks.items():
            if not isinstance(item, h5py.Dataset) or item.ndim != 1:
                raise _error(path, None, f"mask/{name}", "expected a 1-D array of demo names")
            sizes[name] = item.shape[0]
        return sizes


def read_env_args(path: str | os.PathLike) -> dict | None:
    """The file's `data` attribute `env_args` (robomimic's environment metadata) as a dict;
    None when the file has none. Opens the file as load_robomimic_hdf5 does (same errors)."""
    path = os.fspath(path)
    with _open_hdf5(path) as handle, _reading(path, None, "data"):
        data = _data_group(handle, path)
        if "env_args" not in data.attrs:
            return None
        raw = data.attrs["env_args"]
    try:
        env_args = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _error(path, None, "data/env_args", f"not JSON ({error})") from None
    if not isinstance(env_args, dict):
        raise _error(path, None, "data/env_args", "expected a JSON object")
    return env_args


def _open_hdf5(path: str) -> h5py.File:
    """Open read-only, turning a missing, empty, truncated or non-HDF5 file into a DatasetError."""
    if not os.path.isfile(path):
        raise DatasetFileNotFoundError(2, f"{path}: no such dataset file", path)
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{path}: not a readable HDF5 file ({error})") from error


@contextmanager
def _reading(path: str, demo: str | None, key: str | None) -> Iterator[None]:
    """Name the place when h5py fails a read.

    Opening checks only the file's header and size: a corrupt compressed chunk, a failed or
    missing filter, or data past the end of a damaged file surface as an OSError when that data
    is read, which would otherwise reach the user as a bare traceback naming no file or demo.
    """
    try:
        yield
    except DatasetError:  # already placed; DatasetFileNotFoundError is an OSError too
        raise
    except OSError as error:
        raise _error(path, demo, key, f"cannot read the stored data; the file may be corrupt "
                                      f"or truncated ({error})") from error


def _read(group: h5py.Group, path: str, name: str | None, key: str,
          selection: int | tuple = ()) -> np.ndarray:
    """group[key][selection], with a read failure reported as a DatasetError naming the key."""
    with _reading(path, name, key):
        return group[key][selection]


def _error(path: str, demo: str | None, key: str | None, problem: str) -> DatasetError:
    where = path + (f", demo '{demo}'" if demo else "") + (f", key '{key}'" if key else "")
    return DatasetError(f"{where}: {problem}")


def _data_group(handle: h5py.File, path: str) -> h5py.Group:
    if not isinstance(handle.get("data"), h5py.Group):
        raise _error(path, None, "data", "missing group 'data' (robomimic layout: data/demo_<i>/...)")
    return handle["data"]


def demo_number(path: str, name: str) -> int:
    """N of a demo_<N> group (the numeric order every reader and writer uses); DatasetError otherwise."""
    match = _DEMO_NAME.match(name)
    if match is None:
        raise _error(path, name, f"data/{name}", "entries of 'data' must be named demo_<int>")
    return int(match.group(1))


def _select_demos(handle: h5py.File, data: h5py.Group, path: str, filter_key: str | None,
                  max_demos: int | None) -> list[str]:
    # Lexical order would put demo_10 before demo_2 and scramble any index-based split.
    names = sorted(data.keys(), key=lambda name: demo_number(path, name))
    if filter_key is not None:
        masks = handle.get("mask")
        available = sorted(masks.keys()) if isinstance(masks, h5py.Group) else []
        if filter_key not in available:
            raise _error(path, None, f"mask/{filter_key}",
                         f"no such filter key; available mask keys: {available or 'none'}")
        wanted = [n.decode() if isinstance(n, bytes) else str(n)
                  for n in _read(handle, path, None, f"mask/{filter_key}")]
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise _error(path, missing[0], f"mask/{filter_key}",
                         f"lists {len(missing)} demo(s) absent from 'data': {missing[:5]}")
        wanted_set = set(wanted)
        names = [name for name in names if name in wanted_set]
    if max_demos is not None:
        names = names[:max_demos]
    if not names:
        selection = f" in mask/{filter_key}" if filter_key is not None else ""
        raise _error(path, None, "data", f"no demos{selection} (expected groups data/demo_<int>)")
    return names


def _require(demo: h5py.Group, path: str, name: str, key: str) -> h5py.Dataset:
    with _reading(path, name, key):  # a damaged object header fails here, before any data
        item = demo.get(key)
    if not isinstance(item, h5py.Dataset):
        raise _error(path, name, key, "missing (each demo needs actions, rewards, dones, and "
                                      "obs/<key>, plus next_obs/<key> when next_obs exists, "
                                      "for every requested key)")
    return item


def _plan_demo(demo: h5py.Group, path: str, name: str, image_keys: list[str],
               proprio_keys: list[str]) -> DemoPlan:
    if not isinstance(demo, h5py.Group):
        raise _error(path, name, f"data/{name}", "expected a group")
    actions = _require(demo, path, name, "actions")
    if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] == 0:
        raise _error(path, name, "actions", f"expected shape (N, A) with N, A >= 1, got {actions.shape}")
    n = actions.shape[0]
    has_next = isinstance(demo.get("next_obs"), h5py.Group)
    sections = ("obs", "next_obs") if has_next else ("obs",)

    # Shapes first: these cost nothing to read and catch most broken files.
    for key in ("rewards", "dones"):
        if _require(demo, path, name, key).shape != (n,):
            raise _error(path, name, key, f"expected shape (N,) with N = {n} (len(actions)), "
                                          f"got {demo[key].shape}")
    image_hw = {}
    for key in image_keys:
        for section in sections:
            frames = _require(demo, path, name, f"{section}/{key}")
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) != n:
                raise _error(path, name, f"{section}/{key}",
                             f"expected uint8 images of shape (N, H, W, 3) with N = {n} "
                             f"(len(actions)), got {frames.dtype} {frames.shape}")
        image_hw[key] = tuple(demo[f"obs/{key}"].shape[1:3])
        _check_same_shape(demo, path, name, key, has_next)
    for key in proprio_keys:
        for section in sections:
            values = _require(demo, path, name, f"{section}/{key}")
            if values.ndim == 0 or values.shape[0] != n:
                raise _error(path, name, f"{section}/{key}",
                             f"expected length N = {n} (len(actions)), got shape {values.shape}")
        _check_same_shape(demo, path, name, key, has_next)

    actions = _finite(demo, path, name, "actions")
    t = first_action_out_of_range(actions)
    if t is not None:
        raise _error(path, name, "actions", f"expected values in [-1, 1]; step {t} has {actions[t].tolist()}")
    rewards = _finite(demo, path, name, "rewards")
    dones = _finite(demo, path, name, "dones")
    if not np.isin(dones, (0, 1)).all():
        raise _error(path, name, "dones", f"expected 0/1 values, got {np.unique(dones)[:10].tolist()}")
    obs_proprio = _proprio(demo, path, name, "obs", proprio_keys, n)

    if has_next:
        num_transitions, final_frame = n, "next_obs"
        final_proprio = _proprio(demo, path, name, "next_obs", proprio_keys, n)
        _check_next_is_shifted(demo, path, name, image_keys, proprio_keys, obs_proprio, final_proprio)
        proprio = np.concatenate([obs_proprio, final_proprio[-1:]])
    elif dones[-1] == 1:
        # Ended in success: keep the terminal; its target never reads the (repeated) next frame.
        num_transitions, final_frame = n, "repeat"
        proprio = np.concatenate([obs_proprio, obs_proprio[-1:]])
    else:
        # No s_N and no terminal: the last transition's target would need a frame we lack.
        num_transitions, final_frame = n - 1, "none"
        proprio = obs_proprio
    return DemoPlan(
        name=name, num_steps=n, num_transitions=num_transitions, num_frames=num_transitions + 1,
        final_frame=final_frame, actions=actions[:num_transitions].astype(np.float32),
        rewards_raw=rewards[:num_transitions], dones=dones[:num_transitions],
        proprio=proprio[: num_transitions + 1], image_hw=image_hw,
        proprio_dims={key: int(np.prod(demo[f"obs/{key}"].shape[1:])) for key in proprio_keys},
    )


def _check_same_shape(demo: h5py.Group, path: str, name: str, key: str, has_next: bool) -> None:
    if has_next and demo[f"next_obs/{key}"].shape != demo[f"obs/{key}"].shape:
        raise _error(path, name, f"next_obs/{key}", f"shape {demo[f'next_obs/{key}'].shape} "
                                                    f"differs from obs/{key} {demo[f'obs/{key}'].shape}")


def _finite(group: h5py.Group, path: str, name: str, key: str) -> np.ndarray:
    values = _read(group, path, name, key)
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise _error(path, name, key, f"expected a numeric array, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0].tolist()
        raise _error(path, name, key, f"expected finite values; NaN/inf at index {bad}")
    return values


def _proprio(demo: h5py.Group, path: str, name: str, section: str, keys: list[str], n: int) -> np.ndarray:
    parts = [_finite(demo, path, name, f"{section}/{key}").reshape(n, -1) for key in keys]
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((n, 0), np.float32)


def _check_next_is_shifted(demo: h5py.Group, path: str, name: str, image_keys: list[str],
                           proprio_keys: list[str], obs_proprio: np.ndarray,
                           next_proprio: np.ndarray) -> None:
    """Frames are shared, so next_obs[t] must be obs[t + 1]; check it where it is cheap."""
    if len(obs_proprio) < 2:
        return
    if proprio_keys and not np.allclose(next_proprio[:-1], obs_proprio[1:], atol=1e-5):
        raise _error(path, name, f"next_obs/{proprio_keys[0]}",
                     "next_obs[t] differs from obs[t + 1]; the loader shares frames between them")
    for key in image_keys:  # one frame per demo: reading them all would double the I/O
        if not np.array_equal(_read(demo, path, name, f"next_obs/{key}", 0),
                              _read(demo, path, name, f"obs/{key}", 1)):
            raise _error(path, name, f"next_obs/{key}",
                         "next_obs[0] differs from obs[1]; the loader shares frames between them")


def _check_across_demos(plans: list[DemoPlan], path: str, image_keys: list[str]) -> None:
    first = plans[0]
    for plan in plans[1:]:
        if plan.actions.shape[1] != first.actions.shape[1]:
            raise _error(path, plan.name, "actions",
                         f"action dimension {plan.actions.shape[1]} differs from {first.name}'s "
                         f"{first.actions.shape[1]}")
        for key, dim in plan.proprio_dims.items():
            if dim != first.proprio_dims[key]:
                raise _error(path, plan.name, f"obs/{key}",
                             f"{dim} values per step differ from {first.name}'s {first.proprio_dims[key]}")
        for key in image_keys:
            if plan.image_hw[key] != first.image_hw[key]:
                raise _error(path, plan.name, f"obs/{key}",
                             f"image size (H, W) = {plan.image_hw[key]} differs from "
                             f"{first.name}'s {first.image_hw[key]}")


def _allocate_images(plans: list[DemoPlan], image_keys: list[str]) -> dict[str, np.ndarray]:
    num_frames = sum(plan.num_frames for plan in plans)
    return {key: np.empty((num_frames, 3, *plans[0].image_hw[key]), dtype=np.uint8) for key in image_keys}


def _read_demo_frames(demo: h5py.Group, path: str, key: str, plan: DemoPlan, out: np.ndarray) -> None:
    """Fill `out` (num_frames, C, H, W) with the demo's frames, HWC -> CHW, chunk by chunk."""
    source = demo[f"obs/{key}"]
    num_obs = min(plan.num_steps, plan.num_frames)  # the "none" case has no extra frame
    chunk = min(READ_CHUNK_FRAMES, num_obs)
    scratch = np.empty((chunk, *source.shape[1:]), dtype=np.uint8)
    with _reading(path, plan.name, f"obs/{key}"):
        for start in range(0, num_obs, chunk):
            stop = min(start + chunk, num_obs)
            source.read_direct(scratch, source_sel=np.s_[start:stop], dest_sel=np.s_[0 : stop - start])
            out[start:stop] = scratch[: stop - start].transpose(0, 3, 1, 2)
    if plan.final_frame == "next_obs":
        last = _read(demo, path, plan.name, f"next_obs/{key}", plan.num_steps - 1)
        out[num_obs] = last.transpose(2, 0, 1)
    elif plan.final_frame == "repeat":
        out[num_obs] = out[num_obs - 1]
