"""Offline-to-online RL from pixels: pretraining on robot HDF5 logs, then online fine-tuning.

    python -m calql_vision.train task=pick_place_visual
    python -m calql_vision.train task=lift_visual algo=cql dataset=path/to/demos.hdf5
    python -m calql_vision.train task=lift_visual algo=rlpd
    python -m calql_vision.train task=lift_visual algo=wsrl init_from=runs/lift_visual/calql/<timestamp>
    python -m calql_vision.train task=lift_visual preset=quick
    python -m calql_vision.train resume=runs/lift_visual/calql/<timestamp>
"""
from __future__ import annotations

import errno
import math
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from calql_vision.config import ConfigError
from calql_vision.control import CONTROL_PHASE, early_evaluation_points, equivalent_env_step, online_updates
from calql_vision.hardware import resolve_device
from calql_vision.launch import build
from calql_vision.online_episodes import OnlineEpisodes
from calql_vision.run_dir import RunDir, RunDirBusy
from calql_vision.startup import pause_point, run_program
from calql_vision.stopping import StopRequested, StopSignals
from calql_vision.training_data import (check_dataset_matches_env, dataset_filter_key, prepare_dataset,
                                        resolve_task_render_quality, warn_if_rendered_differently)

DIVERGED_EXIT_CODE = 3
ENV_WORKER_EXIT_CODE = 4
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class TrainingDiverged(RuntimeError):
    """A loss, a parameter or an action stopped being finite."""

# ---------------------------------------------------------------------- the trainer
class Trainer:
    """Owns the loop, counters, evaluation, logging and checkpoints; the agent only learns."""

    def __init__(self, cfg, run: RunDir, checkpoint: dict | None = None, init_state: dict | None = None,
                 stop: StopSignals | None = None) -> None:
        # Imported here, not at module level, so that --help and config errors answer at once.
        import calql_vision.calibration  # noqa: F401  (loaded before the run starts, like the rest)
        import calql_vision.checkpoint  # noqa: F401
        import calql_vision.evaluation  # noqa: F401
        import calql_vision.video  # noqa: F401
        from calql_vision.agents import algorithm
        from calql_vision.hardware import choose_precision, choose_threads, egl_device
        from envs.vector import EnvWorkers
        from envs.render_quality import WHAT_EACH_RENDERS

        self.cfg = cfg
        self.run_dir = run
        self.stop = stop or StopSignals()
        threads, threads_why = choose_threads(cfg.threads)
        torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.device = resolve_device(cfg.device)
        # Chosen once, here: the agent gets bf16 or fp32, and the log says why.
        self.precision, why = choose_precision(cfg.precision, self.device)
        print(f"device: {self.device}; precision: {self.precision} ({why}); torch threads: {threads} ({threads_why})")

        self.algorithm = algorithm(cfg.algo.name)
        resolve_task_render_quality(cfg)  # new runs have it settled already; kept for direct callers
        # The environments run in worker processes, stepped in lock-step (envs/vector.py).
        self.envs = EnvWorkers(cfg.task, cfg.num_envs, seed=cfg.seed, egl_device=egl_device(self.device))
        quality = self.envs.render_quality
        print(f"render quality: {quality} ({WHAT_EACH_RENDERS[quality]})")
        try:
            pause_point("environments")
            self._build(checkpoint, init_state)
        except BaseException:  # the worker processes go with a trainer that never started
            self.envs.close()
            raise

    def _build(self, checkpoint: dict | None, init_state: dict | None) -> None:
        """Data, replay, agent, counters and logger: everything but the environments."""
        from calql_vision.agents import make_agent
        from calql_vision.drift import DriftProbe
        from calql_vision.evaluation import evaluation_seed
        from calql_vision.metrics import MetricsLogger
        from calql_vision.replay import FrameReplay
        from datasets import load_transitions, read_mask_names

        cfg, run = self.cfg, self.run_dir
        self.dataset = self.offline_replay = self.heldout_replay = self.probe = None
        if not self.algorithm.uses_dataset and cfg.dataset is not None:
            print(f"note: algo={cfg.algo.name} learns from online data only; dataset={cfg.dataset} is not read")
        if self.algorithm.uses_dataset:
            dataset_path = prepare_dataset(cfg)
            masks = read_mask_names(dataset_path)
            self.dataset = load_transitions(
                dataset_path,
                image_keys=list(self.envs.image_keys),
                proprio_keys=list(cfg.task.proprio_keys),
                gamma=cfg.algo.discount,
                reward_scale=cfg.reward_scale,
                reward_bias=cfg.reward_bias,
                filter_key=dataset_filter_key(dataset_path, masks, cfg.filter_key),
                max_demos=cfg.max_demos,
            )
            check_dataset_matches_env(self.dataset, self.envs, dataset_path)
            warn_if_rendered_differently(dataset_path, self.envs)
            self.offline_replay = FrameReplay.from_dataset(self.dataset)
            self.heldout_replay = self._load_heldout(dataset_path, masks)
            # The drift metrics' fixed observations: held-out demos where the file has them.
            self.probe = DriftProbe(self.offline_replay if self.heldout_replay is None else self.heldout_replay,
                                    self.device)
        # Chosen once: they size the online buffer now and are copied into it at the switch.
        self.seed_episodes = self._top_offline_episodes()
        spec = self._obs_spec()
        image_shapes = {k: spec.image_shape for k in spec.image_keys}
        saved_replay = checkpoint["online_replay"] if checkpoint else None
        if saved_replay:
            # Loaded with the capacity it was created with: a resume that raises the online
            # budget keeps it, and the ring drops its oldest episodes if it fills.
            self.online_replay = load_saved_replay(run.root / saved_replay)
        else:
            # Every transition and its frames are kept: an episode of T steps stores T + 1
            # frames, so 2 x (steps + one more episode per worker) frames always suffice, plus
            # the offline episodes an algorithm seeds the buffer with (ACA).
            online_steps = 0 if cfg.control_of is not None else cfg.online_env_steps  # a control never steps
            capacity = (2 * (online_steps + cfg.num_envs * cfg.task.horizon)
                        + sum(len(t) + 1 for t in self.seed_episodes))
            self.online_replay = FrameReplay(capacity, image_shapes, spec.proprio_dim, spec.action_dim)

        self.agent = make_agent(cfg.algo, cfg.encoder, spec, self.device, self.precision)
        self.agent.return_range = self._return_range()
        # Pretraining runs only for algorithms that pretrain, and not when init_from gives it.
        self.offline_steps = cfg.offline_steps if self.algorithm.pretrains and cfg.init_from is None else 0
        # The update the online phase starts after; a control (control_of) trains on offline past it
        # for as many updates as the online phase makes (calql_vision/control.py).
        self.switch_step = self.offline_steps
        if cfg.control_of is not None:
            self.offline_steps += online_updates(cfg)
        self._early = early_evaluation_points(cfg.eval_every, cfg.eval_early)
        self.counters = {"step": 0, "env_step": 0, "episodes": 0, "episodes_started": 0, "pending_updates": 0,
                         "switched": False, "row_owed": None}
        # Scene seeds apart from the demos' (0, 1, ...) and the evaluations' (evaluation_seed).
        self.online_episodes = OnlineEpisodes(self.envs, 10_000_000 * (cfg.seed + 1), cfg.algo.discount,
                                              cfg.reward_scale, cfg.reward_bias)
        self._saved_episodes: list[dict] | None = None  # episodes in progress at the checkpoint
        self._pending_metrics: list[dict[str, float]] = []  # updates since the last metric row
        self._update_seconds = 0.0
        self._env_timing = [0, 0.0]  # environment steps and their seconds since the last row
        self._env_rate: dict[str, float] = {}  # env_steps_per_s of the last row that stepped
        self._ended_episodes: list[tuple] = []  # (return, success, grasped) since the last row
        if checkpoint is not None:
            try:
                self._restore(checkpoint)
            except (KeyError, RuntimeError, ValueError) as error:
                raise ConfigError(f"resume={run.root}: the checkpoint does not fit this run's config.yaml "
                                  f"({' '.join(str(error).split())[:300]})") from None
        elif init_state is not None:
            try:
                self.agent.load_state_dict(init_state)
            except (KeyError, RuntimeError) as error:
                detail = " ".join(str(error).split())
                raise ConfigError(
                    f"init_from={cfg.init_from}: the checkpoint's networks do not fit algo={cfg.algo.name} with these "
                    f"settings (match num_critics, LayerNorm and hidden_dims to the pretraining run): {detail[:300]}"
                ) from None
        elif cfg.encoder.normalize_state:
            self._fit_state_normalizer()
        resume_step = self.counters["step"] if checkpoint else None
        wandb_run = None
        if "wandb" in cfg.logger:
            from calql_vision.wandb_run import WandbRun

            wandb_run = WandbRun(run.root, cfg)
        self.logger = MetricsLogger(run.metrics, run.tensorboard if "tensorboard" in cfg.logger else None,
                                    self.agent.METRICS, resume_step=resume_step, action_dim=spec.action_dim,
                                    wandb_run=wandb_run)
        self._eval_seed = evaluation_seed(cfg.seed)
        self._last_finite: tuple[int, dict[str, float]] | None = None

    def _return_range(self) -> tuple[float, float]:
        """Where every discounted return of the rewards trained on lies (algo.clip_bootstrap): the
        environment's sparse 0/1 reward (envs/robosuite_env.py) and the offline data's, both after
        reward_scale and reward_bias."""
        from calql_vision.losses import return_range

        cfg = self.cfg
        rewards = [cfg.reward_bias, cfg.reward_scale + cfg.reward_bias]
        if self.dataset is not None and len(self.dataset.rewards):
            rewards += [float(self.dataset.rewards.min()), float(self.dataset.rewards.max())]
        return return_range(min(rewards), max(rewards), cfg.algo.discount)

    def _fit_state_normalizer(self) -> None:
        """A new run's state statistics: every frame of the offline data, once. They are then
        part of the agent: checkpoints carry them to resumes, controls, init_from and evaluate."""
        if self.dataset is None:
            print(f"note: encoder.normalize_state has no offline data to take statistics from "
                  f"(algo={self.cfg.algo.name}); the state is read raw")
            return
        self.agent.state_normalizer.fit(self.dataset.proprio)

    def _obs_spec(self):
        """Shapes from the dataset when there is one (checked against the env), else the env's."""
        from calql_vision.agents import ObsSpec

        dataset = self.dataset
        proprio_dim = self.envs.proprio_dim if dataset is None else dataset.proprio.shape[1]
        frames = {} if dataset is None else dataset.images  # none for a low-dim task
        image_shape = (tuple(next(iter(frames.values())).shape[1:]) if frames
                       else (3, self.envs.image_size, self.envs.image_size))  # unused without cameras
        return ObsSpec(tuple(self.envs.image_keys), image_shape, proprio_dim, self.envs.action_dim)

    def _top_offline_episodes(self) -> list[np.ndarray]:
        """Transition indices of the `algo.seed_top_episodes` offline demos with the highest
        return (ACA's `n_trajs`, `utility.buffer_init`); ties keep the file's order."""
        count = int(getattr(self.cfg.algo, "seed_top_episodes", 0) or 0)
        if count <= 0 or self.dataset is None:
            return []
        demo = self.dataset.demo_of_transition
        demos = np.unique(demo)
        returns = np.array([self.dataset.rewards[demo == d].sum() for d in demos])
        chosen = demos[np.argsort(-returns, kind="stable")[:count]]
        return [np.flatnonzero(demo == d) for d in chosen]

    def _seed_online_replay(self) -> None:
        dataset = self.dataset
        for transitions in self.seed_episodes:
            frames = np.arange(dataset.obs_index[transitions[0]], dataset.next_obs_index[transitions[-1]] + 1)
            self.online_replay.add_episode(
                images={k: v[frames] for k, v in dataset.images.items()},
                proprio=dataset.proprio[frames],
                **{key: getattr(dataset, key)[transitions] for key in
                   ("actions", "rewards", "terminals", "truncations", "reward_to_go")},
            )

    def _load_heldout(self, dataset_path: Path, masks: dict[str, int] | None):
        """The dataset's `valid` demos, never trained on, for the calibration snapshots."""
        from calql_vision.replay import FrameReplay
        from datasets import load_transitions

        if (masks or {}).get("valid", 0) == 0 or self.cfg.filter_key == "valid":
            return None
        heldout = load_transitions(
            dataset_path, image_keys=list(self.envs.image_keys), proprio_keys=list(self.cfg.task.proprio_keys),
            gamma=self.cfg.algo.discount, reward_scale=self.cfg.reward_scale, reward_bias=self.cfg.reward_bias,
            filter_key="valid", show_progress=False,
        )
        return FrameReplay.from_dataset(heldout)

    # ------------------------------------------------------------------ phases
    def run(self) -> None:
        """Both phases; raises TrainingDiverged, or StopRequested or EnvWorkerError after saving
        what it can."""
        from envs.vector import EnvWorkerError

        try:
            with self.stop.deferred():
                try:
                    self._run_phases()
                except StopRequested as request:
                    if request.at_safe_point:
                        self.save_checkpoint()
                    raise
                except EnvWorkerError:
                    # Every update is whole and the episodes in progress are kept as seeds and
                    # actions; the episodes that ended at the failed step are lost.
                    self.save_checkpoint()
                    raise
        finally:
            self.logger.close()
            self.envs.close()

    def _run_phases(self) -> None:
        self.finish_owed_bookkeeping()
        self._offline_phase()
        if self.cfg.control_of is not None:  # no online phase: the control's snapshot is its last
            self.save_calibration(CONTROL_PHASE)
            return
        if not self.counters["switched"]:
            self.save_calibration("offline")
            self.agent.on_online_start()
            self._seed_online_replay()
            self.counters["switched"] = True
        self.stop.check()
        self._online_phase()
        if self.counters["env_step"] > 0 and self.counters["step"] > self.switch_step:
            self.save_calibration("online")  # after no online update it would be the offline one again

    def _offline_phase(self) -> None:
        cfg, counters = self.cfg, self.counters
        if counters["step"] >= self.offline_steps:
            return
        # The bar is closed however the loop ends, so a message after it starts on its own line.
        desc = CONTROL_PHASE if cfg.control_of is not None else "offline"
        with tqdm(total=self.offline_steps, initial=counters["step"], desc=desc, unit="update") as bar:
            while counters["step"] < self.offline_steps:
                self._update(self.offline_replay.sample(self._rows_per_update(), self.rng, self.device))
                bar.update(1)
                self._after_update("offline", final=counters["step"] == self.offline_steps, bar=bar)
                self.stop.check()

    def _rows_per_update(self) -> int:
        return self.cfg.batch_size * self.agent.batch_slices

    def _online_batch(self) -> dict:
        """An online batch as the algorithm draws it: `algo.mixing_ratio` offline (null: each
        transition drawn uniformly from offline + online data together), the rest online."""
        from calql_vision.replay import mixed_batch

        rows, ratio = self._rows_per_update(), self.cfg.algo.mixing_ratio
        if self.offline_replay is None or ratio == 0:
            return self.online_replay.sample(rows, self.rng, self.device)
        if ratio is None:
            offline, online = len(self.offline_replay), len(self.online_replay)
            ratio = self.rng.binomial(rows, offline / (offline + online)) / rows
        return mixed_batch(self.offline_replay, self.online_replay, rows, ratio, self.rng, self.device)

    def _online_phase(self) -> None:
        cfg = self.cfg
        with tqdm(total=cfg.online_env_steps, initial=self.counters["env_step"], desc="online", unit="env step") as bar:
            if self.counters["env_step"] < cfg.online_env_steps or self._saved_episodes:
                self.online_episodes.start(self.counters, self._saved_episodes)
                self._saved_episodes = None
            self._online_loop(bar)

    def _online_loop(self, bar) -> None:
        """UTD updates per environment step, interleaved with the steps. An episode enters the
        replay when it ends (its reward-to-go needs the whole episode), so the updates owed
        before the first episode ends wait for it. `pending_updates` is a counter saved with
        checkpoints: a resume neither repeats nor loses an update."""
        cfg, counters = self.cfg, self.counters
        while True:
            budget_left = counters["env_step"] < cfg.online_env_steps
            if counters["pending_updates"] > 0 and len(self.online_replay) > 0:
                self._update(self._online_batch())
                counters["pending_updates"] -= 1
                self._after_update("online", final=not budget_left and counters["pending_updates"] == 0, bar=bar)
            elif budget_left:
                self._step_environments(bar)
            elif counters["pending_updates"] > 0:
                # The budget is spent and no episode has ended: learn from the cut episodes.
                for episode in self.online_episodes.cut_all(counters):
                    self._store_episode(episode)
            else:
                return
            self.stop.check()

    def _step_environments(self, bar=None) -> None:
        """One lock-step step of every worker: one batched policy call (random actions during
        a random warm-up), then the updates those steps are owed."""
        cfg, counters = self.cfg, self.counters
        started = time.time()
        count, first = cfg.num_envs, counters["env_step"]
        random_until = cfg.algo.warmup_steps if cfg.algo.warmup_policy == "random" else 0
        actions = np.empty((count, self.envs.action_dim))
        for i in range(count):
            if first + i < random_until:
                actions[i] = self.rng.uniform(-1.0, 1.0, size=self.envs.action_dim)
        policy_rows = [i for i in range(count) if first + i >= random_until]
        if policy_rows:
            batch = self.online_episodes.observations()
            actions[policy_rows] = self._act({k: v[policy_rows] for k, v in batch.items()}, deterministic=False,
                                             std_scale=cfg.algo.explore_std_scale)
        for episode in self.online_episodes.step(actions, counters):
            self._store_episode(episode)
        counters["env_step"] += count
        self._env_timing[0] += count
        self._env_timing[1] += time.time() - started
        # utd updates per step, none for the warm-up steps.
        counters["pending_updates"] += sum(first + i >= cfg.algo.warmup_steps for i in range(count)) * cfg.algo.utd
        if bar is not None:
            bar.total = max(bar.total, counters["env_step"])  # the last lock-step may overshoot
            bar.update(count)

    def _store_episode(self, episode) -> None:
        self.online_replay.add_episode(**episode.replay_arrays())
        self.counters["episodes"] += 1
        self._ended_episodes.append((float(episode.episode_return), bool(episode.success), episode.grasped))

    def _update(self, batch: dict) -> None:
        started = time.perf_counter()
        metrics = self.agent.update(batch)
        self._update_seconds += time.perf_counter() - started
        self.counters["step"] += 1
        self._check_finite(metrics)
        self._pending_metrics.append(metrics)
        self._last_finite = (self.counters["step"], metrics)

    def _check_finite(self, metrics: dict[str, float]) -> None:
        """Stop at the first non-finite loss or parameter: nothing diverged is ever logged or
        saved, so the last checkpoint stays the last good state."""
        bad_metrics = [f"{k}={v}" for k, v in metrics.items() if not math.isfinite(v)]
        bad_parts = self.agent.non_finite_parts()
        if not bad_metrics and not bad_parts:
            return
        what = [f"non-finite {', '.join(bad_metrics)}"] if bad_metrics else []
        what += [f"non-finite parameters in {', '.join(bad_parts)}"] if bad_parts else []
        raise TrainingDiverged(f"training diverged at update {self.counters['step']} "
                               f"({self._phase()} phase, env step {self.counters['env_step']}): {'; '.join(what)}; "
                               + self._divergence_advice())

    def _act(self, obs: dict, deterministic: bool, generator: torch.Generator | None = None,
             std_scale: float = 1.0) -> np.ndarray:
        """The agent's action; a non-finite one (finite weights can still overflow the
        activations) is divergence too, reported before the environment rejects it."""
        action = self.agent.act(obs, deterministic=deterministic, generator=generator, std_scale=std_scale)
        if not np.isfinite(action).all():
            raise TrainingDiverged(f"the policy produced a non-finite action after update {self.counters['step']} "
                                   f"({self._phase()} phase); {self._divergence_advice()}")
        return action

    def _phase(self) -> str:
        return "online" if self.counters["switched"] else "offline"

    def _divergence_advice(self) -> str:
        if self._last_finite is None:
            last = "no update of this process was finite"
        else:
            step, metrics = self._last_finite
            keys = [k for k in metrics if "loss" in k] + [k for k in self.agent.PROGRESS.values() if k in metrics]
            last = f"last finite update {step}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in dict.fromkeys(keys))
        if self.run_dir.latest.is_file():
            then = f"the last good checkpoint {self.run_dir.latest} is kept; resume={self.run_dir.root} with new rates"
        else:
            then = "no checkpoint had been written yet; start again with new rates"
        return (f"{last}. Lower the learning rates (algo.critic_lr, algo.actor_lr) or check "
                f"reward_scale/reward_bias: {then}")

    # ------------------------------------------------------------------ bookkeeping
    def _after_update(self, phase: str, final: bool, bar=None) -> None:
        cfg, step = self.cfg, self.counters["step"]
        if cfg.control_of is not None and step > self.switch_step:
            phase = CONTROL_PHASE
        early = phase != "offline" and step - self.switch_step in self._early
        evaluate = step % cfg.eval_every == 0 or final or early
        if step % cfg.log_every == 0 or evaluate:
            # Owed until written: a stop inside the evaluation saves the debt with the
            # checkpoint, and the resumed run pays it first (see finish_owed_bookkeeping).
            self.counters["row_owed"] = {"phase": phase, "evaluate": evaluate, "final": final}
            self._write_row(bar)
        self._checkpoint_if_due(final)

    def _checkpoint_if_due(self, final: bool) -> None:
        if self.counters["step"] % self.cfg.checkpoint_every == 0 or final:
            self.save_checkpoint(periodic=True)

    def _write_row(self, bar=None) -> None:
        owed, step = self.counters["row_owed"], self.counters["step"]
        row = {k: float(np.mean([m[k] for m in self._pending_metrics])) for k in self._pending_metrics[0]}
        # Time inside agent.update only: evaluations and env steps do not dilute the rate.
        row["updates_per_s"] = len(self._pending_metrics) / max(self._update_seconds, 1e-9)
        if owed["evaluate"]:
            result = self.evaluate()
            row.update(eval_success_rate=result.success_rate, eval_return=result.mean_return,
                       eval_grasp_rate=result.grasp_rate)
            if self.cfg.eval_stochastic:
                result = self.evaluate(deterministic=False)
                row.update(eval_stochastic_success_rate=result.success_rate, eval_stochastic_return=result.mean_return,
                           eval_stochastic_grasp_rate=result.grasp_rate)
        if owed["phase"] == "online":
            steps, seconds = self._env_timing
            if seconds > 0:  # stepping time only (policy calls included), no update or evaluation
                self._env_rate = {"env_steps_per_s": steps / seconds}
                self._env_timing = [0, 0.0]
            row.update(self._env_rate)
            row.update(training_episode_metrics(self._ended_episodes))
        if self.probe is not None:
            row.update(self.probe.measure(self.agent))
        env_step = self.counters["env_step"]
        if owed["phase"] == CONTROL_PHASE:  # the online run's env step at this many updates
            env_step = equivalent_env_step(self.cfg, step - self.switch_step)
        self.logger.log(owed["phase"], step, env_step, row)
        self._pending_metrics, self._update_seconds, self._ended_episodes = [], 0.0, []
        self.counters["row_owed"] = None
        if bar is not None:
            postfix = {label: f"{row[key]:.3g}" for label, key in self.agent.PROGRESS.items() if key in row}
            if owed["evaluate"]:
                postfix["success"] = f"{row['eval_success_rate']:.2f}"
            bar.set_postfix(postfix)

    def finish_owed_bookkeeping(self) -> None:
        """A run stopped inside an evaluation resumes by doing that evaluation, its metric row
        and its checkpoint, as the uninterrupted run did before its next update."""
        owed = self.counters.get("row_owed")
        if owed:
            self._write_row()
            self._checkpoint_if_due(owed["final"])

    def evaluate(self, deterministic: bool = True):
        """Episodes on fixed scenes; the first deterministic one saved as videos/step_<step>.mp4.
        The stochastic policy draws episode i's noise from its own generator, seeded by the
        episode's scene seed: the same noise at every evaluation, for any num_envs, and the
        training run's random stream untouched (so eval_stochastic changes no training)."""
        from calql_vision.evaluation import evaluate_policy
        from calql_vision.video import EpisodeVideo, video_camera, write_mp4

        cfg = self.cfg
        record = cfg.eval_video and deterministic
        video = EpisodeVideo(camera=video_camera(cfg.task.cameras), size=cfg.video_size) if record else None
        generators: dict[int, torch.Generator] = {}

        def act(obs: dict, episode: int) -> np.ndarray:
            if deterministic:
                return self._act(obs, deterministic=True)
            if episode not in generators:
                generators[episode] = torch.Generator().manual_seed(self._eval_seed + episode)
            return self._act(obs, deterministic=False, generator=generators[episode])

        def record_first_episode(episode: int, obs: dict, info: dict, renderer) -> None:
            self.stop.check()  # an evaluation is long; a stop does not wait for its end
            if video is not None and episode == 0:
                video.add(renderer, obs, info, len(video))

        # The workers' "eval" environments: the training episodes in progress stay as they are.
        result = evaluate_policy(self.envs, act, cfg.eval_episodes, self._eval_seed, on_frame=record_first_episode)
        if video is not None:
            write_mp4(self.run_dir.video(self.counters["step"]), video.frames)
            self.logger.video(self.counters["step"], self.run_dir.video(self.counters["step"]))
        return result

    def save_calibration(self, phase: str) -> None:
        from calql_vision.calibration import q_and_return, save_calibration

        rng = np.random.default_rng(0)  # a fixed sample, and the training RNG stays untouched
        arrays = {}
        for name, replay in (("valid", self.heldout_replay), ("online", self.online_replay), ("train", self.offline_replay)):
            arrays[f"q_{name}"], arrays[f"g_{name}"] = q_and_return(self.agent, replay, rng, self.device)
        step = self.counters["step"]
        save_calibration(self.run_dir.calibration(step), phase, step, self.counters["env_step"], **arrays)
        self.logger.calibration({"phase": phase, "step": step, "env_step": self.counters["env_step"], **arrays})

    def save_checkpoint(self, periodic: bool = False) -> None:
        """latest.pt, and step_<n>.pt for the periodic ones. A stop's checkpoint (not periodic)
        may come at an update that already has its step file (in a warm-up, or at the switch),
        with more episodes behind it; a step file, once written, is never replaced."""
        from calql_vision.checkpoint import atomic_torch_save, capture_rng_states

        # The state is finite here: only updates change it, and _update checks every one.
        step, episodes = self.counters["step"], self.counters["episodes"]
        # The replay goes first, named by update and episode count; the checkpoint names the
        # replay it belongs to, so a kill between the two writes leaves a consistent older pair.
        replay = self.run_dir.replay(step, episodes) if len(self.online_replay) > 0 else None
        if replay is not None:
            self.online_replay.save(replay)
        state = {
            "agent": self.agent.state_dict(),
            "counters": dict(self.counters),
            "rng": capture_rng_states(self.rng),
            "online_replay": replay.name if replay is not None else None,
            # Seeds and actions so far; a resume replays them (calql_vision/online_episodes.py).
            "episodes_in_progress": (self.online_episodes.state() if self.online_episodes.slots
                                     else self._saved_episodes),
            # The metrics since the last row: the first row after a resume averages the same
            # updates and episodes, and measures the same drift, as an uninterrupted run's.
            "log_buffer": {"pending_metrics": self._pending_metrics, "update_seconds": self._update_seconds,
                           "env_rate": self._env_rate, "ended_episodes": self._ended_episodes,
                           "probe": self.probe.state() if self.probe is not None else None},
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }
        step_file = self.run_dir.checkpoint(step)
        if periodic or not step_file.exists():
            atomic_torch_save(state, step_file)
        atomic_torch_save(state, self.run_dir.latest)
        for old in self.run_dir.replays():
            if replay is None or old.name != replay.name:
                old.unlink()

    def _restore(self, checkpoint: dict) -> None:
        from calql_vision.checkpoint import restore_rng_states

        self.agent.load_state_dict(checkpoint["agent"])
        self.counters.update(checkpoint["counters"])
        restore_rng_states(checkpoint["rng"], self.rng)
        self._saved_episodes = checkpoint.get("episodes_in_progress")
        log_buffer = checkpoint.get("log_buffer") or {}  # absent from older checkpoints
        self._pending_metrics = list(log_buffer.get("pending_metrics", []))
        self._update_seconds = float(log_buffer.get("update_seconds", 0.0))
        self._env_rate = dict(log_buffer.get("env_rate", {}))
        # An older checkpoint's episodes are (return, success): whether they grasped is unknown.
        self._ended_episodes = [(float(e[0]), bool(e[1]), None if len(e) < 3 else bool(e[2]))
                                for e in log_buffer.get("ended_episodes", [])]
        if self.probe is not None:
            self.probe.load_state(log_buffer.get("probe"))


def training_episode_metrics(episodes: list[tuple]) -> dict[str, float]:
    """train_success_rate, train_return and train_grasp_rate over the training episodes
    (return, success, grasped) that ended since the previous row, and how many
    (train_episodes; the others empty at 0, the grasp rate also while an episode from an older
    checkpoint, grasped None, is among them)."""
    metrics = {"train_episodes": float(len(episodes))}
    if episodes:
        metrics["train_success_rate"] = float(np.mean([success for _, success, _ in episodes]))
        metrics["train_return"] = float(np.mean([ret for ret, _, _ in episodes]))
        if all(grasped is not None for _, _, grasped in episodes):
            metrics["train_grasp_rate"] = float(np.mean([grasped for _, _, grasped in episodes]))
    return metrics


# ---------------------------------------------------------------------- entry point
def load_saved_replay(path: Path):
    from calql_vision.replay import FrameReplay

    try:
        return FrameReplay.load(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # a damaged npz
        raise ConfigError(f"{path}: cannot read the online replay this checkpoint needs ({error})") from None

def main(argv: list[str] | None = None) -> int:
    from calql_vision.online_episodes import ReplayMismatch
    from datasets import DatasetError
    from datasets.robomimic_writer import OutputError
    from envs.vector import EnvWorkerError

    argv = sys.argv[1:] if argv is None else argv
    stop = StopSignals().install()
    launch = None
    try:
        pause_point("launch")
        launch = build(argv)
        print(f"run directory: {launch.run.root}")
        pause_point("run-directory")
        trainer = Trainer(launch.cfg, launch.run, launch.checkpoint, launch.init_state, stop)
        if not launch.is_new:
            launch.write_config()
    except BaseException as error:
        if launch is not None:
            launch.abandon()
        if isinstance(error, StopRequested):
            print(f"{error} before training began", file=sys.stderr)
            return error.exit_code
        user_errors = (ConfigError, FileNotFoundError, PermissionError, DatasetError, RunDirBusy, OutputError,
                       EnvWorkerError)
        if isinstance(error, user_errors) or getattr(error, "errno", None) in DISK_FULL_ERRNOS:
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise
    # From here a signal only asks for a stop, whatever the trainer is doing (cleanup included).
    with stop.deferred():
        try:
            trainer.run()
            stop.check()  # a stop that came during the final cleanup: the last checkpoint is saved
        except TrainingDiverged as error:
            print(f"error: {error}", file=sys.stderr)
            return DIVERGED_EXIT_CODE
        except EnvWorkerError as error:
            print(f"error: {error}\n{_last_checkpoint(launch.run)}; continue with: python -m calql_vision.train "
                  f"resume={launch.run.root}", file=sys.stderr)
            return ENV_WORKER_EXIT_CODE
        except ReplayMismatch as error:
            print(f"error: resume={launch.run.root}: {error}", file=sys.stderr)
            return 1
        except OSError as error:
            if error.errno not in DISK_FULL_ERRNOS:
                raise
            # Every file is written whole or not at all (atomic_file), so the last checkpoint stands.
            print(f"error: cannot write {error.filename or launch.run.root}: {error.strerror}; "
                  f"{_last_checkpoint(launch.run)}: free space, then resume={launch.run.root}", file=sys.stderr)
            return 2
        except StopRequested as request:
            counters = trainer.counters
            saved = (f"checkpoint {launch.run.latest}" if request.at_safe_point
                     else f"stopped at once, no new checkpoint; {_last_checkpoint(launch.run)}")
            print(f"{request} at update {counters['step']}, env step {counters['env_step']}: {saved}. "
                  f"Continue with: python -m calql_vision.train resume={launch.run.root}", file=sys.stderr)
            return request.exit_code
        finally:
            launch.lock.release()
    print(f"done: {launch.run.root}")
    return 0


def _last_checkpoint(run: RunDir) -> str:
    return f"the last complete checkpoint {run.latest} is kept" if run.latest.is_file() else "no checkpoint exists yet"


if __name__ == "__main__":
    sys.exit(run_program(main))
