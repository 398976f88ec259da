"""The launch path of `python -m calql_vision.train`: the command line to a Launch, before
anything trains. A new run (with the preset the machine gets), a resume (checked against the
run's settings and checkpoint), an init_from pretraining, or an offline continuation control;
every check comes before a run directory exists, and a refused resume leaves its directory as
it was. The training loop itself is calql_vision/train.py's Trainer."""
from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import OmegaConf

from calql_vision.algo_configs import ALGO_SCHEMAS
from calql_vision.atomic_file import atomic_file
from calql_vision.config import (LOGGING_SETTINGS, ConfigError, TrainConfig, load_config, load_run_config,
                                 upgrade_saved_settings)
from calql_vision.control import CONTROL_SUFFIX, online_updates
from calql_vision.run_dir import RunDir, RunLock, find_resume_point
from calql_vision.training_data import resolve_task_render_quality
from calql_vision.validation import entropy_bonus_warning, field_problems
from calql_vision.wandb_run import require_wandb

DESCRIPTION = """Offline pretraining on a robomimic-layout HDF5, then online fine-tuning in the robosuite
task, from pixels (task=lift_visual | pick_place_visual) or from low-dim state keys without
rendering (task=lift_state | pick_place_state), with algo=calql (default) | cql | iql | aca |
wsrl (pretrain, then fine-tune) or sac | rlpd (online only; rlpd also samples the dataset). init_from=<run dir or checkpoint>
starts the online phase from another run's pretraining (e.g. wsrl or cql from a calql run).
With no `dataset`, the task's scripted demonstrations are
collected first (data/<task>_scripted_*.hdf5) and reused by later runs. Each run writes
runs/<task>/<algo>/<timestamp>/ with config.yaml, metrics.csv, tensorboard/, checkpoints/,
videos/ (one evaluation episode per evaluation), calibration/ (Q against reward-to-go) and
the online replay needed by resume=<run dir>. Besides the agent's losses, metrics.csv logs
the deterministic and the stochastic policy's evaluations (eval_*, eval_stochastic_*), the
training episodes that ended since the previous row (train_success_rate, train_return,
train_episodes), how many of either held the object at some step (*_grasp_rate) and how far
the policy and features moved on fixed dataset states (action_change, feature_change,
policy_std; docs/training.md).

resume=<run dir> continues from the newest intact checkpoint (latest.pt, else the newest
step_<n>.pt). {RESUMABLE}
A non-finite loss or parameter stops the run (exit code 3) without saving the diverged
state; Ctrl-C or SIGTERM stops it with a final checkpoint (exit code 130 or 143).

Presets: preset=quick runs the whole pipeline (collection included) in minutes on a CPU.
preset=cpu is picked by itself for a new run on a machine without a GPU: the paper-scale
defaults of configs/base.yaml resized to finish in about 2 hours on 2 cores (the first lines
say so); preset=none keeps the paper-scale defaults, and key=value overrides win over both."""

PRESETS: dict[str, dict[str, Any]] = {
    # The whole pipeline in under 15 minutes on 2 CPU cores: a small demo set, a small
    # encoder and batch, short phases. It shows the mechanics, not a trained policy.
    "quick": {
        "task": {"demo_episodes": 20, "image_size": 64},
        "encoder": {"channels": 16, "strides": [2, 2, 2, 1]},
        "offline_steps": 1000,
        "online_env_steps": 600,
        "batch_size": 64,
        "eval_every": 500,
        "eval_episodes": 3,
        "log_every": 50,
        "checkpoint_every": 500,
    },
    # What a run without a GPU gets unless it names a preset (machine_preset): the study
    # settings of the pixel results of docs/results.md (64 px, a 4-layer 16-channel encoder, batch 64:
    # 19 Cal-QL updates/s and 54 env steps/s on 2 AMD EPYC cores) and 20k + 20k steps, so
    # task=pick_place_visual (horizon 250) finishes in about 2 hours with collection.
    "cpu": {
        "task": {"image_size": 64},
        "encoder": {"channels": 16, "strides": [2, 2, 2, 1]},
        "offline_steps": 20_000,
        "online_env_steps": 20_000,
        "batch_size": 64,
        "eval_every": 2_000,
        "eval_episodes": 10,
        "log_every": 200,
        "checkpoint_every": 2_000,
    },
}


def machine_preset(argv: list[str]) -> tuple[list[str], str | None]:
    """(argv, note): a command line that names no preset and will not run on CUDA gets
    preset=cpu after its group files, so its own key=value overrides still win."""
    if any(arg.startswith("preset=") for arg in argv):
        return argv, None
    device = next((arg.split("=", 1)[1] for arg in reversed(argv) if arg.startswith("device=")), "auto")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return argv, None
    # Only a key=value of the same key beats the preset: group files (task=, encoder=) load before it.
    given = {arg.split("=", 1)[0] for arg in argv if "=" in arg}
    preset = [f"{key}={value}" for key, value in _dotted(PRESETS["cpu"]) if key not in given]
    return [*argv, "preset=cpu"], (f"note: no GPU, so preset=cpu sets {' '.join(preset) or 'nothing'} "
                                   "(what the command line sets stays); preset=none keeps the paper-scale "
                                   "settings of configs/base.yaml")


def _dotted(settings: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of a nested settings dict; lists print as key=value does."""
    for key, value in settings.items():
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", (f"[{','.join(map(str, value))}]" if isinstance(value, list) else value)


# Settings a resume may change: budgets, logging, the machine, and the learning rates (applied
# to the restored optimizers). Everything else shapes the networks, the data or the algorithm.
RESUMABLE = (
    "offline_steps", "online_env_steps", "eval_every", "eval_episodes", "eval_stochastic", "eval_video", "video_size",
    "log_every", "checkpoint_every", "device", "precision", "threads", "eval_early",
    "algo.actor_lr", "algo.critic_lr", "algo.alpha_lr", "algo.value_lr",
    *LOGGING_SETTINGS,
)
# Where a new run would go means nothing to a resume, which writes into the run it continues.
RESUME_IGNORES = ("resume", "runs_root")
# An offline continuation control (control_of) must train and evaluate as its run would have:
# only the machine and what is logged may differ, at its creation and on its resumes.
CONTROL_MAY_CHANGE = ("device", "precision", "threads", "log_every", "checkpoint_every", "eval_video", "video_size",
                      *LOGGING_SETTINGS)
DESCRIPTION = DESCRIPTION.replace("{RESUMABLE}", textwrap.fill(
    f"A resume may change only {', '.join(RESUMABLE)}; any other setting is fixed by the run.", width=92))


# What must agree between an init_from checkpoint's run and the run it starts: the networks'
# inputs and sizes. Keys of the algorithm's own networks are checked by loading the state.
INIT_FROM_SAME_KEYS = ("task.name", "task.cameras", "task.image_size", "task.proprio_keys", "encoder")


def _plain(config, key: str) -> Any:
    """The value at a dotted key as plain Python (lists and dicts compare by value)."""
    value = OmegaConf.select(config, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _same_setting(saved: Any, current: Any) -> bool:
    """Equal, where a section (a dict) compares only the keys the saved run knew: a key added
    to the schema since (encoder.hidden_dims) has its default, which the old run had too."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return all(_same_setting(value, current.get(key)) for key, value in saved.items())
    return saved == current


def init_from_checkpoint(cfg) -> dict:
    """The agent state of the offline checkpoint named by `init_from` (a run directory: its
    checkpoint at the end of pretraining; or a .pt file), checked against this run's config;
    ConfigError otherwise."""
    from calql_vision.agents import can_init_from
    from calql_vision.checkpoint import load_checkpoint

    source = Path(cfg.init_from)
    if source.is_dir():
        source_cfg = load_run_config(source)
        path = RunDir(source).checkpoint(source_cfg.offline_steps)
        if not path.is_file():
            raise ConfigError(f"init_from={source}: no checkpoint at the end of its pretraining ({path})")
    elif source.is_file():
        path = source
    else:
        raise ConfigError(f"init_from={source}: no such run directory or checkpoint file")
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as error:
        raise ConfigError(f"init_from={source}: {error}") from None
    saved = OmegaConf.create(upgrade_saved_settings(copy.deepcopy(checkpoint.get("config") or {})))
    source_algo = str(OmegaConf.select(saved, "algo.name", default="?"))
    if source_algo not in ALGO_SCHEMAS or not can_init_from(cfg.algo.name, source_algo):
        compatible = sorted(a for a in ALGO_SCHEMAS if can_init_from(cfg.algo.name, a))
        raise ConfigError(f"init_from={source}: a {source_algo} checkpoint cannot start algo={cfg.algo.name}; "
                          f"it needs one of {compatible}")
    if checkpoint["counters"].get("switched"):
        raise ConfigError(f"init_from={path}: taken after the switch to online; give a checkpoint of the offline phase")
    differ = [key for key in INIT_FROM_SAME_KEYS if not _same_setting(_plain(saved, key), _plain(cfg, key))]
    if differ:
        raise ConfigError(f"init_from={path}: these settings differ from the checkpoint's run: {differ}")
    if source_algo != cfg.algo.name:
        print(f"note: algo={cfg.algo.name} starts from {source_algo} pretraining ({path})")
    return checkpoint["agent"]


@dataclass
class Launch:
    """What the command line resolved to, before training starts."""

    cfg: Any
    run: RunDir
    lock: RunLock
    checkpoint: dict | None = None  # resume (and control_of): the checkpoint to continue from
    init_state: dict | None = None  # init_from: the agent state the online phase starts from
    created: bool = True  # the run directory was made by this launch (not a resume)

    @property
    def is_new(self) -> bool:
        return self.created

    def write_config(self) -> None:
        """config.yaml, atomically; a resume rewrites it only once everything has been checked."""
        with atomic_file(self.run.config) as handle:
            handle.write(OmegaConf.to_yaml(self.cfg).encode())

    def abandon(self) -> None:
        """Undo a launch that never started training: a new run directory goes entirely."""
        self.lock.release()
        if self.is_new:
            shutil.rmtree(self.run.root, ignore_errors=True)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"algo": {"critic_lr": x}} -> {"algo.critic_lr": x}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(saved, cfg) -> dict[str, tuple[Any, Any]]:
    """{"algo.critic_lr": (saved value, new value)} for every setting `cfg` changes from the
    run's `saved` config (where a new run would go aside)."""
    old = _flat(OmegaConf.to_container(saved, resolve=True))
    new = _flat(OmegaConf.to_container(cfg, resolve=True))
    return {k: (old.get(k), new[k]) for k in new if k not in RESUME_IGNORES and old.get(k) != new[k]}


def check_resume_changes(saved, cfg, checkpoint: dict, run: RunDir) -> None:
    """ConfigError listing every setting a resume asks to change that a run cannot change."""
    changed = changed_settings(saved, cfg)
    allowed = CONTROL_MAY_CHANGE if saved.get("control_of") is not None else RESUMABLE
    problems = [f"{k} ({before} -> {after})" for k, (before, after) in changed.items() if k not in allowed]
    counters = checkpoint["counters"]
    if "offline_steps" in changed and counters.get("switched"):
        problems.append("offline_steps (the run has already switched to online)")
    elif "offline_steps" in changed and cfg.offline_steps < counters["step"]:
        problems.append(f"offline_steps to {cfg.offline_steps} (the run is past it, at update {counters['step']})")
    if problems:
        raise ConfigError(f"resume={run.root}: a run cannot change {', '.join(problems)}; a resume may change only "
                          f"{', '.join(allowed)}. Start a new run (init_from=<run> keeps its pretraining) instead")


def resume_launch(run: RunDir, overrides: list[str]) -> Launch:
    """The run to continue, checked completely before anything in its directory changes."""
    from calql_vision.checkpoint import load_checkpoint

    saved = load_run_config(run.root)
    problems = field_problems(saved)  # a value edited by hand: the file is named, not the command line
    if problems:
        raise ConfigError(f"{run.config}: {'; '.join(problems)}")
    cfg = load_config(TrainConfig, overrides, "calql_vision.train", DESCRIPTION, presets=PRESETS, base=saved)
    cfg.resume = str(run.root)
    cfg.runs_root = saved.runs_root  # the run stays where it is
    require_wandb(cfg.logger)
    had_lock_file = run.lock_file.exists()
    lock = run.lock(announce=False)
    try:
        point = find_resume_point(run, load_checkpoint)
        if point is None and run.has_any_checkpoint():  # there are checkpoints, none usable: keep them
            raise ConfigError(f"resume={run.root}: no usable checkpoint in {run.checkpoints}")
        # No checkpoint at all: the run stopped before its first one and trained nothing that
        # could be kept, so it starts again from its saved settings in its own directory.
        checkpoint = point.checkpoint if point is not None else {"counters": {"step": 0, "switched": False}}
        check_resume_changes(saved, cfg, checkpoint, run)
        init_state = init_from_checkpoint(cfg) if point is None and cfg.init_from is not None else None
        if point is not None and point.skipped:
            print(f"note: resuming from {point.path} ({'; '.join(point.skipped)})")
        for stale in run.trainer_temporaries():  # left by a killed writer; ours, we hold the lock
            stale.unlink(missing_ok=True)
        if point is None:
            run.clear_training_outputs()  # what it had written goes first
            print(f"note: {run.root} stopped before its first checkpoint; it starts again from its saved settings")
        lock.announce()  # accepted: from here the run is this process's
    except BaseException:
        lock.release()
        if not had_lock_file:  # a refused resume leaves the directory as it found it
            run.lock_file.unlink(missing_ok=True)
        raise
    return Launch(cfg, run, lock, checkpoint=point.checkpoint if point is not None else None, init_state=init_state,
                  created=False)


def control_launch(source_dir: str, overrides: list[str]) -> Launch:
    """A new run directory, <runs_root>/<task>/<algo>-control/<timestamp>, holding the offline
    continuation control of the run at `source_dir` (calql_vision/control.py): its settings, its
    checkpoint at the switch as the one to continue from, and its rows up to the switch. Every
    check comes before the directory exists."""
    from calql_vision.agents import algorithm
    from calql_vision.checkpoint import load_checkpoint

    source = RunDir(Path(source_dir))
    what = f"control_of={source.root}"
    try:
        saved = load_run_config(source.root)
    except FileNotFoundError as error:
        raise ConfigError(f"{what}: {error}") from None
    if saved.control_of is not None:
        raise ConfigError(f"{what}: that run is itself a control; give the run it controls ({saved.control_of})")
    if not algorithm(saved.algo.name).pretrains or saved.init_from is not None:
        raise ConfigError(f"{what}: a {saved.algo.name} run without its own pretraining has no switch checkpoint"
                          + (f"; its pretraining came from {saved.init_from}" if saved.init_from else ""))
    if saved.offline_steps == 0:
        raise ConfigError(f"{what}: that run has no offline phase (offline_steps=0), so no switch checkpoint")
    if online_updates(saved) == 0:
        raise ConfigError(f"{what}: its online phase makes no update (online_env_steps={saved.online_env_steps}), "
                          f"so there is nothing to control")
    cfg = load_config(TrainConfig, overrides, "calql_vision.train", DESCRIPTION, presets=PRESETS, base=saved)
    cfg.control_of = str(source.root)
    require_wandb(cfg.logger)
    fixed = [f"{k} ({before} -> {after})" for k, (before, after) in changed_settings(saved, cfg).items()
             if k not in (*CONTROL_MAY_CHANGE, "control_of")]
    if fixed:
        raise ConfigError(f"{what}: a control keeps its run's settings and cannot change {', '.join(fixed)}")
    switch = source.checkpoint(saved.offline_steps)
    if not switch.is_file():
        raise ConfigError(f"{what}: no checkpoint at the end of its pretraining ({switch}); is it still pretraining?")
    try:
        checkpoint = load_checkpoint(switch)
    except ValueError as error:
        raise ConfigError(f"{what}: {error}") from None
    with new_run_directory(cfg.runs_root, cfg.task.name, cfg.algo.name + CONTROL_SUFFIX) as run:
        launch = Launch(cfg, run, run.lock(), checkpoint=checkpoint)
        # The rows up to the switch (the logger drops any later ones) and the switch's own
        # checkpoint and calibration: the control reads as one run, and resumes like one.
        shutil.copyfile(source.metrics, run.metrics)
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(switch, run.checkpoint(saved.offline_steps))
        for snapshot in source.calibrations():
            if int(snapshot.stem.split("_")[-1]) <= saved.offline_steps:
                run.calibration_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(snapshot, run.calibration_dir / snapshot.name)
        launch.write_config()
    return launch


def new_launch(argv: list[str]) -> Launch:
    argv, note = machine_preset(argv)
    cfg = load_config(TrainConfig, argv, "calql_vision.train", DESCRIPTION, presets=PRESETS, base_file="base.yaml")
    if note:
        print(note)
    require_wandb(cfg.logger)
    if cfg.dataset is not None:
        # Checked before the run directory exists, so a typo or a broken file leaves nothing behind.
        from datasets import DatasetFileNotFoundError, check_dataset_path, read_mask_names

        try:
            check_dataset_path(cfg.dataset)
        except DatasetFileNotFoundError as error:
            raise ConfigError(f"dataset={error}") from None
        read_mask_names(cfg.dataset)  # DatasetError for a file that is not readable HDF5 or LeRobot v3
    resolve_task_render_quality(cfg)
    from envs.robosuite_env import RobosuiteVisualEnv

    warning = entropy_bonus_warning(cfg, RobosuiteVisualEnv.action_dim)
    if warning:
        print(warning, file=sys.stderr)
    init_state = init_from_checkpoint(cfg) if cfg.init_from is not None else None
    with new_run_directory(cfg.runs_root, cfg.task.name, cfg.algo.name) as run:
        launch = Launch(cfg, run, run.lock(), init_state=init_state)
        launch.write_config()
    return launch


@contextlib.contextmanager
def new_run_directory(runs_root: str, task: str, algo: str) -> Iterator[RunDir]:
    """A new run directory for the block that fills it; a stop or a failure in the block
    removes it again, so no half-made run is ever left."""
    run = RunDir.create(runs_root, task, algo)
    try:
        yield run
    except BaseException:
        shutil.rmtree(run.root, ignore_errors=True)
        raise


def build(argv: list[str]) -> Launch:
    """Parse the command line into a Launch: a new run, or the run that resume= names."""
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    control = [a.split("=", 1)[1] for a in argv if a.startswith("control_of=")]
    if resume and resume[-1] not in ("null", ""):
        return resume_launch(RunDir(Path(resume[-1])), [a for a in argv if not a.startswith("resume=")])
    if control and control[-1] not in ("null", ""):
        return control_launch(control[-1], [a for a in argv if not a.startswith("control_of=")])
    return new_launch(argv)
