"""Offline robot data: robomimic-layout HDF5 loading and Monte-Carlo reward-to-go."""
# This top-level `datasets` deliberately shadows Hugging Face's; import it from the repo root only.
from datasets.reward_to_go import fail_forever_value, reward_to_go, transform_rewards
from datasets.robomimic_hdf5 import (
    DatasetError,
    DatasetFileNotFoundError,
    TransitionDataset,
    describe,
    load_robomimic_hdf5,
    read_env_args,
    read_mask_names,
)

__all__ = [
    "DatasetError",
    "DatasetFileNotFoundError",
    "TransitionDataset",
    "describe",
    "fail_forever_value",
    "load_robomimic_hdf5",
    "read_env_args",
    "read_mask_names",
    "reward_to_go",
    "transform_rewards",
]
