"""Roll out a scripted demonstrator and record the episodes in the robomimic HDF5 layout.

    python -m calql_vision.collect task=lift_visual episodes=50 noise=0.1 out=data/lift.hdf5
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from calql_vision.config import CollectConfig, ConfigError, load_config
from calql_vision.file_lock import LockHeld, lock_exclusively
from calql_vision.startup import run_program
from datasets.robomimic_writer import OutputError, RobomimicWriter

DESCRIPTION = __doc__.splitlines()[0] + """

Each episode starts from reset(seed = seed + i); Gaussian action noise of std `noise` is
added to the scripted action and clipped to [-1, 1]. `episodes` is the number of rollouts;
with only_success=true failed rollouts are not written. With num_envs=<n>, n environment
processes record episodes at once; they are written in seed order, so the file is the same
for any n. Frames are rendered with task.render_quality (auto collects `fast`), and the
setting is recorded in the file's env_args (`render_quality`, beside robomimic's keys), so
training can follow it.

The file is written under a temporary name beside `out` (`.<name>.<pid>.tmp`) and moved into
place only when complete. An existing `out` is an error unless overwrite=true; without it, a
file that appears at `out` during the collection is kept, never replaced. While it runs, the
collector holds an exclusive lock on `.<name>.lock` beside `out`, so a second collector for
the same file stops at once, naming the first one's pid. A failed write (a full disk) stops
the collection with an error naming `out`; the temporary file is removed and an existing
`out` is left unchanged. These errors, like a bad command line, exit with status 2."""


def collect_demonstrations(
    task,
    episodes: int,
    noise: float,
    out: str,
    seed: int = 0,
    only_success: bool = False,
    valid_fraction: float = 0.1,
    show_progress: bool = True,
    overwrite: bool = False,
    num_envs: int = 1,
) -> dict[str, Any]:
    """Write `episodes` scripted rollouts of `task` to `out`; returns success statistics.

    Episodes run in `num_envs` environment processes at once and are written in seed order,
    so the file does not depend on `num_envs`. Raises OutputError when `out` exists (without
    `overwrite`), another collector is writing it, or a write fails; `out` is then left as
    it was."""
    from envs.scripted import make_scripted_policy
    from envs.vector import EnvWorkers

    if episodes < 1:
        raise ConfigError(f"episodes must be at least 1, got {episodes}")
    if noise < 0:
        raise ConfigError(f"noise is a standard deviation and must be >= 0, got {noise}")
    out = Path(out)
    with output_lock(out):
        # Checked before the environment is built, so a wrong out= fails in a moment.
        check_output(out, overwrite)
        make_scripted_policy(task.scripted_policy)  # an unknown name fails here, not in a worker
        workers = EnvWorkers(task, num_envs, seed=seed)
        successes, lengths = [], []
        try:
            with RobomimicWriter(out, workers.env_args, overwrite=overwrite) as writer, tqdm(
                total=episodes, desc=f"collect {task.name}", unit="ep", disable=not show_progress
            ) as bar:
                seeds = [seed + i for i in range(episodes)]
                for _, episode in workers.scripted_episodes(seeds, noise, task.scripted_policy):
                    bar.update(1)
                    successes.append(episode["success"])
                    lengths.append(len(episode["actions"]))
                    bar.set_postfix(success=f"{sum(successes)}/{len(successes)}")
                    if episode["success"] or not only_success:
                        writer.add_demo(**{k: v for k, v in episode.items() if k != "success"})
                if writer.num_demos == 0:
                    raise RuntimeError(f"no successful episode in {episodes}; nothing written to {out}")
                writer.finish(valid_fraction=valid_fraction, seed=seed)
                kept = writer.num_demos
        finally:
            workers.close()
    return {
        "out": str(out),
        "episodes": episodes,
        "demos_written": kept,
        "success_rate": float(np.mean(successes)),
        "mean_length": float(np.mean(lengths)),
        "render_quality": workers.render_quality,
    }


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a directory, and an existing file unless `overwrite`."""
    if out.is_dir():
        raise OutputError(f"out={out} is a directory; name a file")
    if out.exists() and not overwrite:
        raise OutputError(f"out={out} exists; pass overwrite=true to replace it")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `.<name>.lock` beside `out` for the block.

    Two collectors writing the same file would each move their own file into place and one
    set of demos would be lost; with the lock the second one stops at once instead."""
    lock_path = out.with_name(f".{out.name}.lock")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = lock_exclusively(lock_path)
    except LockHeld as held:
        raise OutputError(
            f"out={out} is being written by another collector ({held.holder}, lock {lock_path}); "
            "wait for it to finish or choose another out="
        ) from None
    except OSError as error:
        # Named as the user gave it: the lock file beside it is this program's detail.
        raise OutputError(f"out={out}: cannot write there ({error.strerror or error})") from error
    try:
        yield
    finally:
        # Removed while still held: a collector that opened it before now finds it replaced
        # and tries again (see lock_exclusively) rather than locking a deleted file.
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(CollectConfig, argv, "calql_vision.collect", DESCRIPTION)
        stats = collect_demonstrations(
            cfg.task, cfg.episodes, cfg.noise, cfg.out, cfg.seed, cfg.only_success, cfg.valid_fraction,
            overwrite=cfg.overwrite, num_envs=cfg.num_envs,
        )
    except (ConfigError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the temporary file is already gone (RobomimicWriter's exit)
        print("stopped by SIGINT: no demonstrations written", file=sys.stderr)
        return 130
    print(
        f"wrote {stats['demos_written']} demos to {stats['out']}: scripted success "
        f"{stats['success_rate']:.0%} over {stats['episodes']} episodes, mean length {stats['mean_length']:.0f} steps, "
        f"render_quality={stats['render_quality']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
