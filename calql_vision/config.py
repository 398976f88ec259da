"""Typed config schemas and the `key=value` command line shared by every program.

Each program declares a dataclass schema; every field carries a `help` string, so
`--help` explains itself. Group keys (`task=<name>`) load `configs/<group>/<name>.yaml`
into that section; `algo=<name>` also gives the `algo` section that algorithm's own schema
(calql_vision/algo_configs.py). The merge runs in OmegaConf struct mode: a misspelt key, or
another algorithm's key, is an error that lists the valid keys.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from calql_vision.algo_configs import ALGO_SCHEMAS, AlgoConfig, CalQLConfig
from calql_vision.config_fields import AT_LEAST_0, AT_LEAST_1, OneOf, Range, doc
from calql_vision.run_dir import RunDir
from calql_vision.validation import config_problems

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
# Group files loaded when the command line names none, so the files stay the single source
# of each group's values (the schema defaults only give types and help).
DEFAULT_GROUPS = {"task": "lift_visual", "algo": "calql", "encoder": "conv"}
# precision=auto resolves to bf16 or fp32 by the hardware (calql_vision/hardware.py).
PRECISIONS = OneOf(("auto", "bf16", "fp32"))
THREADS_HELP = "torch CPU threads; 0 = auto: the cores this process may use (affinity mask and cgroup CPU quota)"
# envs.render_quality.RENDER_QUALITY_SETTINGS, spelt out here because importing `envs` sets up
# headless GL, which `--help` and config errors must not need.
RENDER_QUALITY_SETTINGS = OneOf(("auto", "full", "fast"))
# Where metric rows go besides metrics.csv (calql_vision/metrics.py, calql_vision/wandb_run.py).
LOGGERS = ("tensorboard", "wandb")
# What is logged, not what is trained: a resume and an offline control may change these.
LOGGING_SETTINGS = ("logger", "wandb_project", "wandb_entity", "wandb_group", "wandb_tags", "wandb_mode")


@dataclass
class TaskConfig:
    name: str = doc("lift_visual", "task name; configs/task/<name>.yaml")
    env_name: str = doc("Lift", "robosuite environment class, e.g. Lift, PickPlaceCan")
    robot: str = doc("Panda", "robosuite robot (default composite OSC_POSE controller)")
    cameras: list = doc(["agentview"], "cameras rendered into the observation; [] = a low-dim task: the policy sees "
                                       "the proprio_keys vector only, and nothing is rendered but videos")
    image_size: int = doc(84, "square camera resolution in pixels", valid=Range(8))
    horizon: int = doc(100, "steps before an episode is truncated", valid=AT_LEAST_1)
    control_freq: int = doc(20, "control steps per second", valid=AT_LEAST_1)
    proprio_keys: list = doc(
        ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"],
        "low-dim keys concatenated into the state vector beside the images (robomimic's names; `object` is the "
        "object-state vector)",
    )
    scripted_policy: str = doc("lift", "scripted demonstrator: lift | pick_place", valid=OneOf(("lift", "pick_place")))
    demo_episodes: int = doc(100, "episodes in the task's default demonstration set", valid=AT_LEAST_1)
    demo_noise: float = doc(0.3, "action-noise std of the default demonstration set", valid=AT_LEAST_0)
    render_quality: str = doc(
        "auto", "camera frames: full (robosuite's renderer: 4x multisampling, reflections) | fast (neither; "
        "~2.5x faster steps on a CPU) | auto (the training dataset's recorded setting; fast without one)",
        valid=RENDER_QUALITY_SETTINGS,
    )


@dataclass
class CollectConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    episodes: int = doc(50, "number of episodes to roll out", valid=AT_LEAST_1)
    noise: float = doc(0.0, "std of Gaussian noise added to the scripted actions (then clipped)", valid=AT_LEAST_0)
    out: str = doc("data/demos.hdf5", "output HDF5 file (robomimic layout)")
    seed: int = doc(0, "seed of episode i is seed + i; noise is seeded from it too", valid=AT_LEAST_0)
    only_success: bool = doc(False, "keep only successful episodes")
    valid_fraction: float = doc(
        0.1, "fraction of demos listed in mask/valid (the rest in mask/train)",
        valid=Range(0, 1, high_open=True),
    )
    overwrite: bool = doc(False, "replace an existing `out` file (otherwise an existing file is an error)")
    num_envs: int = doc(1, "environment processes recording episodes at once (the file is the same for any value)",
                        valid=AT_LEAST_1)


class ConfigError(ValueError):
    """A bad command line or config file; the message says what is valid."""


def _help_lines(schema: type, prefix: str = "", defaults: DictConfig | None = None) -> list[str]:
    lines = []
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None) or (
            f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())
        ):
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.type
            sub_schema = type(sub)
            available = sorted(p.stem for p in (CONFIG_ROOT / f.name).glob("*.yaml"))
            lines.append(f"  {name}=<name>".ljust(34) + f"load configs/{f.name}/<name>.yaml: {' | '.join(available)}")
            if f.name == "algo" and defaults is not None:
                # Each algorithm has its own keys: show the loaded one's, say how to see another's.
                sub_schema = OmegaConf.get_type(defaults[f.name])
                lines.append(" " * 34 + f"keys below: algo={defaults[f.name].name}; `algo=<name> --help` shows another's")
            lines += _help_lines(sub_schema, prefix=f"{name}.", defaults=defaults[f.name] if defaults else None)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if defaults is not None:  # the value after configs/base.yaml, not the schema's own
            default = OmegaConf.to_container(defaults)[f.name]
        entry = f"  {name}={default}"
        # Long defaults push the explanation onto its own line.
        pad = "\n" + " " * 34 if len(entry) >= 34 else ""
        valid = f.metadata.get("valid")
        # Choices are already in each help text; ranges are not.
        shown = f"; valid: {valid}" if isinstance(valid, Range) else ""
        lines.append(entry.ljust(34) + pad + f.metadata.get("help", "") + shown)
    return lines


# The documentation page that explains each program (README.md links them all).
DOCS_PAGES = {
    "calql_vision.train": "docs/training.md",
    "calql_vision.collect": "docs/data.md",
    "calql_vision.export_lerobot": "docs/data.md",
    "calql_vision.evaluate": "docs/evaluation.md",
    "calql_vision.plot": "docs/evaluation.md",
    "calql_vision.compare": "docs/evaluation.md",
    "calql_vision.bench": "docs/performance.md",
    "calql_vision.bench_render": "docs/performance.md",
}


def format_help(schema: type, program: str, description: str, defaults: DictConfig | None = None) -> str:
    page = DOCS_PAGES.get(program)
    more = [f"More: {page} (every page: README.md, Documentation)", ""] if page else []
    return "\n".join(
        [f"usage: python -m {program} [key=value ...]", "", description.strip(), "", *more, "keys (default, meaning):"]
        + _help_lines(schema, defaults=defaults)
    )


def _group_names(schema: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(schema)
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())
    ]


def _default_encoder(argv: list[str]) -> str:
    """The encoder group a command line gets when it names none: `state` when the task it
    asks for (its last `task=`, and a `task.cameras=` override) has no cameras, else conv.
    Settled before anything merges, so it takes its place among the group files as before,
    ahead of a preset and the overrides."""
    tasks = [arg.split("=", 1)[1] for arg in argv if arg.startswith("task=")]
    path = CONFIG_ROOT / "task" / f"{tasks[-1] if tasks else DEFAULT_GROUPS['task']}.yaml"
    cameras = OmegaConf.load(path).get("cameras") if path.is_file() else None  # a bad name is reported later
    for arg in argv:
        if arg.startswith("task.cameras="):
            try:
                cameras = OmegaConf.from_dotlist([arg]).task.cameras
            except OmegaConfBaseException:  # reported by the merge
                pass
    return "state" if cameras is not None and len(cameras) == 0 else DEFAULT_GROUPS["encoder"]


def load_group_file(group: str, name: str) -> DictConfig:
    path = CONFIG_ROOT / group / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (CONFIG_ROOT / group).glob("*.yaml"))
        raise ConfigError(f"{group}={name}: no file {path}; available: {available}")
    return OmegaConf.load(path)


def _valid_keys(node: Any) -> list[str]:
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _merge(base: DictConfig, update: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except (ConfigAttributeError, ConfigKeyError) as error:
        key = getattr(error, "full_key", None) or str(error)
        parent = base
        parts = str(key).split(".")
        for part in parts[:-1]:
            parent = parent.get(part) if isinstance(parent, DictConfig) and part in parent else None
        raise ConfigError(
            f"unknown config key '{key}' (from {source}); valid keys here: {_valid_keys(parent)}"
        ) from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        where = f"{key}: " if key else ""
        raise ConfigError(f"bad config value (from {source}): {where}{_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    """OmegaConf's messages go on with `full_key:`/`object_type=` lines: keep the first."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def use_algo_schema(config: DictConfig, name: str) -> DictConfig:
    """Give `config.algo` the schema of algorithm `name` (its keys and types, schema defaults)."""
    if name not in ALGO_SCHEMAS:
        raise ConfigError(f"algo={name}: unknown algorithm; available: {sorted(ALGO_SCHEMAS)}")
    config.algo = OmegaConf.structured(ALGO_SCHEMAS[name])
    return config


def load_config(
    schema: type,
    argv: Sequence[str],
    program: str,
    description: str,
    presets: dict[str, dict] | None = None,
    base: DictConfig | None = None,
    base_file: str | None = None,
) -> DictConfig:
    """Schema defaults <- `base_file` (configs/<file>) <- `base` <- group files (`task=...`) <- preset <- `key=value` overrides.

    `base` is a saved config (a run directory's config.yaml when resuming). `algo=<name>`
    first switches `algo` to that algorithm's schema, so its keys, and only its keys, exist.
    `--help` prints the keys after the named groups are loaded (so `algo=iql --help` shows IQL's)."""
    argv = list(argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    argv = [a for a in argv if a not in ("-h", "--help")]
    groups = _group_names(schema)
    config = OmegaConf.structured(schema)
    OmegaConf.set_struct(config, True)
    if base_file is not None:
        config = _merge(config, OmegaConf.load(CONFIG_ROOT / base_file), f"configs/{base_file}")
    if base is not None:
        if "algo" in groups:
            config = use_algo_schema(config, str(OmegaConf.select(base, "algo.name", default="calql")))
        config = _merge(config, base, "the saved config")
    if base is None:  # a saved config already holds its groups' values
        named = {arg.split("=", 1)[0] for arg in argv if "=" in arg}
        defaults = {g: DEFAULT_GROUPS[g] for g in groups if g in DEFAULT_GROUPS and g not in named}
        if "encoder" in defaults:  # a task without cameras gets the state encoder
            defaults["encoder"] = _default_encoder(argv)
        argv = [f"{g}={name}" for g, name in defaults.items()] + argv
    overrides = []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value pairs, got '{arg}' (see --help)")
        key, value = arg.split("=", 1)
        if key == "logger" and not value.startswith("["):  # logger=wandb: a list of one
            arg = f"logger=[{value}]"
        if key in groups:
            group_config = load_group_file(key, value)
            if key == "algo":
                config = use_algo_schema(config, value)
            config = _merge(config, OmegaConf.create({key: group_config}), f"configs/{key}/{value}.yaml")
        elif key == "preset":
            if value == "none":  # no preset, not even the one a program picks for the machine
                continue
            if not presets or value not in presets:
                raise ConfigError(f"preset={value}: unknown; available: {sorted(presets or {})}")
            config = _merge(config, OmegaConf.create(presets[value]), f"preset={value}")
        else:
            overrides.append(arg)
    if wants_help:
        print(format_help(schema, program, description, defaults=config))
        sys.exit(0)
    config = _merge(config, OmegaConf.from_dotlist(overrides), "the command line")
    problems = config_problems(config)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


@dataclass
class EncoderConfig:
    kind: str = doc(
        "conv", "encoder: conv (DrQ-style) | resnet18 (GroupNorm, random init) for camera tasks; state for tasks "
        "without cameras (the default there)", valid=OneOf(("conv", "resnet18", "state")),
    )
    channels: int = doc(32, "conv channels per layer (conv encoder)", valid=AT_LEAST_1)
    strides: list = doc([2, 2, 1, 1], "one conv layer per entry, with this stride (conv encoder)", valid=AT_LEAST_1)
    kernel_size: int = doc(3, "conv kernel size (conv encoder)", valid=AT_LEAST_1)
    feature_dim: int = doc(64, "size of the image embedding after the projection (state encoder: of its MLP's output)",
                           valid=AT_LEAST_1)
    hidden_dims: list = doc([], "state encoder: MLP hidden sizes in front of the heads; [] = none, the heads read "
                                "the state vector itself", valid=AT_LEAST_1)
    augment_pad: int = doc(4, "random-shift padding in pixels for s and s' in training (0 = off)", valid=AT_LEAST_0)
    normalize_state: bool = doc(
        False, "scale each entry of the state / proprio vector by the offline data's mean and std, fixed at run "
               "creation and saved in checkpoints (encoders/normalize.py)",
    )


@dataclass
class TrainConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    algo: AlgoConfig = field(default_factory=CalQLConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    dataset: Optional[str] = doc(
        None, "robomimic-layout HDF5 file or LeRobotDataset v3 directory to pretrain on; "
        "null = the task's scripted demos (collected once)")
    allow_render_mismatch: bool = doc(
        False, "train although the dataset's frames were rendered with another task.render_quality (docs/performance.md, Render quality)"
    )
    filter_key: Optional[str] = doc("train", "mask/<key> of the dataset to train on (all demos if the file has no masks)")
    max_demos: Optional[int] = doc(None, "use at most this many demos", valid=AT_LEAST_1)
    reward_scale: float = doc(1.0, "r' = scale * r + bias, for both phases; the bias is the step's cost, so scaling "
                                   "the whole reward sets both (reward_scale=10 reward_bias=-10)")
    reward_bias: float = doc(-1.0, "r' = scale * r + bias (sparse 0/1 reward -> -1/0)")
    offline_steps: int = doc(100_000, "gradient steps of offline pretraining", valid=AT_LEAST_0)
    online_env_steps: int = doc(100_000, "environment steps of online fine-tuning", valid=AT_LEAST_0)
    batch_size: int = doc(256, "transitions per gradient step", valid=AT_LEAST_1)
    eval_every: int = doc(5_000, "gradient steps between evaluations (both phases)", valid=AT_LEAST_1)
    eval_early: int = doc(
        2, "n extra evaluations right after the switch, at eval_every/2^n, ..., eval_every/4, eval_every/2 updates "
        "into the online phase (and the offline control's): a drop there rests on more than one point",
        valid=AT_LEAST_0,
    )
    eval_episodes: int = doc(10, "episodes per evaluation (fixed seeds)", valid=AT_LEAST_1)
    eval_stochastic: bool = doc(
        True, "every evaluation also rolls out the stochastic (exploration) policy on the same scenes, logged as "
        "eval_stochastic_*: at the switch, the success the online data will have"
    )
    eval_video: bool = doc(True, "save the first episode of every evaluation as videos/step_<step>.mp4")
    video_size: int = doc(
        256, "pixel size of the scene in videos (the policy's view is shown beside it)",
        valid=Range(16),
    )
    log_every: int = doc(1_000, "gradient steps between metric rows", valid=AT_LEAST_1)
    logger: list = doc(
        ["tensorboard"], "where the metric rows go besides metrics.csv (always written): tensorboard, wandb, both "
        "(logger=[tensorboard,wandb]) or none (logger=[]); logger=wandb alone is accepted (docs/training.md, "
        "Weights & Biases)", valid=OneOf(LOGGERS),
    )
    wandb_project: str = doc("calql_vision", "W&B project")
    wandb_entity: Optional[str] = doc(None, "W&B entity (user or team); null = the account's default")
    wandb_group: Optional[str] = doc(None, "W&B group; compare sets it to the study's folder name")
    wandb_tags: list = doc([], "W&B tags; compare adds the algorithm and seed<k>")
    wandb_mode: str = doc(
        "auto", "auto (online when an API key is found, else offline, said in one line) | online | offline",
        valid=OneOf(("auto", "online", "offline")),
    )
    checkpoint_every: int = doc(10_000, "gradient steps between checkpoints", valid=AT_LEAST_1)
    seed: int = doc(0, "seed of networks, sampling and environments", valid=AT_LEAST_0)
    device: str = doc("auto", "auto (CUDA when present) | cpu | cuda | cuda:<i>")
    precision: str = doc(
        "auto", "encoder autocast: auto (bf16 where the device computes it natively, else fp32) | bf16 | fp32 "
        "(losses are always fp32)", valid=PRECISIONS,
    )
    threads: int = doc(0, THREADS_HELP, valid=AT_LEAST_0)
    num_envs: int = doc(
        1, "environment processes stepped in lock-step for online collection and evaluation (one batched policy "
        "call per step)", valid=AT_LEAST_1,
    )
    runs_root: str = doc("runs", "run directories go to <runs_root>/<task>/<algo>/<timestamp>")
    resume: Optional[str] = doc(None, "run directory to continue from its last checkpoint")
    init_from: Optional[str] = doc(
        None, "run directory or checkpoint whose agent starts the online phase (offline phase skipped)"
    )
    control_of: Optional[str] = doc(
        None, "run directory whose offline continuation control this is: that run's settings and its checkpoint at "
        "the switch, then offline training for as many updates as its online phase makes, evaluated at the same "
        "updates (rows of phase `control`); no online phase. Set by `compare control=true`, or by hand"
    )


@dataclass
class BenchConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    algo: AlgoConfig = field(default_factory=CalQLConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    batch_size: int = doc(256, "transitions per gradient step", valid=AT_LEAST_1)
    device: str = doc("auto", "auto | cpu | cuda")
    precision: str = doc("auto", "encoder autocast: auto (bf16 where native, else fp32) | bf16 | fp32", valid=PRECISIONS)
    threads: int = doc(0, THREADS_HELP, valid=AT_LEAST_0)
    num_envs: list = doc([1, 2], "environment steps/s are timed for each of these numbers of environment processes",
                         valid=AT_LEAST_1)
    warmup: int = doc(3, "untimed updates first", valid=AT_LEAST_0)
    windows: int = doc(5, "timed windows; the median is reported", valid=AT_LEAST_1)
    window_updates: int = doc(5, "updates per timed window", valid=AT_LEAST_1)
    env_steps: int = doc(100, "environment steps timed (with rendering)", valid=AT_LEAST_1)
    compare_precision: bool = doc(True, "also time the first phase in the other precision (bf16 / fp32), side by side")


# ---------------------------------------------------------------------- run directories
def _known_keys_only(saved: dict, schema: dict, prefix: str = "") -> tuple[dict, list[str]]:
    """The saved config without keys the current schema lacks (runs made by older code)."""
    kept: dict = {}
    dropped: list[str] = []
    for key, value in saved.items():
        if key not in schema:
            dropped.append(f"{prefix}{key}")
        elif isinstance(value, dict) and isinstance(schema[key], dict):
            kept[key], more = _known_keys_only(value, schema[key], f"{prefix}{key}.")
            dropped += more
        else:
            kept[key] = value
    return kept, dropped


def upgrade_saved_settings(saved: dict) -> dict:
    """An older run's settings (a config.yaml, or the config inside a checkpoint) in today's
    keys, in place, with the values that run actually used where a setting came later."""
    for key in ("utd", "mixing_ratio"):  # top-level keys before they became algorithm settings
        if key in saved:
            saved.setdefault("algo", {}).setdefault(key, saved.pop(key))
    if isinstance(saved.get("task"), dict):
        # Runs from before the setting rendered with robosuite's own renderer.
        saved["task"].setdefault("render_quality", "full")
    if isinstance(saved.get("encoder"), dict):
        # Runs from before the setting read the raw state.
        saved["encoder"].setdefault("normalize_state", False)
    return saved


def load_run_config(run_dir: str | os.PathLike) -> DictConfig:
    """A run's config.yaml on top of the current TrainConfig defaults: keys added to the
    schema since the run get their defaults, keys it no longer has are ignored (with a note)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = RunDir(run_dir).config
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no config.yaml")
    schema = OmegaConf.structured(TrainConfig)
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        try:
            schema = use_algo_schema(schema, str((saved.get("algo") or {}).get("name", "calql")))
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        upgrade_saved_settings(saved)
        kept, dropped = _known_keys_only(saved, OmegaConf.to_container(schema))
        config = OmegaConf.merge(schema, kept)
    except (OmegaConfBaseException, yaml.YAMLError, AttributeError, TypeError) as error:
        # A damaged or hand-broken file (not YAML, or not a mapping of settings).
        raise ConfigError(f"cannot read {path}: {_first_line(error)}") from None
    if dropped:
        print(f"note: {path} has keys this version does not know; ignored: {dropped}", file=sys.stderr)
    return config
