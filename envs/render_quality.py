"""How camera frames are rendered: robosuite's own settings (`full`) or a cheaper `fast` mode.

On a software renderer (Mesa's EGL without a GPU) MuJoCo's 4x offscreen multisampling and
the table's reflections cost most of a frame; turning both off made an 84 px frame about
4x faster and a whole environment step about 2.5x faster (docs/performance.md). The frames
change slightly (edges lose antialiasing, surfaces lose reflections), so a dataset rendered
one way and an environment rendered the other show a policy slightly different pixels.
Shadows are left as they are: robosuite's arenas declare their lights `castshadow="false"`,
and turning the shadow flag off changed neither a pixel nor the time (measured).
"""
from __future__ import annotations

RENDER_QUALITIES = ("full", "fast")
# `auto`: follow the dataset that training reads; with no dataset to follow, `fast`.
RENDER_QUALITY_SETTINGS = ("auto",) + RENDER_QUALITIES
AUTO_WITHOUT_DATASET = "fast"
# What a file without a record was rendered with: robosuite's defaults.
UNRECORDED = "full"
# robosuite's (MuJoCo's) default offscreen multisampling.
FULL_OFFSAMPLES = 4

WHAT_EACH_RENDERS = {
    "full": f"{FULL_OFFSAMPLES}x multisampling, reflections",
    "fast": "no multisampling, no reflections",
}


def check_render_quality(quality: str, allow_auto: bool = False) -> str:
    valid = RENDER_QUALITY_SETTINGS if allow_auto else RENDER_QUALITIES
    if quality not in valid:
        raise ValueError(f"render_quality={quality}: expected one of {' | '.join(valid)}")
    return quality


def resolve_render_quality(setting: str, recorded: str | None = None) -> str:
    """`full` or `fast`: an explicit setting as it is; `auto` follows `recorded` (the
    dataset's setting) when there is one, else `fast`."""
    check_render_quality(setting, allow_auto=True)
    if setting != "auto":
        return setting
    return recorded if recorded is not None else AUTO_WITHOUT_DATASET


def apply_render_quality(sim, quality: str) -> None:
    """Render `sim`'s offscreen camera frames at `quality` from now on.

    `sim` is robosuite's MjSim with its offscreen render context already built (robosuite
    builds it in the env's constructor). MuJoCo reads `offsamples` only when it creates the
    offscreen framebuffer, so the context's framebuffer is made again here; robosuite remakes
    it from the same model value when a larger frame is asked for (`render(size=...)`), so
    the setting holds there too. The reflection flag lives in the context's scene, which soft
    resets keep. A hard reset would build a new context with robosuite's defaults: the
    environment wrapper never makes one.
    """
    import mujoco

    check_render_quality(quality)
    context = sim._render_context_offscreen
    if context is None:
        raise RuntimeError("the simulation has no offscreen render context to configure")
    sim.model._model.vis.quality.offsamples = FULL_OFFSAMPLES if quality == "full" else 0
    context.gl_ctx.make_current()
    context.con.free()
    # robosuite's own constructor of the MuJoCo context, so it is built exactly as robosuite
    # builds it (font scale, offscreen buffer), only with the new sample count.
    context._set_mujoco_context_and_buffers()
    context.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 1 if quality == "full" else 0


def mismatch_warning(dataset: str, recorded: str, quality: str) -> str | None:
    """One line saying how a dataset's frames and the environment's differ, or None."""
    if recorded == quality:
        return None
    return (
        f"warning: {dataset} was rendered with render_quality={recorded} ({WHAT_EACH_RENDERS[recorded]}) "
        f"but task.render_quality={quality} ({WHAT_EACH_RENDERS[quality]}); the policy trains on one kind "
        f"of frame and acts on the other (see docs/performance.md, Render quality); task.render_quality=auto follows the dataset"
    )


def recorded_render_quality(env_args: dict | None, source: str) -> str:
    """The setting a dataset's frames were rendered with, from its `env_args`. A file without
    the record (robomimic's own tools write none) was rendered with robosuite's defaults."""
    recorded = (env_args or {}).get("render_quality", UNRECORDED)
    if recorded not in RENDER_QUALITIES:
        raise ValueError(f"{source}: env_args records render_quality={recorded!r}; expected one of "
                         f"{' | '.join(RENDER_QUALITIES)}")
    return recorded
