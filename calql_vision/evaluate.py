"""Evaluate a trained run's checkpoint on fixed seeds and record videos.

    python -m calql_vision.evaluate run=runs/lift_visual/calql/<timestamp> episodes=50
    python -m calql_vision.evaluate run=<run dir> checkpoint=step_20000.pt video_episodes=5
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from calql_vision.atomic_file import atomic_file
from calql_vision.config import THREADS_HELP, ConfigError, load_config, load_run_config
from calql_vision.config_fields import AT_LEAST_0, AT_LEAST_1, OneOf, Range, doc
from calql_vision.run_dir import RunDir
from calql_vision.startup import run_program

DESCRIPTION = __doc__.splitlines()[0] + """

Rebuilds the task and the agent from <run>/config.yaml, loads a checkpoint (default
<run>/checkpoints/latest.pt) and rolls out the deterministic policy for `episodes` episodes
with scene seeds seed, seed+1, ...; by default the seeds of the training-time evaluations,
so the numbers are comparable with eval_success_rate in metrics.csv. Frames are rendered
as the run's task.render_quality says (runs from before the setting: full); render_quality=
full|fast renders them the other way, to measure what a mismatch costs (the output directory
then ends in -<quality>). Writes
<run>/eval/<checkpoint name>-seed<seed>/summary.json (success rate with a Wilson 95%
interval, the fraction of episodes in which the gripper held the object at some step,
returns, lengths, per-episode results) and episode_<i>.mp4 videos: the scene at
video_size beside the policy's own camera view, with the step and success written on.
With num_envs=<n> the episodes run in n environment processes at once; each episode depends
on its seed alone, so the results are the same for any n."""

WILSON_Z95 = 1.959964


@dataclass
class EvaluateConfig:
    run: Optional[str] = doc(None, "run directory to evaluate (runs/<task>/<algo>/<timestamp>); required")
    checkpoint: Optional[str] = doc(
        None, "checkpoint file; null = <run>/checkpoints/latest.pt; a bare name (step_4000.pt) is looked up in <run>/checkpoints/"
    )
    episodes: int = doc(10, "number of evaluation episodes", valid=AT_LEAST_1)
    seed: Optional[int] = doc(
        None, "scene seed of episode 0 (episode i gets seed + i); null = the run's training-time evaluation seeds",
        valid=AT_LEAST_0,
    )
    video: bool = doc(True, "record videos of the first video_episodes episodes")
    video_episodes: int = doc(3, "how many episodes (from the first) to record", valid=AT_LEAST_0)
    video_size: int = doc(
        256, "height of the video; frames are video_size x 2*video_size (scene | policy view; the scene alone for a "
        "task without cameras); even", valid=Range(16)
    )
    video_camera: Optional[str] = doc(None, "camera shown in the videos; one of the task's cameras; null = the first "
                                            "(agentview for a task without cameras, which may name any camera)")
    fps: int = doc(20, "frames per second of the videos (the task's control rate is 20 Hz by default)", valid=AT_LEAST_1)
    render_quality: Optional[str] = doc(
        None, "null = the run's task.render_quality; full | fast renders the episodes that way instead",
        valid=OneOf(("full", "fast")),
    )
    device: str = doc("auto", "auto (CUDA when present) | cpu | cuda | cuda:<i>")
    threads: int = doc(0, THREADS_HELP, valid=AT_LEAST_0)
    num_envs: int = doc(1, "environment processes running episodes at once (the results do not depend on it)",
                        valid=AT_LEAST_1)


# ---------------------------------------------------------------------- statistics
def wilson_interval(successes: int, n: int, z: float = WILSON_Z95) -> tuple[float, float]:
    """Wilson score interval of a success probability. Unlike the normal approximation it
    stays inside [0, 1] and is not empty at 0/n or n/n, which small evaluations often hit."""
    if n <= 0:
        raise ValueError(f"the interval needs at least one episode, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The bounds are exactly 0 and 1 at the extremes; rounding would leave 1e-17 otherwise.
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == n else min(1.0, centre + half_width)
    return low, high


# ---------------------------------------------------------------------- run directories
def available_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """Checkpoint names in <run>/checkpoints/, latest.pt first, then by step."""
    directory = RunDir(run_dir).checkpoints
    names = [p.name for p in directory.glob("*.pt")] if directory.is_dir() else []

    def order(name: str) -> tuple[int, int, str]:
        stem = Path(name).stem
        if stem == "latest":
            return (0, 0, name)
        step = stem.removeprefix("step_")
        return (1, int(step), name) if step.isdigit() else (2, 0, name)

    return sorted(names, key=order)


def resolve_checkpoint(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
    """`checkpoint` as a path, or as a name inside <run>/checkpoints/ (".pt" optional);
    None means latest.pt. A missing file raises FileNotFoundError listing what exists."""
    run = RunDir(run_dir)
    directory = run.checkpoints
    if checkpoint is None:
        candidates = [run.latest]
    else:
        given = Path(checkpoint)
        candidates = [given]
        if not given.is_absolute():
            candidates.append(directory / given)
        if given.suffix != ".pt":
            candidates += [c.with_name(c.name + ".pt") for c in list(candidates)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = available_checkpoints(run_dir)
    listing = f"available in {directory}: {', '.join(available)}" if available else f"{directory} holds no checkpoints"
    looked = " or ".join(str(c) for c in dict.fromkeys(candidates))
    raise FileNotFoundError(f"checkpoint not found: {looked}; {listing}")


def build_policy(cfg: DictConfig, agent_state: dict[str, Any], device: Any, num_envs: int = 1) -> tuple[Any, Any]:
    """The run's environment workers (envs.vector.EnvWorkers) and agent, with `agent_state`
    (a checkpoint's "agent") loaded."""
    from calql_vision.agents import ObsSpec, make_agent
    from calql_vision.hardware import egl_device
    from envs.vector import EnvWorkers

    # The same construction seed as training, so nothing differs from its evaluations.
    workers = EnvWorkers(cfg.task, num_envs, seed=cfg.seed, egl_device=egl_device(device))
    try:
        size = int(cfg.task.image_size)
        spec = ObsSpec(tuple(workers.image_keys), (3, size, size), workers.proprio_dim, workers.action_dim)
        agent = make_agent(cfg.algo, cfg.encoder, spec, device, cfg.precision)
        try:
            agent.load_state_dict(agent_state)
        except (KeyError, RuntimeError) as error:
            raise ConfigError(f"the checkpoint's networks do not match the run's config.yaml: {error}") from None
    except BaseException:
        workers.close()
        raise
    return workers, agent


def _read_checkpoint(path: Path) -> dict[str, Any]:
    from calql_vision.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except ValueError as error:  # truncated or foreign file: a bad argument, not a crash
        raise ConfigError(str(error)) from None


def load_policy(
    run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None, device: str = "auto", num_envs: int = 1
) -> tuple[DictConfig, Any, Any, Path]:
    """(run config, environment workers, agent, checkpoint path) from a run directory; the
    agent acts with `agent.act(obs, deterministic=True)`. The caller closes the workers."""
    from calql_vision.hardware import resolve_device

    cfg = load_run_config(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    state = _read_checkpoint(path)
    workers, agent = build_policy(cfg, state["agent"], resolve_device(device), num_envs)
    return cfg, workers, agent, path


# ---------------------------------------------------------------------- the program
def _atomic_write_json(path: Path, data: Any) -> None:
    with atomic_file(path) as handle:
        handle.write((json.dumps(data, indent=2) + "\n").encode())


def _video_camera(cfg: DictConfig, run_cfg: DictConfig) -> str:
    """The video camera, checked against the run's (the numbers are checked by their ranges)."""
    from calql_vision.video import video_camera

    cameras = list(run_cfg.task.cameras)
    camera = cfg.video_camera or video_camera(cameras)
    # The right half of a frame is the policy's observation, which exists only for its cameras;
    # a state policy's video shows the scene alone, from any camera.
    if cameras and camera not in cameras:
        raise ConfigError(f"video_camera={camera}: the run's policy sees only {cameras}")
    return camera


def evaluate_run(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """Run the evaluation that `cfg` (an EvaluateConfig) describes; returns (summary, output dir)."""
    if cfg.run is None:
        raise ConfigError("run=<run directory> is required, e.g. run=runs/lift_visual/calql/<timestamp>")
    run_dir = Path(cfg.run)
    run_cfg = load_run_config(run_dir)
    checkpoint_path = resolve_checkpoint(run_dir, cfg.checkpoint)
    camera = _video_camera(cfg, run_cfg)

    # Heavy imports only now, so that --help and argument errors answer at once.
    import torch
    from tqdm import tqdm

    from calql_vision.hardware import choose_threads
    from calql_vision.evaluation import evaluate_policy, evaluation_seed
    from calql_vision.hardware import resolve_device
    from calql_vision.video import EpisodeVideo, write_mp4

    seed = int(cfg.seed) if cfg.seed is not None else evaluation_seed(int(run_cfg.seed))
    out_dir = RunDir(run_dir).evaluation(checkpoint_path.stem, seed)
    trained_quality = run_cfg.task.render_quality
    if cfg.render_quality is not None and cfg.render_quality != trained_quality:
        run_cfg.task.render_quality = cfg.render_quality
        # Beside the run's own evaluation of these seeds, never over it.
        out_dir = out_dir.with_name(f"{out_dir.name}-{cfg.render_quality}")
        print(f"note: the run trained with render_quality={trained_quality}; evaluating with {cfg.render_quality}",
              file=sys.stderr)
    threads, threads_why = choose_threads(cfg.threads)
    torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    state = _read_checkpoint(checkpoint_path)
    counters = state.get("counters", {})
    workers, agent = build_policy(run_cfg, state["agent"], device, cfg.num_envs)

    videos: dict[int, str] = {}
    recording: dict[int, EpisodeVideo] = {}
    recorded = min(cfg.video_episodes, cfg.episodes) if cfg.video else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=cfg.episodes, desc="evaluate", unit="episode")
    successes = 0

    def on_frame(episode: int, obs: dict, info: dict, renderer: Any) -> None:
        # The first call carries the reset observation (step 0), then one per step.
        if episode < recorded:
            video = recording.setdefault(episode, EpisodeVideo(camera, cfg.video_size))
            video.add(renderer, obs, info, step=len(video))

    def on_episode_end(episode: int, result: Any) -> None:
        # Each video is written as soon as its episode ends, not all held in memory.
        nonlocal successes
        if episode in recording:
            name = f"episode_{episode}.mp4"
            write_mp4(out_dir / name, recording.pop(episode).frames, fps=cfg.fps)
            videos[episode] = name
        successes += result.success
        bar.update(1)
        bar.set_postfix(success=f"{successes}/{bar.n}")

    try:
        result = evaluate_policy(workers, lambda obs, episode: agent.act(obs, deterministic=True), cfg.episodes, seed,
                                 on_frame=on_frame, on_episode_end=on_episode_end)
    finally:
        bar.close()
        workers.close()
    # Videos of an earlier evaluation into the same directory that this one did not redo
    # (it recorded fewer episodes) would no longer match summary.json.
    for stale in out_dir.glob("episode_*.mp4"):
        if stale.name not in videos.values():
            stale.unlink()

    successes = sum(e.success for e in result.episodes)
    low, high = wilson_interval(successes, len(result.episodes))
    summary = {
        "run": str(run_dir),
        "checkpoint": str(checkpoint_path),
        "step": counters.get("step"),
        "env_step": counters.get("env_step"),
        "task": run_cfg.task.name,
        "algo": run_cfg.algo.name,
        "seed": seed,
        "render_quality": workers.render_quality,
        "episodes": len(result.episodes),
        "successes": successes,
        "success_rate": result.success_rate,
        "success_ci95": [low, high],
        "grasp_rate": result.grasp_rate,
        "mean_return": result.mean_return,
        "mean_length": result.mean_length,
        "per_episode": [
            {
                "seed": e.seed,
                "success": bool(e.success),
                "grasped": bool(e.grasped),
                "return": float(e.episode_return),
                "length": int(e.length),
                "video": videos.get(i),
            }
            for i, e in enumerate(result.episodes)
        ],
    }
    # Written last and atomically: a summary.json present means a finished evaluation.
    _atomic_write_json(out_dir / "summary.json", summary)
    return summary, out_dir


def main(argv: list[str] | None = None) -> int:
    from envs.vector import EnvWorkerError

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(EvaluateConfig, argv, "calql_vision.evaluate", DESCRIPTION)
        summary, out_dir = evaluate_run(cfg)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # summary.json is written last: nothing half-done is left
        print("stopped by SIGINT: no summary written", file=sys.stderr)
        return 130
    except EnvWorkerError as error:
        print(f"error: {error}; no summary written", file=sys.stderr)
        return 1
    low, high = summary["success_ci95"]
    print(
        f"{Path(summary['checkpoint']).name} (step {summary['step']}, env step {summary['env_step']}): "
        f"success {summary['successes']}/{summary['episodes']} = {summary['success_rate']:.0%} "
        f"(95% CI {low:.0%}-{high:.0%}), grasped in {summary['grasp_rate']:.0%}, mean return {summary['mean_return']:.2f}, "
        f"mean length {summary['mean_length']:.1f}, seeds {summary['seed']}..{summary['seed'] + summary['episodes'] - 1}, "
        f"render_quality={summary['render_quality']}"
    )
    print(f"wrote {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
