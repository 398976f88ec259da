"""Write demonstrations in the robomimic HDF5 layout, atomically.

The file is written under a temporary name beside the target and renamed only by
`finish()`, so an interrupted or failed run never leaves a half-written dataset.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np


class RobomimicWriter:
    """Usage:

        with RobomimicWriter("demos.hdf5", env.env_args) as writer:
            writer.add_demo(actions=..., states=..., rewards=..., dones=..., obs=..., next_obs=..., model_file=...)
            writer.finish(valid_fraction=0.1, seed=0)

    Leaving the block without `finish()` (an exception, Ctrl-C) deletes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, env_args: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_path = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file = h5py.File(self._tmp_path, "w")
        self._data = self._file.create_group("data")
        self._env_args = env_args
        self._names: list[str] = []
        self._total = 0
        self._finished = False

    def __enter__(self) -> "RobomimicWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._finished:
            self._file.close()
            self._tmp_path.unlink(missing_ok=True)

    @property
    def num_demos(self) -> int:
        return len(self._names)

    def add_demo(
        self,
        actions: np.ndarray,
        states: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        model_file: str,
    ) -> str:
        """Append one demo; image observations are HWC uint8, upright."""
        n = len(actions)
        for name, array in [("states", states), ("rewards", rewards), ("dones", dones)] + [
            (f"obs/{k}", v) for k, v in obs.items()
        ] + [(f"next_obs/{k}", v) for k, v in next_obs.items()]:
            if len(array) != n:
                raise ValueError(f"demo {len(self._names)}: {name} has {len(array)} entries, actions has {n}")
        name = f"demo_{len(self._names)}"
        group = self._data.create_group(name)
        group.attrs["num_samples"] = n
        group.attrs["model_file"] = model_file
        group.create_dataset("actions", data=np.asarray(actions, dtype=np.float64))
        group.create_dataset("states", data=np.asarray(states, dtype=np.float64))
        group.create_dataset("rewards", data=np.asarray(rewards, dtype=np.float64))
        group.create_dataset("dones", data=np.asarray(dones, dtype=np.int64))
        for section, values in (("obs", obs), ("next_obs", next_obs)):
            for key, array in values.items():
                array = np.asarray(array)
                # Images dominate the file; gzip is readable by every HDF5 build (robomimic's too).
                compression = "gzip" if array.dtype == np.uint8 else None
                group.create_dataset(f"{section}/{key}", data=array, compression=compression)
        self._names.append(name)
        self._total += n
        return name

    def finish(self, valid_fraction: float = 0.1, seed: int = 0) -> Path:
        """Write `total`, `env_args` and the train/valid masks, then move the file into place."""
        if not self._names:
            raise ValueError(f"{self.path}: no demos to write")
        self._data.attrs["total"] = self._total
        self._data.attrs["env_args"] = json.dumps(self._env_args)
        order = np.random.default_rng(seed).permutation(len(self._names))
        num_valid = int(round(valid_fraction * len(self._names)))
        if valid_fraction > 0 and len(self._names) > 1:
            num_valid = min(max(num_valid, 1), len(self._names) - 1)
        valid = sorted(order[:num_valid].tolist())
        train = sorted(order[num_valid:].tolist())
        mask = self._file.create_group("mask")
        mask.create_dataset("train", data=np.array([self._names[i] for i in train], dtype="S"))
        mask.create_dataset("valid", data=np.array([self._names[i] for i in valid], dtype="S"))
        self._file.close()
        os.replace(self._tmp_path, self.path)
        self._finished = True
        return self.path
