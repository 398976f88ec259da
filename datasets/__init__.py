"""Offline robot data: robomimic-layout HDF5 files and LeRobotDataset v3 directories, loaded
into one transition form with Monte-Carlo reward-to-go."""
# This top-level `datasets` deliberately shadows Hugging Face's; import it from the repo root only.
from datasets.formats import check_dataset_path, load_transitions, read_env_args, read_mask_names
from datasets.reward_to_go import fail_forever_value, reward_to_go, transform_rewards
from datasets.robomimic_hdf5 import load_robomimic_hdf5
from datasets.transitions import DatasetError, DatasetFileNotFoundError, TransitionDataset, describe

__all__ = [
    "DatasetError",
    "DatasetFileNotFoundError",
    "TransitionDataset",
    "check_dataset_path",
    "describe",
    "fail_forever_value",
    "load_robomimic_hdf5",
    "load_transitions",
    "read_env_args",
    "read_mask_names",
    "reward_to_go",
    "transform_rewards",
]
