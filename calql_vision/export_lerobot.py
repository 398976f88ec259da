"""Write a robomimic-layout HDF5 file (the scripted demonstrations, or any robomimic file) as a LeRobotDataset v3.

    python -m calql_vision.export_lerobot dataset=data/lift_state_scripted_100ep_noise0p3_state.hdf5
    python -m calql_vision.export_lerobot dataset=data/demos.hdf5 out=data/demos_lerobot task="lift the cube"
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from calql_vision.config import ConfigError, load_config
from calql_vision.config_fields import AT_LEAST_0, doc
from calql_vision.startup import run_program

DESCRIPTION = __doc__.splitlines()[0] + """

Each demo becomes an episode and each obs row a frame: camera images as
observation.images.<key> (PNG inside the parquet files, so frames are exact), other
observations as observation.<key>, then action, next.reward and next.done. Train demos come
first and the file's valid demos last, as LeRobot's splits {"train", "valid"}; every episode
keeps its source demo's name (source_demo in meta/episodes). LeRobot keeps no next
observation, so a demo's final next_obs is not written. The result loads with LeRobot's own
LeRobotDataset(repo_id, root=out), and trains here with dataset=<out>. The directory is built
under a temporary name beside `out` and moved into place when complete; an existing `out` is
an error unless overwrite=true."""


@dataclass
class ExportConfig:
    dataset: Optional[str] = doc(None, "robomimic-layout HDF5 file to export; required")
    out: Optional[str] = doc(None, "output directory; null = the dataset's path without .hdf5, plus _lerobot")
    task: Optional[str] = doc(None, "the episodes' task string; null = the file's env_name (e.g. Lift)")
    fps: int = doc(0, "frames per second in info.json; 0 = the file's control_freq (robosuite: 20)", valid=AT_LEAST_0)
    overwrite: bool = doc(False, "replace an existing `out` directory")


def main(argv: list[str] | None = None) -> int:
    from datasets import DatasetError
    from datasets.lerobot_writer import export_lerobot

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(ExportConfig, argv, "calql_vision.export_lerobot", DESCRIPTION)
        if cfg.dataset is None:
            raise ConfigError("dataset=<robomimic HDF5 file> is required")
        out = Path(cfg.out) if cfg.out else Path(cfg.dataset).with_name(Path(cfg.dataset).stem + "_lerobot")
        info = export_lerobot(cfg.dataset, out, task=cfg.task, fps=cfg.fps or None, overwrite=cfg.overwrite)
    except (ConfigError, DatasetError, FileExistsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the temporary directory is removed on the way out
        print("stopped by SIGINT: nothing written", file=sys.stderr)
        return 130
    print(f"wrote {out}: {info['total_episodes']} episodes, {info['total_frames']} frames, splits {info['splits']}, "
          f"fps {info['fps']} (LeRobotDataset {info['codebase_version']}); train on it with dataset={out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
