"""A gymnasium-style wrapper around robosuite manipulation tasks with camera observations.

Why our own wrapper rather than robosuite's GymWrapper: robosuite never ends an episode on
success, raises if stepped past its horizon, and its GymWrapper reports the time limit as
*terminated*. Cal-QL needs the opposite split (success = terminal, time limit = truncation
that still bootstraps), and images in the upright orientation that robomimic datasets use.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from envs.render_quality import apply_render_quality, check_render_quality, resolve_render_quality

# Low-dimensional keys kept in `info["low_dim"]` and written by the demo collector, named as
# in robomimic datasets. "object" is robosuite's object-state vector (position first).
LOW_DIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos", "object")
DEFAULT_PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


class RobosuiteVisualEnv:
    """One robosuite task: uint8 CHW images + float32 proprioception in, 7-D actions out.

    Observations: {"<camera>_image": uint8 (3, H, W), upright; "proprio": float32 vector
    of `proprio_keys` concatenated}. Reward is 1.0 on the step that succeeds, else 0.0;
    success terminates the episode and reaching `horizon` steps truncates it.
    `render_quality`: `full` (robosuite's renderer as it is) or `fast` (envs/render_quality.py).

    With no cameras (a low-dim task) the observation is {"proprio": ...} alone and a step
    renders nothing; `render()` still draws the scene for videos, building the GL context at
    its first call, so an environment that only trains never creates one.
    """

    action_dim = 7

    def __init__(
        self,
        env_name: str,
        robot: str = "Panda",
        cameras: Sequence[str] = ("agentview",),
        image_size: int = 84,
        horizon: int = 200,
        control_freq: int = 20,
        proprio_keys: Sequence[str] = DEFAULT_PROPRIO_KEYS,
        seed: int | None = None,
        render_quality: str = "full",
    ) -> None:
        import robosuite

        self.env_name = env_name
        self.cameras = tuple(cameras)
        self.image_keys = tuple(f"{camera}_image" for camera in self.cameras)
        self.image_size = int(image_size)
        self.horizon = int(horizon)
        self.proprio_keys = tuple(proprio_keys)
        unknown = [k for k in self.proprio_keys if k not in LOW_DIM_KEYS]
        if unknown:
            raise ValueError(f"unknown proprio_keys {unknown}; choose from {list(LOW_DIM_KEYS)}")
        self.render_quality = check_render_quality(render_quality)
        self.env_kwargs: dict[str, Any] = dict(
            robots=[robot],
            controller_configs=robosuite.load_composite_controller_config(robot=robot),
            camera_names=list(self.cameras),
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            camera_depths=False,
            control_freq=int(control_freq),
            horizon=self.horizon,
            reward_shaping=False,
            # Episodes are cut here (success / step limit), never by robosuite.
            ignore_done=True,
            # Rebuilding the model and renderer on every reset costs ~1 s; a soft reset ~0.07 s.
            hard_reset=False,
            use_object_obs=True,
            use_camera_obs=bool(self.cameras),
            has_renderer=False,
            has_offscreen_renderer=bool(self.cameras),
        )
        self._robosuite_version = robosuite.__version__
        self._env = robosuite.make(env_name, seed=seed, **self.env_kwargs)
        if self.cameras and self.render_quality != "full":  # full is robosuite's own renderer, untouched
            apply_render_quality(self._env.sim, self.render_quality)
        # robosuite samples observations on the FIRST physics substep of a control step, so
        # its obs lag the true state by almost a whole step (and no longer match get_state(),
        # which breaks state replay). We stop its own sampling and read every observation
        # once, at the end of each step: one render per step, as before, but current.
        for name in self._env._observables:
            self._env.modify_observable(name, "sampling_rate", 1e-9)
        # The manipulated object's world position, for scripted demonstrators: robosuite
        # names it "<object>_pos" (cube_pos, Can_pos); object-state orders differ per task.
        # Only the active objects' observables are returned (PickPlaceCan declares all four).
        observables = self._env._get_observations(force_update=True).keys()
        candidates = [k for k in observables if re.fullmatch(r"(?!robot)[A-Za-z]+_pos", k)]
        if len(candidates) != 1:
            raise ValueError(f"{env_name}: cannot tell the object position among {candidates}")
        self._object_pos_key = candidates[0]
        self._object = self._find_object(self._object_pos_key[: -len("_pos")])
        self._steps = 0
        self._done = True
        self._raw: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ metadata
    @property
    def env_args(self) -> dict[str, Any]:
        """robomimic's `env_args` (type 1 = robosuite): enough to rebuild this env.

        `render_quality` sits beside robomimic's keys, not in `env_kwargs`: robomimic passes
        `env_kwargs` to `robosuite.make`, which rejects unknown keys, and reads only
        `env_name`, `type`, `env_version` and `env_kwargs` from the rest."""
        return {
            "env_name": self.env_name,
            "type": 1,
            "env_version": self._robosuite_version,
            "env_kwargs": self.env_kwargs,
            "render_quality": self.render_quality,
        }

    @property
    def proprio_dim(self) -> int:
        return int(sum(len(self._low_dim_value(k, self._raw)) for k in self.proprio_keys)) if self._raw else -1

    def model_xml(self) -> str:
        """The MJCF of the current model (robomimic's per-demo `model_file`)."""
        return self._env.sim.model.get_xml()

    def goal_position(self) -> np.ndarray | None:
        """Centre of the target bin region for pick-and-place tasks, else None."""
        placements = getattr(self._env, "target_bin_placements", None)
        if placements is None:
            return None
        return np.array(placements[self._env.object_id], dtype=np.float64)

    # ------------------------------------------------------------------ episode API
    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            # robosuite's placement samplers share env.rng; reseed it in place.
            self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.make_render_context_current()
        self._raw = self._env.reset()
        self._steps = 0
        self._done = False
        return self._observation(), self._info(success=False)

    def step(self, action: np.ndarray):
        if self._done:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action must have shape ({self.action_dim},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains non-finite values: {action}")
        self._env.step(np.clip(action, -1.0, 1.0))
        # mj_step leaves positions (xpos) one physics substep behind qpos; recompute them so
        # the frame shows exactly the state that get_state() returns.
        self._env.sim.forward()
        self.make_render_context_current()
        self._raw = self._env._get_observations(force_update=True)
        self._steps += 1
        success = bool(self._env._check_success())
        terminated = success
        truncated = (not terminated) and self._steps >= self.horizon
        self._done = terminated or truncated
        reward = 1.0 if success else 0.0
        return self._observation(), reward, terminated, truncated, self._info(success)

    def render(self, camera: str = "agentview", size: int = 256) -> np.ndarray:
        """An upright HWC uint8 frame from any camera at any size (for videos)."""
        self._ensure_render_context()
        self.make_render_context_current()
        frame = self._env.sim.render(camera_name=camera, width=int(size), height=int(size))
        return np.ascontiguousarray(frame[::-1])

    def make_render_context_current(self) -> None:
        """Make this environment's offscreen GL context the current one; called before every
        render. robosuite renders into whichever context is current, and makes an env's own
        current only when it is built: with several envs in one process (a worker's train and
        eval envs) the others would draw with the newest env's framebuffers, which is
        invisible while all are configured alike and wrong pixels once their render
        qualities differ."""
        context = self._env.sim._render_context_offscreen  # noqa: SLF001
        if context is not None:
            context.gl_ctx.make_current()

    def _ensure_render_context(self) -> None:
        """Build the offscreen GL context of an env made without one (no cameras), set up as
        robosuite sets up its own (visual meshes shown, collision meshes hidden)."""
        sim = self._env.sim
        if sim._render_context_offscreen is not None:  # noqa: SLF001
            return
        from robosuite.utils.binding_utils import MjRenderContextOffscreen

        context = MjRenderContextOffscreen(sim, device_id=self._env.render_gpu_device_id)  # registers itself on sim
        context.vopt.geomgroup[0] = 1 if self._env.render_collision_mesh else 0
        context.vopt.geomgroup[1] = 1 if self._env.render_visual_mesh else 0
        if self.render_quality != "full":
            apply_render_quality(sim, self.render_quality)

    def get_state(self) -> np.ndarray:
        """Flattened MuJoCo state [time, qpos, qvel] (robomimic's `states`)."""
        return np.array(self._env.sim.get_state().flatten(), dtype=np.float64)

    def reset_to(self, state: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode from a recorded state (same model: soft resets keep it)."""
        self.make_render_context_current()
        self._env.reset()
        self._env.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
        self._env.sim.forward()
        self._raw = self._env._get_observations(force_update=True)
        self._steps = 0
        self._done = False
        success = bool(self._env._check_success())
        return self._observation(), self._info(success)

    def close(self) -> None:
        self._env.close()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _low_dim_value(key: str, raw: dict[str, np.ndarray]) -> np.ndarray:
        return raw["object-state"] if key == "object" else raw[key]

    def _observation(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        for key in self.image_keys:
            # robosuite renders in the OpenGL convention (bottom row first); flip once to
            # the upright frames that robomimic datasets store, then HWC -> CHW.
            obs[key] = np.ascontiguousarray(self._raw[key][::-1].transpose(2, 0, 1))
        obs["proprio"] = np.concatenate(
            [self._low_dim_value(k, self._raw) for k in self.proprio_keys]
        ).astype(np.float32)
        return obs

    def _find_object(self, name: str) -> Any:
        """The robosuite object model named `name`: Lift's cube, or PickPlace's active object."""
        models = [getattr(self._env, "cube", None), *getattr(self._env, "objects", [])]
        found = [model for model in models if model is not None and model.name == name]
        if len(found) != 1:
            raise ValueError(f"{self.env_name}: cannot tell the object model named {name!r}")
        return found[0]

    def _grasping(self) -> bool:
        """Both finger pads touch the object (robosuite's own grasp test, the one its shaped
        rewards use). Logged, never rewarded: it tells a policy that misses the object from
        one that holds it and fails to lift or place it."""
        return bool(self._env._check_grasp(gripper=self._env.robots[0].gripper, object_geoms=self._object))  # noqa: SLF001

    def _info(self, success: bool) -> dict[str, Any]:
        low_dim = {k: np.array(self._low_dim_value(k, self._raw), dtype=np.float64) for k in LOW_DIM_KEYS}
        return {
            "success": success,
            "grasped": self._grasping(),
            "low_dim": low_dim,
            "object_pos": np.array(self._raw[self._object_pos_key], dtype=np.float64),
            "steps": self._steps,
        }


def make_env(task, seed: int | None = None) -> RobosuiteVisualEnv:
    """Build the environment described by a task config (configs/task/<task>.yaml).

    `task.render_quality=auto` builds a `fast` env here: following a dataset's setting is the
    trainer's job, which resolves `auto` before it builds the env."""
    return RobosuiteVisualEnv(
        env_name=task.env_name,
        robot=task.robot,
        cameras=list(task.cameras),
        image_size=task.image_size,
        horizon=task.horizon,
        control_freq=task.control_freq,
        proprio_keys=list(task.proprio_keys),
        seed=seed,
        render_quality=resolve_render_quality(task.render_quality),
    )
