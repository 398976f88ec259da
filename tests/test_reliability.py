"""Runs that cannot be lost: settings checked before anything exists, divergence stopped before
it is saved, resumes that check before they touch a run, a lock, a fallback checkpoint, clean
stops on SIGINT/SIGTERM, and kill -9 at random moments (real trainer, real env, real files)."""
from __future__ import annotations

import csv
import importlib.util
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from calql_vision.checkpoint import checkpoint_differences
from calql_vision.config import ConfigError, TrainConfig, load_config
from calql_vision.run_dir import RunDir, RunDirBusy, find_resume_point
from calql_vision.startup import PAUSE_VARIABLE
from calql_vision.launch import DESCRIPTION, PRESETS, machine_preset
from conftest import ROOT, TINY_ALGO_ARGS, TINY_STATE_ARGS, TINY_TRAIN_ARGS


def train_config(*args: str):
    return load_config(TrainConfig, list(args), "calql_vision.train", DESCRIPTION, presets=PRESETS,
                       base_file="base.yaml")


def run_train(args: list[str], runs_root: Path | None = None) -> subprocess.CompletedProcess:
    root = [f"runs_root={runs_root}"] if runs_root is not None else []
    return subprocess.run([sys.executable, "-m", "calql_vision.train", *args, *root],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def the_run(runs_root: Path) -> Path:
    (run_dir,) = runs_root.glob("*/calql/*")
    return run_dir


def read_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def last_line(stderr: str) -> str:
    return stderr.replace("\r", "\n").strip().splitlines()[-1]


# ---------------------------------------------------------------------- settings
@pytest.mark.parametrize("args, message", [
    (["batch_size=0"], "batch_size=0: expected >= 1"),
    (["batch_size=-5"], "batch_size=-5: expected >= 1"),
    (["algo.utd=0"], "algo.utd=0: expected >= 1"),
    (["eval_every=0"], "eval_every=0: expected >= 1"),
    (["checkpoint_every=0"], "checkpoint_every=0: expected >= 1"),
    (["eval_episodes=0"], "eval_episodes=0: expected >= 1"),
    (["precision=fp16"], "precision=fp16: expected one of auto | bf16 | fp32"),
    (["seed=-1"], "seed=-1: expected >= 0"),
    (["algo.discount=1.5"], "algo.discount=1.5: expected (0, 1)"),
    (["algo.mixing_ratio=2"], "algo.mixing_ratio=2.0: expected [0, 1]"),
    (["reward_scale=nan"], "reward_scale=nan: expected a number"),
    (["reward_bias=inf"], "reward_bias=inf: expected a number"),
    (["algo.critic_lr=0"], "algo.critic_lr=0.0: expected > 0"),
    (["algo=iql", "algo.expectile=1"], "algo.expectile=1.0: expected (0, 1)"),
    (["encoder.strides=[2,0]"], "encoder.strides=[2, 0]: expected >= 1"),
    (["device=gpu"], "device=gpu: expected auto | cpu | cuda | cuda:<index>"),
    (["algo=rlpd", "algo.target_critics=11"], "algo.target_critics=11: expected at most algo.num_critics=10"),
    (["offline_steps=0", "online_env_steps=0"], "nothing to train"),
    (["algo=rlpd", "online_env_steps=5000"], "algo.warmup_steps=5000: the warm-up takes all online_env_steps=5000"),
    (["algo=sac", "offline_steps=100", "online_env_steps=0"], "online_env_steps=0: algo=sac learns online only"),
    (["algo=calql", "algo.warmup_steps=200", "online_env_steps=100"], "would make no update"),
    (["video_size=65"], "video_size=65: expected an even number"),
    (["algo=aca", "algo.critic_updates=2"], "algo.critic_updates=2: expected 1 for algo=aca"),
    (["task.cameras=[]", "encoder=conv"], "encoder.kind=conv: task.cameras=[] has no images; use encoder=state"),
    (["batch_size=abc"], "batch_size"),
])
def test_out_of_range_settings_are_rejected_naming_key_value_and_range(args, message):
    with pytest.raises(ConfigError) as error:
        train_config(*args)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_valid_extremes_and_switched_off_clips_are_accepted():
    cfg = train_config("algo.mixing_ratio=0", "algo.mixing_ratio=null", "algo.cql_clip_diff_min=-inf",
                       "offline_steps=0", "algo.discount=0.999")
    assert cfg.algo.mixing_ratio is None and cfg.algo.cql_clip_diff_min == float("-inf")


def test_without_a_gpu_the_cpu_preset_is_picked_and_said_and_the_command_line_still_wins():
    argv, note = machine_preset(["task=pick_place_visual", "offline_steps=6000", "device=cpu"])
    assert argv[-1] == "preset=cpu" and note.startswith("note: no GPU, so preset=cpu") and "\n" not in note
    cfg = train_config(*argv)
    assert (cfg.task.image_size, cfg.encoder.channels, cfg.batch_size) == (64, 16, 64)
    assert (cfg.offline_steps, cfg.online_env_steps) == (6000, 20_000)  # the command line's value, the preset's
    # The note names exactly what the preset set in this run, with the values the run got.
    said = dict(item.split("=", 1) for item in note.split(" sets ", 1)[1].split(" (", 1)[0].split())
    assert "offline_steps" not in said and said["online_env_steps"] == "20000"
    assert {key: str(OmegaConf.select(cfg, key)).replace(" ", "") for key in said} == said


@pytest.mark.parametrize("argv", [["preset=none"], ["preset=quick"], ["device=cuda"], ["device=cuda:1"]])
def test_a_named_preset_or_a_cuda_device_keeps_the_command_line_as_it_is(argv):
    assert machine_preset(argv) == (argv, None)


def test_preset_none_keeps_the_paper_scale_of_the_base_config():
    cfg = train_config(*machine_preset(["task=pick_place_visual", "preset=none", "device=cpu"])[0])
    assert (cfg.task.image_size, cfg.batch_size, cfg.offline_steps) == (84, 256, 100_000)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["reward_scale=nan"], ["batch_size=0"], ["algo.mixing_ratio=2"],
                                  ["algo=rlpd", "offline_steps=0", "online_env_steps=3000"]])
def test_a_bad_setting_stops_the_program_before_a_run_directory_exists(args, tmp_path):
    result = run_train(["task=lift_visual", *args], tmp_path / "runs")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- run directories
def _create_many(runs_root: str, count: int, queue) -> None:
    queue.put([str(RunDir.create(runs_root, "task", "algo").root) for _ in range(count)])


def test_run_directories_created_at_once_by_several_processes_are_all_distinct(tmp_path):
    queue = multiprocessing.get_context("fork").Queue()
    workers = [multiprocessing.get_context("fork").Process(target=_create_many, args=(str(tmp_path), 25, queue))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    created = [path for _ in workers for path in queue.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(created) == len(set(created)) == 100


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    run = RunDir(tmp_path)
    first = run.lock()
    with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
        run.lock()
    first.release()
    run.lock().release()  # free again once released


def _save(path: Path, step: int, replay: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"counters": {"step": step}, "online_replay": replay}, path)


def _load(path: Path) -> dict:
    from calql_vision.checkpoint import load_checkpoint

    return load_checkpoint(path)


def test_resume_point_falls_back_to_the_newest_intact_step_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    for step in (4, 8, 12):
        _save(run.checkpoint(step), step)
    point = find_resume_point(run, _load)  # no latest.pt: a kill before the first copy
    assert point.path == run.checkpoint(12) and point.skipped == ["latest.pt: missing"]

    run.latest.write_bytes(run.checkpoint(12).read_bytes()[:100])  # a damaged latest.pt
    point = find_resume_point(run, _load)
    assert point.path == run.checkpoint(12) and "unreadable" in point.skipped[0]

    run.checkpoint(12).write_bytes(b"")  # damaged too; step 8 names a replay that is gone
    _save(run.checkpoint(8), 8, replay="online_replay_8.npz")
    point = find_resume_point(run, _load)
    assert point.path == run.checkpoint(4)
    assert [s.split(":")[0] for s in point.skipped] == ["latest.pt", "step_12.pt", "step_8.pt"]

    _save(run.latest, 12)
    assert find_resume_point(run, _load).path == run.latest and find_resume_point(run, _load).skipped == []

    _save(run.latest, 8)  # a kill between writing step_16.pt and copying it to latest.pt
    _save(run.checkpoint(16), 16)
    point = find_resume_point(run, _load)
    assert point.path == run.checkpoint(16) and point.skipped == ["latest.pt: older than step_16.pt"]
    for path in run.checkpoints.iterdir():
        path.unlink()
    assert find_resume_point(run, _load) is None


# ---------------------------------------------------------------------- the agent's part
def test_non_finite_parts_names_the_module_and_learning_rates_follow_the_config():
    from omegaconf import OmegaConf

    from calql_vision.agents import ObsSpec, make_agent

    cfg = train_config(*[a for a in TINY_TRAIN_ARGS if a.startswith(("task", "encoder", "algo"))])
    spec = ObsSpec(("agentview_image",), (3, 48, 48), 9, 7)
    agent = make_agent(cfg.algo, cfg.encoder, spec, torch.device("cpu"), "fp32")
    assert agent.non_finite_parts() == []
    with torch.no_grad():
        next(agent.critic.parameters()).view(-1)[0] = float("nan")
        agent.log_alpha.fill_(float("inf"))
    assert agent.non_finite_parts() == ["critic", "log_alpha"]

    state = make_agent(cfg.algo, cfg.encoder, spec, torch.device("cpu"), "fp32").state_dict()
    faster = OmegaConf.merge(cfg.algo, {"critic_lr": 1e-5, "actor_lr": 2e-5})
    resumed = make_agent(faster, cfg.encoder, spec, torch.device("cpu"), "fp32")
    resumed.load_state_dict(state)  # saved with the old rates; the config's win
    assert resumed.critic_optimizer.param_groups[0]["lr"] == 1e-5
    assert resumed.cql_alpha_optimizer.param_groups[0]["lr"] == 1e-5
    assert resumed.actor_optimizer.param_groups[0]["lr"] == 2e-5


# ---------------------------------------------------------------------- the trainer, end to end

@pytest.fixture(scope="module")
def short_run(lift_state_demos, tmp_path_factory) -> Path:
    """A finished low-dim run that the resume tests copy and damage: what a resume reads and
    refuses does not depend on what the run observes (pixel resumes: the stop-signal, kill -9
    and per-algorithm stop-and-resume tests)."""
    runs_root = tmp_path_factory.mktemp("runs")
    result = run_train([*TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"], f"dataset={lift_state_demos}", "offline_steps=8",
                        "online_env_steps=15", "eval_every=4", "checkpoint_every=4"], runs_root)
    assert result.returncode == 0, result.stderr[-3000:]
    return the_run(runs_root)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["algo.critic_lr=1e8"], "non-finite td_loss="),  # a diverging learning rate (inf or nan)
    (["reward_bias=-1e30"], "non-finite"),  # finite settings whose losses overflow
])
def test_divergence_stops_with_a_diagnostic_and_keeps_the_last_finite_checkpoint(args, expected, lift_state_demos,
                                                                                tmp_path):
    result = run_train([*TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"], f"dataset={lift_state_demos}", "offline_steps=8",
                        "online_env_steps=15", "checkpoint_every=1", *args], tmp_path / "runs")
    assert result.returncode == 3, result.stderr[-3000:]
    message = last_line(result.stderr)
    assert message.startswith("error: training diverged at update ") and expected in message
    assert "Traceback" not in result.stderr
    run_dir = the_run(tmp_path / "runs")
    assert "last finite update" in message or "no update of this process was finite" in message
    if (run_dir / "checkpoints" / "latest.pt").exists():
        state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
        tensors = [t for module in state["agent"].values() if isinstance(module, dict)
                   for t in module.values() if torch.is_tensor(t) and t.is_floating_point()]
        assert tensors and all(bool(t.isfinite().all()) for t in tensors)
    for path in (run_dir / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=False)
        assert all(bool(p.isfinite().all()) for p in state["agent"]["critic"].values())


@pytest.mark.slow
def test_a_resume_that_cannot_apply_leaves_the_run_untouched(short_run, tmp_path):
    run_dir = copy_run(short_run, tmp_path)
    def contents() -> dict:  # .lock included: it keeps its last holder's pid
        return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    before = contents()
    result = run_train([f"resume={run_dir}", "batch_size=16", "algo.cql_weight=1", "online_env_steps=30"])
    assert result.returncode == 2
    message = last_line(result.stderr)
    assert message.startswith("error: ") and "batch_size (8 -> 16)" in message
    assert "algo.cql_weight (5.0 -> 1.0)" in message and "online_env_steps" not in message.split("may change")[0]
    assert contents() == before, "nothing in the run changed, config.yaml included"
    evaluate = subprocess.run([sys.executable, "-m", "calql_vision.evaluate", f"run={run_dir}", "episodes=1",
                               "video=false"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]


@pytest.mark.slow
def test_a_learning_rate_override_on_resume_reaches_the_optimizers(short_run, tmp_path):
    run_dir = copy_run(short_run, tmp_path)
    result = run_train([f"resume={run_dir}", "online_env_steps=30", "algo.critic_lr=1e-5", "algo.actor_lr=2e-5"])
    assert result.returncode == 0, result.stderr[-3000:]
    agent = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["agent"]
    assert agent["critic_optimizer"]["param_groups"][0]["lr"] == 1e-5
    assert agent["actor_optimizer"]["param_groups"][0]["lr"] == 2e-5
    assert "critic_lr: 1.0e-05" in (run_dir / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_resume_falls_back_when_latest_is_missing_or_truncated_and_removes_stale_temporaries(
        damage, short_run, tmp_path):
    run_dir = copy_run(short_run, tmp_path)
    latest = run_dir / "checkpoints" / "latest.pt"
    if damage == "missing":
        latest.unlink()
    else:
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    stale = [run_dir / "checkpoints" / ".latest.pt.abc123.tmp", run_dir / ".online_replay_23.npz.xyz.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    result = run_train([f"resume={run_dir}", "online_env_steps=30"])
    assert result.returncode == 0, result.stderr[-3000:]
    newest = max(int(p.stem.removeprefix("step_")) for p in (run_dir / "checkpoints").glob("step_*.pt"))
    why = {"missing": "latest.pt: missing", "truncated": "latest.pt: unreadable"}[damage]
    assert f"note: resuming from {run_dir / 'checkpoints'}/step_" in result.stdout and why in result.stdout
    assert not any(path.exists() for path in stale)
    assert torch.load(latest, weights_only=False)["counters"]["step"] == newest


@pytest.mark.slow
def test_a_bad_value_edited_into_a_run_s_config_yaml_is_reported_naming_the_file(short_run, tmp_path):
    run_dir = copy_run(short_run, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("batch_size: 8", "batch_size: -3"))
    result = run_train([f"resume={run_dir}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last_line(result.stderr) == f"error: {config}: batch_size=-3: expected >= 1"


@pytest.mark.slow
def test_a_second_trainer_on_a_held_run_is_refused(short_run, tmp_path):
    run_dir = copy_run(short_run, tmp_path)
    holder = RunDir(run_dir).lock()
    try:
        before = (run_dir / "config.yaml").read_bytes()
        result = run_train([f"resume={run_dir}", "online_env_steps=30"])
    finally:
        holder.release()
    assert result.returncode == 2
    assert last_line(result.stderr) == (f"error: {run_dir} is in use by another process (pid {os.getpid()}); "
                                        "wait for it to finish or stop it first")
    assert (run_dir / "config.yaml").read_bytes() == before


def start_train(args: list[str], new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "calql_vision.train", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_session)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM])  # SIGINT takes the same path (one handler for both)
def test_a_stop_signal_saves_a_checkpoint_that_resumes_to_the_uninterrupted_result(signum, lift_demos, tmp_path):
    # Evaluations often (2 episodes every 4 updates): the stop often lands inside one. Two
    # environment workers: the stop lands inside two episodes, which the resume replays.
    args = [*TINY_TRAIN_ARGS, f"dataset={lift_demos}", "offline_steps=8", "online_env_steps=30",
            "checkpoint_every=1000", "eval_every=4", "eval_episodes=2", "num_envs=2"]
    whole = run_train(args, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    process = start_train([*args, f"runs_root={tmp_path / 'parts'}"])
    # Stop during the online phase, where an episode may be cut in half.
    wait_for(lambda: any((tmp_path / "parts").glob("lift_visual/calql/*/online_replay_*.npz"))
             or any((tmp_path / "parts").glob("lift_visual/calql/*/calibration/*.npz")), process)
    time.sleep(random.Random(int(signum)).uniform(0.0, 1.0))
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, stderr[-3000:]
    run_dir = the_run(tmp_path / "parts")
    message = last_line(stderr)
    assert message.startswith(f"stopped by {signal.Signals(signum).name} at update ")
    assert f"resume={run_dir}" in message and "Traceback" not in stderr
    resumed = run_train([f"resume={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(the_run(tmp_path / "whole") / "checkpoints" / "latest.pt", weights_only=False)
    got = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    assert checkpoint_differences(expected, got) == []
    # The metric rows too: none lost or repeated (an evaluation cut short is done on resume),
    # and each averages the same updates. Only the timing columns may differ.
    timing = {"updates_per_s", "env_steps_per_s"}
    assert ([{k: v for k, v in row.items() if k not in timing} for row in read_rows(run_dir)]
            == [{k: v for k, v in row.items() if k not in timing} for row in read_rows(the_run(tmp_path / "whole"))])


def as_from_a_terminal() -> None:
    """The child's stop signals at their defaults, as a program typed into a terminal has them: a
    suite run as a background job (`cmd &`) would hand its children SIGINT ignored, and a
    program rightly leaves an ignored signal ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("stage, signum, message", [
    ("import", signal.SIGINT, "stopped by SIGINT during start-up"),
    ("import", signal.SIGTERM, "stopped by SIGTERM during start-up"),
    ("launch", signal.SIGINT, "stopped by SIGINT before training began"),
    ("run-directory", signal.SIGINT, "stopped by SIGINT before training began"),
    ("environments", signal.SIGTERM, "stopped by SIGTERM before training began"),
])
def test_a_stop_at_any_stage_of_start_up_is_one_line_and_leaves_no_run_directory(stage, signum, message, lift_demos,
                                                                                   tmp_path):
    # The program pauses at the named stage (calql_vision/startup.py), so the signal arrives
    # there however loaded the machine is.
    process = subprocess.Popen([sys.executable, "-m", "calql_vision.train", *TINY_TRAIN_ARGS, f"dataset={lift_demos}",
                                f"runs_root={tmp_path / 'runs'}"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, PAUSE_VARIABLE: stage},
                               preexec_fn=as_from_a_terminal)
    seen = []
    while not seen or f"paused at {stage}" not in seen[-1]:
        line = process.stderr.readline()
        assert line, f"the program ended before pausing at {stage}: {''.join(seen)[-2000:]}"
        seen.append(line)
    process.send_signal(signum)
    _, rest = process.communicate(timeout=300)
    stderr = "".join(seen) + rest
    assert process.returncode == 128 + signum, stderr[-2000:]
    assert last_line(stderr) == message and "Traceback" not in stderr, stderr[-2000:]
    assert not list((tmp_path / "runs").glob("lift_visual/calql/*"))


def stop_program_paused_at(program: str, stage: str, signum: int, out: Path) -> tuple[int, str]:
    """`python -m calql_vision.<program> out=<out>` paused at `stage`, then sent `signum`: its
    return code and what it wrote on stderr after the pause."""
    process = subprocess.Popen([sys.executable, "-m", f"calql_vision.{program}", f"out={out}"], cwd=ROOT,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, PAUSE_VARIABLE: stage}, preexec_fn=as_from_a_terminal)
    first = process.stderr.readline()
    assert f"paused at {stage}" in first, first + process.communicate()[1][-2000:]
    process.send_signal(signum)
    _, rest = process.communicate(timeout=120)
    return process.returncode, rest


@pytest.mark.slow
@pytest.mark.parametrize("program, signum", [
    ("collect", signal.SIGINT), ("evaluate", signal.SIGTERM), ("compare", signal.SIGINT), ("bench", signal.SIGTERM),
    ("bench_render", signal.SIGINT), ("plot", signal.SIGTERM), ("export_lerobot", signal.SIGINT),
])
def test_every_program_stopped_while_it_loads_says_one_line(program, signum, tmp_path):
    returncode, rest = stop_program_paused_at(program, "import", signum, tmp_path / "out")
    assert returncode == 128 + signum, rest[-2000:]
    assert rest.strip() == f"stopped by {signal.Signals(signum).name} during start-up"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("program, signum", [
    ("train", signal.SIGINT), ("collect", signal.SIGTERM), ("evaluate", signal.SIGINT), ("compare", signal.SIGTERM),
    ("bench", signal.SIGINT), ("bench_render", signal.SIGTERM), ("plot", signal.SIGINT), ("export_lerobot", signal.SIGTERM),
])
def test_every_program_stopped_as_its_main_begins_says_one_line(program, signum, tmp_path):
    # The moment after the start-up guard hands the signals back and before the program's own
    # handling: run_program (calql_vision/startup.py) reports the stop.
    returncode, rest = stop_program_paused_at(program, "main", signum, tmp_path / "out")
    assert returncode == 128 + signum, rest[-2000:]
    assert rest.strip() == f"stopped by {signal.Signals(signum).name}"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"plain text, not HDF5\n", "truncated"])
def test_an_unreadable_dataset_is_one_error_line_and_leaves_no_run(content, lift_demos, tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(lift_demos.read_bytes()[:200_000] if content == "truncated" else content)
    result = run_train([*TINY_TRAIN_ARGS, f"dataset={bad}"], tmp_path / "runs")
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result.stderr).startswith(f"error: {bad}") and "Traceback" not in result.stderr
    assert not list((tmp_path / "runs").glob("lift_visual/calql/*"))


@pytest.mark.slow
def test_a_run_stopped_before_its_first_checkpoint_starts_over_and_trains_as_it_would_have(short_run, tmp_path):
    run_dir = copy_run(short_run, tmp_path)
    # What a kill before the first checkpoint leaves: settings and some rows, no checkpoint.
    shutil.rmtree(run_dir / "checkpoints")
    for replay in run_dir.glob("online_replay_*.npz"):
        replay.unlink()
    result = run_train([f"resume={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starts again from its saved settings" in result.stdout
    timing = {"updates_per_s", "env_steps_per_s"}

    def rows(path: Path) -> list[dict]:
        with open(path / "metrics.csv", newline="") as f:
            return [{k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(f)]

    assert rows(run_dir) == rows(short_run)  # the same run, row for row: nothing doubled, nothing lost
    assert (run_dir / "checkpoints" / "latest.pt").is_file()


@pytest.mark.slow
def test_a_damaged_checkpoint_or_replay_is_one_error_line(short_run, tmp_path):
    run_dir = copy_run(short_run, tmp_path)
    for path in (run_dir / "checkpoints").glob("*.pt"):
        path.write_bytes(b"not a checkpoint")
    result = run_train([f"resume={run_dir}", "online_env_steps=30"])
    assert result.returncode == 2 and "no usable checkpoint" in last_line(result.stderr)
    evaluate = subprocess.run([sys.executable, "-m", "calql_vision.evaluate", f"run={run_dir}", "video=false"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert evaluate.returncode == 2 and last_line(evaluate.stderr).startswith("error: cannot read checkpoint")

    run_dir = copy_run(short_run, tmp_path / "second")
    (replay,) = run_dir.glob("online_replay_*.npz")
    replay.write_bytes(replay.read_bytes()[:1000])
    result = run_train([f"resume={run_dir}", "online_env_steps=30"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last_line(result.stderr).startswith(f"error: {replay}: cannot read the online replay")


def load_kill_trials():
    spec = importlib.util.spec_from_file_location("kill_resume_trials", ROOT / "scripts" / "kill_resume_trials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_the_uninterrupted_run(lift_demos, tmp_path):
    """Two trials here (scripts/kill_resume_trials.py runs as many as asked)."""
    trials = load_kill_trials()
    assert trials.main([f"dataset={lift_demos}", "trials=2", "seed=3", f"out={tmp_path}"]) == 0


@pytest.mark.slow
def test_a_full_disk_is_one_error_line_and_keeps_the_last_complete_checkpoint(lift_demos, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        result = run_train([*TINY_TRAIN_ARGS, f"dataset={lift_demos}", "offline_steps=8", "online_env_steps=15"],
                           disk / "runs")
        assert result.returncode == 2, result.stderr[-3000:]
        message = last_line(result.stderr)
        assert message.startswith("error: cannot write ") and "No space left on device" in message
        assert "Traceback" not in result.stderr
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")], "no temporary file is left"
        run_dir = the_run(disk / "runs")
        assert f"resume={run_dir}" in message
        for path in (run_dir / "checkpoints").glob("*.pt"):
            torch.load(path, weights_only=False)  # every checkpoint that exists is whole
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_the_docs_and_help_name_exactly_the_settings_a_resume_may_change():
    from calql_vision.launch import RESUMABLE

    readme = (ROOT / "docs" / "training.md").read_text()
    paragraph = readme[readme.index("A resume may change only"):].split("New learning rates")[0]
    named = {word.strip("`,.:") for word in paragraph.split() if word.startswith("`")}
    assert named == set(RESUMABLE)
    assert all(key in DESCRIPTION for key in RESUMABLE)


@pytest.mark.slow
def test_ctrl_c_while_training_saves_a_checkpoint_and_says_how_to_resume(lift_demos, tmp_path):
    process = start_train([*TINY_TRAIN_ARGS, f"dataset={lift_demos}", "offline_steps=4", "online_env_steps=2000",
                           "eval_every=1000", "num_envs=2", f"runs_root={tmp_path / 'runs'}"], new_session=True)
    # In the online phase, where the trainer mostly waits for its environment workers.
    wait_for(lambda: any((tmp_path / "runs").glob("lift_visual/calql/*/calibration/*.npz")), process)
    time.sleep(1.0)
    # As a terminal's Ctrl-C: to the whole foreground process group (environment workers
    # included, had they been in it).
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    run_dir = the_run(tmp_path / "runs")
    assert process.returncode == 130 and "Traceback" not in stderr
    step = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["counters"]["step"]
    env_step = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["counters"]["env_step"]
    assert env_step > 0
    assert last_line(stderr) == (f"stopped by SIGINT at update {step}, env step {env_step}: checkpoint "
                                 f"{run_dir / 'checkpoints' / 'latest.pt'}. Continue with: "
                                 f"python -m calql_vision.train resume={run_dir}")


# ---------------------------------------------------------------------- memory of the workers
def test_workers_beyond_the_available_memory_are_refused_with_the_number_that_fits():
    from calql_vision.hardware import check_worker_memory

    check_worker_memory(5, cameras=True, available=int(10e9))  # 5 x 1.5 GB + 2 GB kept: fits
    with pytest.raises(ConfigError) as error:
        check_worker_memory(6, cameras=True, available=int(10e9))
    assert "num_envs=6" in str(error.value) and "at most 5 fit here" in str(error.value)
    check_worker_memory(8, cameras=False, available=int(10e9))  # low-dim workers are smaller
    check_worker_memory(1, cameras=True, available=int(1e9))  # one worker is always tried


@pytest.mark.slow
@pytest.mark.parametrize("program", ["train", "collect"])
def test_a_num_envs_the_machine_cannot_hold_stops_before_any_worker_starts(program, tmp_path):
    out = tmp_path / "demos.hdf5"
    args = ["task=lift_state", "num_envs=100000", f"runs_root={tmp_path / 'runs'}"] if program == "train" else [
        "task=lift_state", "num_envs=100000", "episodes=2", f"out={out}"]
    result = subprocess.run([sys.executable, "-m", f"calql_vision.{program}", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert last_line(result.stderr).startswith("error: num_envs=100000: an environment worker takes about")
    assert "fit here" in last_line(result.stderr) and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("config.yaml"))
    assert not out.exists()


@pytest.mark.slow
def test_the_workers_of_a_killed_trainer_end_without_a_word(lift_state_demos, tmp_path):
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "calql_vision.train", *TINY_STATE_ARGS,
                                    f"dataset={lift_state_demos}", "num_envs=2", "offline_steps=4",
                                    "online_env_steps=100000", "eval_every=100000", f"runs_root={tmp_path / 'runs'}"],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 300
    while "online:" not in log.read_text():  # both workers are stepping
        assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    # The workers, and multiprocessing's resource tracker (which frees the shared memory a
    # killed trainer leaves, and used to say so in a warning).
    workers = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
    assert len(workers) >= 3 and any(b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
                                     for pid in workers)
    before = len(log.read_text())
    process.kill()
    process.wait()
    deadline = time.time() + 120
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
              for pid in workers):
        assert time.time() < deadline, "the workers outlived their trainer"
        time.sleep(0.1)
    after = log.read_text()[before:].replace("\r", "\n")
    assert "Traceback" not in after and "Error" not in after and "Warning" not in after, after[-3000:]


def test_the_start_up_guard_leaves_ignored_signals_and_handlers_set_on_purpose_alone():
    from calql_vision import startup

    before = {signum: signal.getsignal(signum) for signum in startup.STOP_SIGNALS}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a program started with `cmd &` in a script
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        startup.guard_startup()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is startup._stop_during_startup
        startup.ready()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is startup._exit_on_sigterm

        def own(signum, frame):
            pass

        signal.signal(signal.SIGTERM, own)
        startup.ready()
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
