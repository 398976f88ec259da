"""Time environment steps under each render quality and measure how much their frames differ.

    python -m calql_vision.bench_render task=lift_visual steps=300
    python -m calql_vision.bench_render task=pick_place_visual task.image_size=64
"""
from __future__ import annotations

import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calql_vision.config import ConfigError, TaskConfig, load_config
from calql_vision.config_fields import AT_LEAST_0, AT_LEAST_1, doc
from calql_vision.startup import run_program

DESCRIPTION = __doc__.split("\n\n")[0] + """

One environment per render quality (full, fast), stepped in lockstep with the same uniform
random actions and reset with the same seeds, so both show the same states; their steps
alternate, so a machine that gets busier slows both alike. Prints, per quality, the median
time of a whole step (physics + one frame per camera) and of one extra render of the
first camera alone; the speed-up of fast; and the mean and largest absolute difference
between the two qualities' frames of the same state (uint8 levels, over all pixels and
channels). task.render_quality is not used: both qualities are measured."""


@dataclass
class RenderBenchConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    steps: int = doc(300, "environment steps timed per render quality", valid=AT_LEAST_1)
    warmup: int = doc(10, "untimed steps first", valid=AT_LEAST_0)
    seed: int = doc(0, "seed of the scenes and the random actions", valid=AT_LEAST_0)


def cpu_name() -> str:
    """The CPU's model name (as lscpu prints it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gl_renderer() -> str:
    """The current GL context's renderer (llvmpipe is Mesa's software renderer)."""
    try:
        from OpenGL import GL

        return GL.glGetString(GL.GL_RENDERER).decode()
    except Exception as error:  # noqa: BLE001 - only a label in the header
        return f"unknown ({type(error).__name__})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(RenderBenchConfig, argv, "calql_vision.bench_render", DESCRIPTION)
        if not cfg.task.cameras:
            raise ConfigError(f"task={cfg.task.name} has no cameras: its steps render nothing to time "
                              "(python -m calql_vision.bench times its steps)")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from omegaconf import OmegaConf

    from envs import make_env
    from envs.render_quality import RENDER_QUALITIES, WHAT_EACH_RENDERS

    task = cfg.task
    envs = {quality: make_env(OmegaConf.merge(task, {"render_quality": quality}), seed=cfg.seed)
            for quality in RENDER_QUALITIES}
    camera, key = task.cameras[0], envs["full"].image_keys[0]
    print(f"CPU: {cpu_name()}; GL renderer: {gl_renderer()}")
    print(f"{task.env_name}, {len(task.cameras)} camera(s) at {task.image_size}px, {cfg.steps} steps per quality")
    rng = np.random.default_rng(cfg.seed)
    step_s = {q: [] for q in RENDER_QUALITIES}
    render_s = {q: [] for q in RENDER_QUALITIES}
    differences = []
    episode_seed = cfg.seed
    for env in envs.values():
        env.reset(seed=episode_seed)
    try:
        for i in range(cfg.warmup + cfg.steps):
            action = rng.uniform(-1, 1, size=7)
            frames, ended = {}, False
            for quality, env in envs.items():
                start = time.perf_counter()
                obs, _, terminated, truncated, _ = env.step(action)
                middle = time.perf_counter()
                env.render(camera, task.image_size)
                end = time.perf_counter()
                if i >= cfg.warmup:
                    step_s[quality].append(middle - start)
                    render_s[quality].append(end - middle)
                frames[quality] = obs[key].astype(np.int16)
                ended = terminated or truncated
            if not np.array_equal(envs["full"].get_state(), envs["fast"].get_state()):
                raise RuntimeError("the two environments left lockstep; their frames are not comparable")
            differences.append(np.abs(frames["full"] - frames["fast"]))
            if ended:
                episode_seed += 1
                for env in envs.values():
                    env.reset(seed=episode_seed)
    finally:
        for env in envs.values():
            env.close()

    for quality in RENDER_QUALITIES:
        step_ms, render_ms = (1e3 * statistics.median(v) for v in (step_s[quality], render_s[quality]))
        print(f"{quality:4s} ({WHAT_EACH_RENDERS[quality]}): step {step_ms:.1f} ms ({1e3 / step_ms:.1f} steps/s), "
              f"render alone {render_ms:.1f} ms")
    step_ratio = statistics.median(step_s["full"]) / statistics.median(step_s["fast"])
    render_ratio = statistics.median(render_s["full"]) / statistics.median(render_s["fast"])
    print(f"fast is {step_ratio:.2f}x faster per step, {render_ratio:.2f}x per render")
    stacked = np.stack(differences)
    print(f"full vs fast frames of the same states: mean absolute difference {stacked.mean():.2f} "
          f"(of 255), largest {int(stacked.max())}, pixels differing {np.mean(stacked.max(axis=1) > 0):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
