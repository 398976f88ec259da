"""Pixel replay that stores every frame once, the offline/online batch mixer, and the recorder
that turns one online episode into replay arrays with the same reward-to-go as the offline data.

Batches are dicts of torch tensors; images stay uint8 until the encoder (the model divides by
255 on the device). See FrameReplay's docstring for the memory layout.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from calql_vision.atomic_file import atomic_file
from datasets.reward_to_go import reward_to_go, transform_rewards
from datasets.transitions import TransitionDataset

Device = str | torch.device
# Per-transition float32 columns beside actions; all (T_cap,).
_SCALAR_KEYS = ("rewards", "terminals", "truncations", "reward_to_go")
_COUNTER_KEYS = ("capacity", "num_frames_added", "num_transitions_added", "valid_start", "frame_start")


class FrameReplay:
    """Ring buffer of transitions over frames stored once.

    Memory layout (F_cap = capacity frames, T_cap transition slots; T_cap = F_cap for a ring
    built by the constructor, T_cap = len(dataset) for one wrapping a dataset):

    * frames, indexed by frame slot = frame counter % F_cap:
      - `images[key]`  uint8   (F_cap, C, H, W)  one array per camera key, channel-first
      - `proprio`      float32 (F_cap, P)
    * transitions, indexed by transition slot = transition counter % T_cap:
      - `obs_frame`       int64   (T_cap,)  frame COUNTER of s   (monotone, never wrapped)
      - `next_obs_frame`  int64   (T_cap,)  frame COUNTER of s'  (= obs_frame + 1 here)
      - `actions`         float32 (T_cap, A)
      - `rewards`         float32 (T_cap,)  transformed r' = scale * r + bias
      - `terminals`       float32 (T_cap,)  1 = true end (success): no bootstrap
      - `truncations`     float32 (T_cap,)  1 = episode cut (time limit): bootstrap
      - `reward_to_go`    float32 (T_cap,)  Monte-Carlo return G of (s, a) on r'
    * An episode of T steps writes T + 1 consecutive frames (s_0..s_T) and T transitions;
      transition t of it reads frames t and t + 1, so next_obs is an index, never a copy.
    * Counters grow forever: `num_frames_added`, `num_transitions_added`. Once frames wrap,
      a transition whose obs frame counter is < num_frames_added - F_cap points at an
      overwritten frame; `valid_start` is the first transition counter that is still intact,
      and only [valid_start, num_transitions_added) is sampled. Its next frame is newer than
      its obs frame, so it is intact too.
    * Bytes per stored transition, for mean episode length L:
      frame_bytes * (1 + 1/L) + transition_bytes, where frame_bytes = sum(C*H*W) + 4*P
      and transition_bytes = 8 + 8 + 4*A + 4*4 (see `bytes_per_transition`).
    """

    def __init__(self, capacity: int, image_shapes: Mapping[str, tuple[int, int, int]],
                 proprio_dim: int, action_dim: int) -> None:
        if capacity < 2:
            raise ValueError(f"FrameReplay: capacity must be >= 2 frames (one transition needs "
                             f"two), got {capacity}")
        for key, shape in image_shapes.items():
            if len(tuple(shape)) != 3:
                raise ValueError(f"FrameReplay: image_shapes[{key!r}] must be (C, H, W), got {shape}")
        # Transition capacity = frame capacity is enough: intact transitions have distinct obs
        # frames, all among the newest F_cap frames, so at most F_cap of them exist at once.
        # Hence when transition u + T_cap overwrites slot u, transition u's obs frame is at
        # least F_cap frames older than the newest one, i.e. already overwritten (asserted in
        # add_episode).
        self._init_storage(
            images={key: np.zeros((capacity, *shape), dtype=np.uint8) for key, shape in image_shapes.items()},
            proprio=np.zeros((capacity, proprio_dim), dtype=np.float32),
            obs_frame=np.zeros(capacity, dtype=np.int64),
            next_obs_frame=np.zeros(capacity, dtype=np.int64),
            actions=np.zeros((capacity, action_dim), dtype=np.float32),
            scalars={name: np.zeros(capacity, dtype=np.float32) for name in _SCALAR_KEYS},
            writable=True,
        )

    def _init_storage(self, images: dict[str, np.ndarray], proprio: np.ndarray, obs_frame: np.ndarray,
                      next_obs_frame: np.ndarray, actions: np.ndarray, scalars: dict[str, np.ndarray],
                      writable: bool) -> None:
        self.images = images
        self.proprio = proprio
        self.obs_frame = obs_frame
        self.next_obs_frame = next_obs_frame
        self.actions = actions
        self.rewards = scalars["rewards"]
        self.terminals = scalars["terminals"]
        self.truncations = scalars["truncations"]
        self.reward_to_go = scalars["reward_to_go"]
        self.num_frames_added = 0
        self.num_transitions_added = 0
        self.valid_start = 0
        # False when the arrays belong to a TransitionDataset: writing would corrupt it.
        self._writable = writable

    @classmethod
    def from_dataset(cls, dataset: TransitionDataset) -> FrameReplay:
        """A read-only buffer over the dataset's own arrays (no copy of frames or transitions).

        The dataset already stores each frame once and its obs_index / next_obs_index are frame
        indices, so they serve directly as frame counters: capacity = dataset.num_frames,
        counters = indices, nothing has wrapped.
        """
        replay = cls.__new__(cls)
        replay._init_storage(
            images=dict(dataset.images),
            proprio=_as_dtype(dataset.proprio, np.float32),
            obs_frame=_as_dtype(dataset.obs_index, np.int64),
            next_obs_frame=_as_dtype(dataset.next_obs_index, np.int64),
            actions=_as_dtype(dataset.actions, np.float32),
            scalars={name: _as_dtype(getattr(dataset, name), np.float32) for name in _SCALAR_KEYS},
            writable=False,
        )
        replay.num_frames_added = dataset.num_frames
        replay.num_transitions_added = len(dataset)
        return replay

    # ------------------------------------------------------------------ sizes
    @property
    def capacity(self) -> int:
        """Frame capacity F_cap."""
        return len(self.proprio)

    @property
    def transition_capacity(self) -> int:
        return len(self.actions)

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        return {key: tuple(frames.shape[1:]) for key, frames in self.images.items()}

    @property
    def proprio_dim(self) -> int:
        return self.proprio.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    def __len__(self) -> int:
        """Number of intact (sampleable) transitions."""
        return self.num_transitions_added - self.valid_start

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all arrays (shared ones included)."""
        arrays = [*self.images.values(), self.proprio, self.obs_frame, self.next_obs_frame,
                  self.actions, self.rewards, self.terminals, self.truncations, self.reward_to_go]
        return sum(array.nbytes for array in arrays)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame: every camera image plus the proprio vector."""
        image = sum(frames.itemsize * int(np.prod(frames.shape[1:])) for frames in self.images.values())
        return image + self.proprio.itemsize * self.proprio_dim

    @property
    def transition_bytes(self) -> int:
        """Bytes of one transition slot, frames excluded."""
        columns = [self.obs_frame, self.next_obs_frame, self.rewards, self.terminals,
                   self.truncations, self.reward_to_go]
        return sum(column.itemsize for column in columns) + self.actions.itemsize * self.action_dim

    def bytes_per_transition(self, mean_episode_length: float | None = None) -> float:
        """Memory per stored transition.

        With `mean_episode_length` L: frame_bytes * (1 + 1/L) + transition_bytes, the cost of a
        full buffer of episodes of length L (each episode stores one extra final frame).
        Without it: allocated bytes / capacity, what this buffer spends per frame slot.
        """
        if mean_episode_length is None:
            return self.nbytes / self.capacity
        if mean_episode_length <= 0:
            raise ValueError(f"mean_episode_length must be > 0, got {mean_episode_length}")
        return self.frame_bytes * (1.0 + 1.0 / mean_episode_length) + self.transition_bytes

    # ------------------------------------------------------------------ writing
    def add_episode(self, images: Mapping[str, np.ndarray], proprio: np.ndarray, actions: np.ndarray,
                    rewards: np.ndarray, terminals: np.ndarray, truncations: np.ndarray,
                    reward_to_go: np.ndarray) -> None:
        """Append one episode of T steps: T + 1 frames (s_0..s_T) and T transitions.

        images[key]: uint8 (T+1, C, H, W); proprio (T+1, P); actions (T, A); rewards (T,),
        already transformed; terminals, truncations (T,) 0/1; reward_to_go (T,).
        """
        if not self._writable:
            raise RuntimeError("FrameReplay.add_episode: this buffer wraps a TransitionDataset's "
                               "arrays (from_dataset); adding would overwrite the dataset")
        columns = self._validate_episode(images, proprio, actions, rewards, terminals, truncations,
                                         reward_to_go)
        num_steps = len(columns["actions"])
        first_frame = self.num_frames_added
        frame_slots = (first_frame + np.arange(num_steps + 1)) % self.capacity
        for key, frames in images.items():
            self.images[key][frame_slots] = frames
        self.proprio[frame_slots] = columns["proprio"]
        self.num_frames_added += num_steps + 1
        self._drop_overwritten_transitions(max_dropped=num_steps + 1)

        first = self.num_transitions_added
        # See __init__: the slots reused below must belong to transitions already dropped.
        assert first + num_steps - self.transition_capacity <= self.valid_start, "transition ring overrun"
        slots = (first + np.arange(num_steps)) % self.transition_capacity
        self.obs_frame[slots] = first_frame + np.arange(num_steps)
        self.next_obs_frame[slots] = first_frame + 1 + np.arange(num_steps)
        self.actions[slots] = columns["actions"]
        for name in _SCALAR_KEYS:
            getattr(self, name)[slots] = columns[name]
        self.num_transitions_added += num_steps
        assert len(self) <= self.capacity

    def _validate_episode(self, images: Mapping[str, np.ndarray], proprio: np.ndarray,
                          actions: np.ndarray, rewards: np.ndarray, terminals: np.ndarray,
                          truncations: np.ndarray, reward_to_go: np.ndarray) -> dict[str, np.ndarray]:
        """Check shapes and dtypes against the buffer; return the float columns as float32."""
        actions = _float_array("actions", actions)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim or len(actions) == 0:
            raise ValueError(f"add_episode: actions must be (T, {self.action_dim}) with T >= 1, "
                             f"got {actions.shape}")
        num_steps = len(actions)
        if num_steps + 1 > self.capacity:
            raise ValueError(f"add_episode: an episode of {num_steps} steps needs {num_steps + 1} "
                             f"frames, more than the capacity of {self.capacity}")
        if set(images) != set(self.images):
            raise ValueError(f"add_episode: image keys {sorted(images)} differ from the buffer's "
                             f"{sorted(self.images)}")
        for key, frames in images.items():
            expected = (num_steps + 1, *self.images[key].shape[1:])
            if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.shape != expected:
                got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
                raise ValueError(f"add_episode: images[{key!r}] must be uint8 {expected} "
                                 f"(T + 1 frames, C, H, W), got {got}")
        proprio = _float_array("proprio", proprio)
        if proprio.shape != (num_steps + 1, self.proprio_dim):
            raise ValueError(f"add_episode: proprio must be {(num_steps + 1, self.proprio_dim)} "
                             f"(T + 1 frames, P), got {proprio.shape}")
        columns = {"actions": actions, "proprio": proprio}
        for name, values in (("rewards", rewards), ("terminals", terminals),
                             ("truncations", truncations), ("reward_to_go", reward_to_go)):
            values = _float_array(name, values)
            if values.shape != (num_steps,):
                raise ValueError(f"add_episode: {name} must be ({num_steps},), got {values.shape}")
            columns[name] = values
        for name in ("terminals", "truncations"):
            if not np.isin(columns[name], (0.0, 1.0)).all():
                raise ValueError(f"add_episode: {name} must be 0/1, got {np.unique(columns[name])[:10]}")
        if np.any((columns["terminals"] > 0) & (columns["truncations"] > 0)):
            raise ValueError("add_episode: a step cannot be both terminal and truncated "
                             "(a terminal ends the episode for real; a truncation bootstraps)")
        return columns

    def _drop_overwritten_transitions(self, max_dropped: int) -> None:
        """Advance valid_start past transitions whose obs frame was just overwritten.

        Intact transitions have distinct obs frames, so writing n frames can invalidate at most
        n of them, and (obs frames being monotone) they are the oldest: only a window of
        max_dropped transitions after valid_start needs checking.
        """
        oldest_intact_frame = self.num_frames_added - self.capacity
        stop = min(self.num_transitions_added, self.valid_start + max_dropped)
        window = np.arange(self.valid_start, stop) % self.transition_capacity
        dropped = np.searchsorted(self.obs_frame[window], oldest_intact_frame, side="left")
        self.valid_start += int(dropped)

    # ------------------------------------------------------------------ reading
    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """int64 (batch_size,) transition counters, uniform over the intact transitions."""
        if len(self) == 0:
            raise ValueError("FrameReplay.sample_indices: the buffer holds no transitions")
        return rng.integers(self.valid_start, self.num_transitions_added, size=batch_size, dtype=np.int64)

    def gather(self, indices: np.ndarray, device: Device) -> dict[str, Any]:
        """The batch of the given transition counters, as tensors on `device`.

        {"obs": {key: uint8 (B,C,H,W)}, "proprio": (B,P), "actions": (B,A), "rewards": (B,),
         "next_obs": {key: uint8 (B,C,H,W)}, "next_proprio": (B,P), "terminals": (B,),
         "truncations": (B,), "reward_to_go": (B,)}; everything but images is float32.
        """
        indices = np.asarray(indices, dtype=np.int64)
        batch = self._empty_batch(len(indices), pin=_is_cuda(device))
        self._fill(indices, _numpy_views(batch), slice(0, len(indices)))
        return _to_device(batch, device)

    def sample(self, batch_size: int, rng: np.random.Generator, device: Device) -> dict[str, Any]:
        return self.gather(self.sample_indices(batch_size, rng), device)

    def _empty_batch(self, batch_size: int, pin: bool) -> dict[str, Any]:
        """CPU tensors to gather into; page-locked when bound for CUDA so the copy is async."""
        def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.empty((batch_size, *shape), dtype=dtype, pin_memory=pin)

        def images() -> dict[str, torch.Tensor]:
            return {key: empty(shape, torch.uint8) for key, shape in self.image_shapes.items()}

        return {
            "obs": images(),
            "proprio": empty((self.proprio_dim,), torch.float32),
            "actions": empty((self.action_dim,), torch.float32),
            "next_obs": images(),
            "next_proprio": empty((self.proprio_dim,), torch.float32),
            **{name: empty((), torch.float32) for name in _SCALAR_KEYS},
        }

    def _fill(self, indices: np.ndarray, out: dict[str, Any], rows: slice) -> None:
        """Gather the transitions with counters `indices` into out[...][rows], no temporaries."""
        if len(indices) and (indices.min() < self.valid_start or indices.max() >= self.num_transitions_added):
            raise IndexError(f"FrameReplay: transition counters must lie in [{self.valid_start}, "
                             f"{self.num_transitions_added}), got [{indices.min()}, {indices.max()}]")
        slots = indices % self.transition_capacity
        obs_slots = self.obs_frame[slots] % self.capacity
        next_slots = self.next_obs_frame[slots] % self.capacity
        # mode="clip" (a no-op: slots are in range) because np.take buffers `out` in mode="raise".
        for key, frames in self.images.items():
            np.take(frames, obs_slots, axis=0, out=out["obs"][key][rows], mode="clip")
            np.take(frames, next_slots, axis=0, out=out["next_obs"][key][rows], mode="clip")
        np.take(self.proprio, obs_slots, axis=0, out=out["proprio"][rows], mode="clip")
        np.take(self.proprio, next_slots, axis=0, out=out["next_proprio"][rows], mode="clip")
        np.take(self.actions, slots, axis=0, out=out["actions"][rows], mode="clip")
        for name in _SCALAR_KEYS:
            np.take(getattr(self, name), slots, out=out[name][rows], mode="clip")

    def _check_compatible(self, other: FrameReplay) -> None:
        mine = (self.image_shapes, self.proprio_dim, self.action_dim)
        theirs = (other.image_shapes, other.proprio_dim, other.action_dim)
        if mine != theirs:
            raise ValueError(f"replay buffers differ in (image shapes, proprio dim, action dim): "
                             f"{mine} vs {theirs}")

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Counters plus copies of the used part only, oldest first: the frames still held
        (frame counters [frame_start, num_frames_added)) and the intact transitions."""
        frame_start = max(0, self.num_frames_added - self.capacity)
        frame_slots = np.arange(frame_start, self.num_frames_added) % self.capacity
        slots = np.arange(self.valid_start, self.num_transitions_added) % self.transition_capacity
        return {
            "capacity": self.capacity,
            "num_frames_added": self.num_frames_added,
            "num_transitions_added": self.num_transitions_added,
            "valid_start": self.valid_start,
            "frame_start": frame_start,
            "images": {key: frames[frame_slots] for key, frames in self.images.items()},
            "proprio": self.proprio[frame_slots],
            "obs_frame": self.obs_frame[slots],
            "next_obs_frame": self.next_obs_frame[slots],
            "actions": self.actions[slots],
            **{name: getattr(self, name)[slots] for name in _SCALAR_KEYS},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state_dict of a buffer with the same capacity and shapes."""
        if not self._writable:
            raise RuntimeError("FrameReplay.load_state_dict: this buffer wraps a TransitionDataset's arrays")
        counters = {name: int(state[name]) for name in _COUNTER_KEYS}
        if counters["capacity"] != self.capacity:
            raise ValueError(f"load_state_dict: saved capacity {counters['capacity']} != {self.capacity}")
        if (self.image_shapes, self.proprio_dim, self.action_dim) != _state_shapes(state):
            raise ValueError(f"load_state_dict: saved (image shapes, proprio dim, action dim) "
                             f"{_state_shapes(state)} differ from {(self.image_shapes, self.proprio_dim, self.action_dim)}")
        num_frames = counters["num_frames_added"] - counters["frame_start"]
        num_transitions = counters["num_transitions_added"] - counters["valid_start"]
        if (counters["frame_start"] != max(0, counters["num_frames_added"] - self.capacity)
                or len(state["proprio"]) != num_frames or len(state["actions"]) != num_transitions
                or num_transitions > self.transition_capacity):
            raise ValueError(f"load_state_dict: counters {counters} do not match the saved arrays")
        obs_frame = np.asarray(state["obs_frame"], dtype=np.int64)
        if num_transitions and (obs_frame.min() < counters["frame_start"]
                                or np.max(state["next_obs_frame"]) >= counters["num_frames_added"]):
            raise ValueError("load_state_dict: transitions point at frames the state does not hold")

        frame_slots = np.arange(counters["frame_start"], counters["num_frames_added"]) % self.capacity
        for key, frames in self.images.items():
            frames[frame_slots] = state["images"][key]
        self.proprio[frame_slots] = state["proprio"]
        slots = np.arange(counters["valid_start"], counters["num_transitions_added"]) % self.transition_capacity
        self.obs_frame[slots] = obs_frame
        self.next_obs_frame[slots] = state["next_obs_frame"]
        self.actions[slots] = state["actions"]
        for name in _SCALAR_KEYS:
            getattr(self, name)[slots] = state[name]
        self.num_frames_added = counters["num_frames_added"]
        self.num_transitions_added = counters["num_transitions_added"]
        self.valid_start = counters["valid_start"]

    def save(self, path: str | os.PathLike) -> None:
        """Write state_dict() to `path` (npz) atomically (see atomic_file)."""
        path = os.fspath(path)
        state = self.state_dict()
        flat = {name: np.asarray(state[name]) for name in state if name != "images"}
        flat.update({f"images/{key}": frames for key, frames in state["images"].items()})
        with atomic_file(path) as handle:
            np.savez(handle, **flat)  # a file object: numpy adds no ".npz" suffix

    @classmethod
    def load(cls, path: str | os.PathLike) -> FrameReplay:
        """A writable ring buffer restored from `save()` (from_dataset buffers come back as rings
        of the same frame capacity)."""
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            state: dict[str, Any] = {name: archive[name] for name in archive.files if not name.startswith("images/")}
            state["images"] = {name[len("images/"):]: archive[name] for name in archive.files
                               if name.startswith("images/")}
        image_shapes, proprio_dim, action_dim = _state_shapes(state)
        replay = cls(int(state["capacity"]), image_shapes, proprio_dim, action_dim)
        replay.load_state_dict(state)
        return replay


def mixed_batch(offline: FrameReplay, online: FrameReplay | None, batch_size: int, mixing_ratio: float,
                rng: np.random.Generator, device: Device) -> dict[str, Any]:
    """One batch: round(batch_size * mixing_ratio) OFFLINE samples first, the rest ONLINE.

    `mixing_ratio` is the offline fraction (Cal-QL default 0.5): 1.0 = all offline, 0.0 = all
    online. With no online data yet (None or empty) the whole batch is offline. Both parts are
    gathered straight into one set of (pinned, for CUDA) tensors, sent to `device` once.
    """
    if not 0.0 <= mixing_ratio <= 1.0:
        raise ValueError(f"mixed_batch: mixing_ratio (offline fraction) must be in [0, 1], got {mixing_ratio}")
    num_offline = round(batch_size * mixing_ratio)
    if online is None or len(online) == 0:
        num_offline = batch_size
    else:
        offline._check_compatible(online)
    parts = [(offline, num_offline), (online, batch_size - num_offline)]
    batch = offline._empty_batch(batch_size, pin=_is_cuda(device))
    views = _numpy_views(batch)
    row = 0
    for replay, count in parts:
        if count > 0:
            replay._fill(replay.sample_indices(count, rng), views, slice(row, row + count))
            row += count
    return _to_device(batch, device)


# The keyword arguments of FrameReplay.add_episode, in a recorded episode.
EPISODE_ARRAY_KEYS = ("images", "proprio", "actions", "rewards", "terminals", "truncations", "reward_to_go")


class RecordedEpisode(dict):
    """A finished episode: the add_episode arrays (EPISODE_ARRAY_KEYS) plus its statistics
    "episode_return" (sum of raw rewards), "length" (steps) and "success" (last step terminal),
    as keys and as attributes, and "grasped" where the collector set it (the gripper held the
    object at some step). `replay.add_episode(**episode.replay_arrays())` stores it."""

    @property
    def episode_return(self) -> float:
        return self["episode_return"]

    @property
    def length(self) -> int:
        return self["length"]

    @property
    def success(self) -> bool:
        return self["success"]

    @property
    def grasped(self) -> bool | None:
        return self.get("grasped")

    def replay_arrays(self) -> dict[str, Any]:
        return {key: self[key] for key in EPISODE_ARRAY_KEYS}


class EpisodeRecorder:
    """Collects one online episode and turns it into replay arrays.

        recorder.start(obs)
        while not done: ...; recorder.add(action, reward, terminated, truncated, next_obs)
        episode = recorder.finish(gamma, reward_scale, reward_bias)
        online_replay.add_episode(**episode.replay_arrays())

    Observations are {"<camera>_image": uint8 (C, H, W), "proprio": float32 (P,)}. Reward-to-go
    comes from datasets.reward_to_go, the function the offline data uses, on the whole episode
    once it has ended (it needs the future).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._frames: dict[str, list[np.ndarray]] = {}
        self._proprio: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._terminals: list[bool] = []
        self._truncations: list[bool] = []
        self._started = False

    def __len__(self) -> int:
        return len(self._actions)

    def start(self, obs: Mapping[str, np.ndarray]) -> None:
        """Begin an episode at the reset observation (drops any unfinished one)."""
        self._reset()
        self._frames = {key: [] for key in obs if key != "proprio"}
        self._started = True
        self._append_obs(obs)

    def last_observation(self) -> dict[str, np.ndarray]:
        """The newest observation recorded (the one the next action answers)."""
        if not self._started:
            raise RuntimeError("EpisodeRecorder.last_observation: call start(obs) first")
        return {**{key: frames[-1] for key, frames in self._frames.items()}, "proprio": self._proprio[-1]}

    def add(self, action: np.ndarray, reward_raw: float, terminated: bool, truncated: bool,
            next_obs: Mapping[str, np.ndarray]) -> None:
        if not self._started:
            raise RuntimeError("EpisodeRecorder.add: call start(obs) first")
        if self._terminals and (self._terminals[-1] or self._truncations[-1]):
            raise RuntimeError("EpisodeRecorder.add: the episode already ended; call finish()")
        self._append_obs(next_obs)
        self._actions.append(np.array(action, dtype=np.float32).reshape(-1))
        self._rewards.append(float(reward_raw))
        self._terminals.append(bool(terminated))
        # Gymnasium allows both flags at once; a real terminal wins (no bootstrap there).
        self._truncations.append(bool(truncated) and not terminated)

    def finish(self, gamma: float, reward_scale: float, reward_bias: float) -> RecordedEpisode:
        """The episode (arrays for FrameReplay.add_episode plus statistics), and reset. The last step, when not a terminal, is
        marked truncated even if the caller stopped early: the episode was cut (as the loader does)."""
        if not self._actions:
            raise RuntimeError("EpisodeRecorder.finish: no steps recorded since start()")
        rewards_raw = np.asarray(self._rewards, dtype=np.float64)
        terminals = np.asarray(self._terminals, dtype=np.float32)
        truncations = np.asarray(self._truncations, dtype=np.float32)
        truncations[-1] = 1.0 - terminals[-1]
        arrays = {
            "images": {key: np.stack(frames) for key, frames in self._frames.items()},
            "proprio": np.stack(self._proprio),
            "actions": np.stack(self._actions),
            "rewards": transform_rewards(rewards_raw, reward_scale, reward_bias),
            "terminals": terminals,
            "truncations": truncations,
            "reward_to_go": reward_to_go(rewards_raw, terminals, gamma, reward_scale, reward_bias),
        }
        episode = RecordedEpisode(arrays, episode_return=float(rewards_raw.sum()),
                                  length=len(rewards_raw), success=bool(terminals[-1] > 0))
        self._reset()
        return episode

    def _append_obs(self, obs: Mapping[str, np.ndarray]) -> None:
        if "proprio" not in obs or set(obs) - {"proprio"} != set(self._frames):
            raise ValueError(f"EpisodeRecorder: observation keys {sorted(obs)} must be 'proprio' "
                             f"plus the image keys {sorted(self._frames)} of the reset observation")
        for key, frames in self._frames.items():
            image = obs[key]
            if image.dtype != np.uint8 or image.ndim != 3:
                raise ValueError(f"EpisodeRecorder: obs[{key!r}] must be uint8 (C, H, W), "
                                 f"got {image.dtype} {image.shape}")
            frames.append(image.copy())  # the env may reuse its buffers between steps
        self._proprio.append(np.array(obs["proprio"], dtype=np.float32).reshape(-1))


# ---------------------------------------------------------------------- helpers
def _as_dtype(array: np.ndarray, dtype: type) -> np.ndarray:
    """The array itself when it already has `dtype` (no copy), else a converted copy."""
    return np.asarray(array, dtype=dtype)


def _float_array(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"add_episode: {name} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"add_episode: {name} contains NaN or inf")
    return array


def _state_shapes(state: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]], int, int]:
    images = {key: tuple(frames.shape[1:]) for key, frames in state["images"].items()}
    return images, state["proprio"].shape[1], state["actions"].shape[1]


def _is_cuda(device: Device) -> bool:
    return torch.device(device).type == "cuda"


def _numpy_views(batch: dict[str, Any]) -> dict[str, Any]:
    return {name: _numpy_views(value) if isinstance(value, dict) else value.numpy()
            for name, value in batch.items()}


def _to_device(batch: dict[str, Any], device: Device) -> dict[str, Any]:
    # non_blocking overlaps the host-to-device copy with compute when the source is pinned;
    # for a CPU device .to() returns the tensor itself.
    return {name: _to_device(value, device) if isinstance(value, dict) else value.to(device, non_blocking=True)
            for name, value in batch.items()}
