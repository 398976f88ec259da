"""The training data of a run: the task's default demonstration file (collected once), the
render quality its frames were made with, and the checks that the file fits the task."""
from __future__ import annotations

import sys
from pathlib import Path

from calql_vision.config import ConfigError


def default_dataset_path(task) -> Path:
    """data/<task>_scripted_<n>ep_noise<std>_<size>px[_<render quality>].hdf5 (`_state.hdf5` for a
    task without cameras); the render
    quality is named unless it is `full`, so files collected before the setting existed (all
    `full`) keep their names and are never taken for another quality's."""
    from envs.render_quality import resolve_render_quality

    noise = f"{task.demo_noise:g}".replace(".", "p")
    if len(task.cameras) == 0:  # low-dim demos: no frames, so no size or render quality
        return Path("data") / f"{task.name}_scripted_{task.demo_episodes}ep_noise{noise}_state.hdf5"
    quality = resolve_render_quality(task.render_quality)
    suffix = "" if quality == "full" else f"_{quality}"
    return Path("data") / f"{task.name}_scripted_{task.demo_episodes}ep_noise{noise}_{task.image_size}px{suffix}.hdf5"


def dataset_render_quality(path: Path) -> str:
    """The render quality `path`'s frames were made with (`full` when the file has no record)."""
    from datasets import DatasetError, read_env_args
    from envs.render_quality import recorded_render_quality

    try:
        return recorded_render_quality(read_env_args(path), str(path))
    except DatasetError:
        raise
    except ValueError as error:
        raise DatasetError(str(error)) from None


def resolve_task_render_quality(cfg) -> None:
    """Settle task.render_quality=auto, before anything renders or config.yaml is written (so
    evaluate and resume render the same way): the recorded setting of the dataset the run
    trains on; `fast` when it reads none or collects the task's scripted demos (collected with
    the setting this resolves to, into a file named by it). An explicit setting other than
    the dataset's is a ConfigError unless allow_render_mismatch: measured, a policy trained on
    full frames lost half its success on fast ones."""
    from calql_vision.agents import algorithm
    from envs.render_quality import WHAT_EACH_RENDERS, resolve_render_quality

    # A low-dim task's policy sees no frames: the render quality is its videos' alone.
    reads_frames = cfg.dataset is not None and algorithm(cfg.algo.name).uses_dataset and len(cfg.task.cameras) > 0
    recorded = dataset_render_quality(Path(cfg.dataset)) if reads_frames else None
    if cfg.task.render_quality == "auto":
        cfg.task.render_quality = resolve_render_quality("auto", recorded)
    elif recorded is not None and recorded != cfg.task.render_quality and not cfg.allow_render_mismatch:
        raise ConfigError(
            f"dataset={cfg.dataset} was rendered with render_quality={recorded} ({WHAT_EACH_RENDERS[recorded]}) but "
            f"task.render_quality={cfg.task.render_quality}; a policy trained on one kind of frame can act much worse "
            f"on the other (docs/performance.md, Render quality): use task.render_quality=auto, or allow_render_mismatch=true"
        )


def warn_if_rendered_differently(path: Path, env) -> None:
    """One line on stderr when the dataset's frames were rendered otherwise than the env's."""
    from envs.render_quality import mismatch_warning

    if not env.image_keys:  # a low-dim task reads no frames
        return
    warning = mismatch_warning(str(path), dataset_render_quality(path), env.render_quality)
    if warning:
        print(warning, file=sys.stderr)


def prepare_dataset(cfg) -> Path:
    """The configured dataset (HDF5 file or LeRobot v3 directory), or the task's scripted
    demonstrations (collected once)."""
    if cfg.dataset is not None:
        from datasets import DatasetFileNotFoundError, check_dataset_path

        try:
            check_dataset_path(cfg.dataset)
        except DatasetFileNotFoundError as error:
            raise ConfigError(f"dataset={error}") from None
        return Path(cfg.dataset)
    path = default_dataset_path(cfg.task)
    if not path.is_file():
        from calql_vision.collect import collect_demonstrations

        print(f"no dataset configured: collecting {cfg.task.demo_episodes} scripted demos into {path}")
        stats = collect_demonstrations(cfg.task, cfg.task.demo_episodes, cfg.task.demo_noise, str(path), seed=0,
                                       num_envs=cfg.num_envs)
        print(f"scripted success {stats['success_rate']:.0%}; reused by later runs")
    return path


def dataset_filter_key(path: Path, masks: dict[str, int] | None, filter_key: str | None) -> str | None:
    """Use the filter key when the file has masks at all (`masks`: read_mask_names(path));
    files without masks train on everything."""
    if filter_key is None:
        return None
    if masks is None:
        print(f"note: {path} has no mask group; training on all demos (filter_key={filter_key} ignored)")
        return None
    return filter_key


def check_dataset_matches_env(dataset, env, path: Path) -> None:
    for key in env.image_keys:
        expected = (3, env.image_size, env.image_size)
        if key not in dataset.images:
            raise ConfigError(f"{path}: dataset has no image key '{key}' that the task's cameras need")
        shape = tuple(dataset.images[key].shape[1:])
        if shape != expected:
            raise ConfigError(
                f"{path}: '{key}' frames are {shape} (C,H,W) but the task renders {expected}; "
                f"set task.image_size={shape[1]} or use a matching dataset"
            )
    if dataset.actions.shape[1] != env.action_dim:
        raise ConfigError(f"{path}: actions have {dataset.actions.shape[1]} dims, the env takes {env.action_dim}")
