"""Evaluation videos: the scene in high resolution beside what the policy actually saw.

Each video frame is (S, 2S, 3) uint8 RGB: left, the scene rendered at S x S from the
policy's camera; right, the policy's own low-resolution observation of that same step,
upscaled with nearest neighbour so its real pixels stay visible (a blurry upscale would
hide how little the policy sees). The step number and success are written on the frame.
A task without cameras (its policy sees a state vector) gets the scene alone, (S, S, 3),
from DEFAULT_VIDEO_CAMERA.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

_WHITE = (255, 255, 255)
_GREEN = (60, 220, 60)
_GREY = (200, 200, 200)
# The camera of low-dim tasks' videos: robomimic's and robosuite's usual front view.
DEFAULT_VIDEO_CAMERA = "agentview"


def video_camera(cameras) -> str:
    """The camera videos show by default: the policy's first, or the front view without one."""
    return list(cameras)[0] if len(cameras) else DEFAULT_VIDEO_CAMERA


def _put_label(frame: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int], scale: float) -> None:
    """Text with a dark outline, readable on light and dark scenes alike (colours are RGB)."""
    thickness = max(1, round(scale * 2))
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def compose_frame(scene: np.ndarray, policy_view: np.ndarray | None, step: int, success: bool) -> np.ndarray:
    """(H, W, 3) uint8 scene + (3, h, w) uint8 policy view -> (H, 2W, 3) uint8, annotated;
    without a policy view (a state policy), the annotated scene alone, (H, W, 3)."""
    scene = np.asarray(scene)
    if scene.dtype != np.uint8 or scene.ndim != 3 or scene.shape[2] != 3:
        raise ValueError(f"scene must be uint8 (H, W, 3), got {scene.dtype} {scene.shape}")
    if policy_view is None:
        frame = np.ascontiguousarray(scene)
        _label_step(frame, step, success)
        return frame
    policy_view = np.asarray(policy_view)
    if policy_view.dtype != np.uint8 or policy_view.ndim != 3 or policy_view.shape[0] != 3:
        raise ValueError(f"policy_view must be uint8 (3, h, w) as in observations, got {policy_view.dtype} {policy_view.shape}")
    height, width = scene.shape[:2]
    view = cv2.resize(
        np.ascontiguousarray(policy_view.transpose(1, 2, 0)), (width, height), interpolation=cv2.INTER_NEAREST
    )
    frame = np.concatenate([scene, view], axis=1)
    scale, line = _label_size(height)
    _label_step(frame, step, success)
    _put_label(frame, f"policy {policy_view.shape[2]}px", (width + 6, line), _WHITE, scale)
    return frame


def _label_size(height: int) -> tuple[float, int]:
    """Text scales with the frame, with a floor so that small test videos still get legible labels."""
    scale = max(0.3, 0.6 * height / 256)
    return scale, int(round(24 * scale / 0.6))


def _label_step(frame: np.ndarray, step: int, success: bool) -> None:
    scale, line = _label_size(frame.shape[0])
    _put_label(frame, f"step {step}", (6, line), _WHITE, scale)
    _put_label(frame, "success" if success else "running", (6, 2 * line), _GREEN if success else _GREY, scale)


class EpisodeVideo:
    """The frames of one episode: call `add` on the reset observation, then on every step's."""

    def __init__(self, camera: str = "agentview", size: int = 256) -> None:
        self.camera = camera
        self.size = int(size)
        self.frames: list[np.ndarray] = []

    def add(self, env: Any, obs: dict[str, np.ndarray], info: dict[str, Any], step: int) -> None:
        key = f"{self.camera}_image"
        if not any(k.endswith("_image") for k in obs):  # a state policy: the scene alone
            self.frames.append(compose_frame(env.render(self.camera, self.size), None, step, bool(info.get("success"))))
            return
        if key not in obs:
            raise KeyError(f"observation has no '{key}' (the policy's cameras give {sorted(k for k in obs if k.endswith('_image'))})")
        scene = env.render(self.camera, self.size)
        self.frames.append(compose_frame(scene, obs[key], step, bool(info.get("success", False))))

    def __len__(self) -> int:
        return len(self.frames)


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    if len(frames) == 0:
        raise ValueError("no frames to write")
    first = np.asarray(frames[0])
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"frames must be uint8 (H, W, 3), got {first.dtype} {first.shape}")
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.shape != first.shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {i} is {frame.dtype} {frame.shape}, frame 0 is uint8 {first.shape}: all frames must match")
    height, width = first.shape[:2]
    # yuv420p stores colour at half resolution in both directions.
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {height}x{width}")
    return height, width


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 20) -> Path:
    """Encode RGB frames as H.264 (yuv420p, plays everywhere) into `path`, atomically.

    The video is encoded into a temporary file beside `path` and renamed when complete, so a
    crash or kill never leaves a truncated video under the final name.
    """
    import imageio.v2 as imageio

    path = Path(path)
    _check_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the .mp4 suffix: ffmpeg picks the container from it.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix or '.mp4'}")
    try:
        writer = imageio.get_writer(
            tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
            # Sizes were checked above; imageio would otherwise silently rescale to multiples of 16.
            macro_block_size=1, ffmpeg_log_level="error",
        )
        try:
            for frame in frames:
                writer.append_data(np.asarray(frame))
        finally:
            writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
