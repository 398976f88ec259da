"""Offline robot data: robomimic-layout HDF5 loading and Monte-Carlo reward-to-go."""
# This top-level `datasets` deliberately shadows Hugging Face's; import it from the repo root only.
from datasets.reward_to_go import fail_forever_value, reward_to_go, transform_rewards
from datasets.robomimic_hdf5 import DatasetError, TransitionDataset, describe, load_robomimic_hdf5

__all__ = [
    "DatasetError",
    "TransitionDataset",
    "describe",
    "fail_forever_value",
    "load_robomimic_hdf5",
    "reward_to_go",
    "transform_rewards",
]
