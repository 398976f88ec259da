"""One entry point per question, whatever the dataset's format: a robomimic-layout HDF5 file,
or a LeRobotDataset v3 directory (told apart by meta/info.json)."""
from __future__ import annotations

import os
from pathlib import Path

from datasets.lerobot_layout import is_lerobot_dataset
from datasets.transitions import DatasetFileNotFoundError, TransitionDataset


def load_transitions(path: str | os.PathLike, image_keys, proprio_keys, **options) -> TransitionDataset:
    """load_robomimic_hdf5 or load_lerobot, with the same arguments and errors."""
    if is_lerobot_dataset(path):
        from datasets.lerobot_reader import load_lerobot

        return load_lerobot(path, image_keys, proprio_keys, **options)
    from datasets.robomimic_hdf5 import load_robomimic_hdf5

    return load_robomimic_hdf5(path, image_keys, proprio_keys, **options)


def read_mask_names(path: str | os.PathLike) -> dict[str, int] | None:
    """The filter keys a dataset offers with their number of demos: an HDF5 file's masks, a
    LeRobot dataset's splits; None for an HDF5 file without masks."""
    if is_lerobot_dataset(path):
        from datasets.lerobot_reader import read_lerobot_splits

        return read_lerobot_splits(path)
    from datasets.robomimic_hdf5 import read_mask_names as read_hdf5_masks

    return read_hdf5_masks(path)


def read_env_args(path: str | os.PathLike) -> dict | None:
    """robomimic's environment record: the HDF5 attribute, or meta/env_args.json of an export."""
    if is_lerobot_dataset(path):
        from datasets.lerobot_layout import read_env_args as read_lerobot_env_args

        return read_lerobot_env_args(Path(path))
    from datasets.robomimic_hdf5 import read_env_args as read_hdf5_env_args

    return read_hdf5_env_args(path)


def check_dataset_path(path: str | os.PathLike) -> None:
    """DatasetFileNotFoundError unless `path` is a file or a LeRobot dataset directory."""
    if not (Path(path).is_file() or is_lerobot_dataset(path)):
        kind = "directory without meta/info.json (not a LeRobotDataset)" if Path(path).is_dir() else "such file"
        raise DatasetFileNotFoundError(f"{path}: no {kind}")
