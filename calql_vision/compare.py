"""Compare algorithms over seeds: a grid of training runs, a table with 95% intervals, figures.

    python -m calql_vision.compare task=lift_visual algos=[calql,cql] seeds=[0,1,2] jobs=2 \\
        offline_steps=6000 online_env_steps=20000 eval_every=1000 eval_episodes=20
    python -m calql_vision.compare task=lift_visual algos=[calql,wsrl] seeds=[0,1,2] wsrl:algo.utd=4
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from calql_vision.algo_configs import ALGO_SCHEMAS
from calql_vision.atomic_file import atomic_file
from calql_vision.config import ConfigError, TrainConfig, load_config
from calql_vision.config_fields import AT_LEAST_1, UNIT, OneOf, Range, doc
from calql_vision.control import CONTROL_SUFFIX
from calql_vision.launchers import make_launcher
from calql_vision.run_dir import RunDir
from calql_vision.startup import run_program

DESCRIPTION = __doc__.split("\n\n")[0] + """

Every (algorithm, seed) pair is one `python -m calql_vision.train` process (at most `jobs` at
once, each with `threads` torch threads) whose run directory goes under
<out>/runs/seed<seed>/<task>/<algo>/. Any key=value that is not one of the keys below goes
to every run (offline_steps=6000, num_envs=2, ...); `<algo>:<key>=<value>` goes to that
algorithm's runs only (cql:algo.cql_weight=5). Every run's settings are checked before
anything starts. `pretrain_from.<algo>=<source>` starts that algorithm's runs from the
source algorithm's pretraining of the same seed (init_from; by default wsrl from calql when
both are in the grid); their networks must have the same shape (algo.num_critics,
algo.critic_layer_norm, algo.actor_layer_norm, algo.hidden_dims), or compare stops before
starting and says what to set; pretrain_from.<algo>=null lets it pretrain itself.
control=true (the default) also runs, for every run that pretrains itself, its offline
continuation control (train control_of=<run>) once the run ends, as <algo>-control-seed<k>.

launcher=ray runs each as a task of an existing Ray cluster, launcher=slurm as a Slurm job
through submitit (docs/evaluation.md, On a cluster: Ray or Slurm); a preempted Slurm job resumes its run
when resubmitted.

A second call with the same `out` skips finished runs, resumes runs that were stopped or
killed (from their newest checkpoint) and retries failed ones. A failing run is reported in
<out>/jobs/ and the summary and does not stop the others. Ctrl-C stops every run at a safe
point with a checkpoint.

Writes <out>/summary.md: per algorithm, over seeds, the mean and a 95% bootstrap interval of
the success at the switch to online (the last offline evaluation) and of the stochastic
policy's there (the success the online data starts with), the dip (how many points the worst
online evaluation falls below the switch value; `plot` uses the same definition), the worst
online success, the online regret (mean of 1 - success over online evaluations), the final
success, the training episodes' success online, the environment steps until success first
reaches `threshold`, the stability (mean change of success between neighbouring evaluations,
offline and online) and the calibration at the switch (mean Q against mean reward-to-go G on
held-out demos); beside them the controls' final success, each run's final success minus its
own control's (paired by seed), the controls' worst point and stability; <out>/success.png
(success across the switch, mean and 95% interval per algorithm, stochastic and training
episodes and the offline control beside), <out>/calibration.png (every run, a
panel per algorithm) and <out>/drift.png (what moved across the switch, per run)."""


@dataclass
class CompareConfig:
    task: str = doc("lift_visual", "task of every run; configs/task/<name>.yaml")
    algos: list = doc(["calql", "cql"], "algorithms compared", valid=OneOf(tuple(sorted(ALGO_SCHEMAS))))
    seeds: list = doc([0, 1, 2], "seeds; one run per algorithm and seed", valid=Range(0))
    jobs: int = doc(1, "training processes at once", valid=AT_LEAST_1)
    threads: int = doc(1, "torch threads of each training process", valid=AT_LEAST_1)
    out: Optional[str] = doc(None, "study directory; null = studies/<task>")
    threshold: float = doc(0.5, "success rate whose first online crossing is reported in env steps", valid=UNIT)
    pretrain_from: dict = doc({"wsrl": "calql"}, "algo -> algo whose pretraining (same seed) starts its runs")
    control: bool = doc(
        True, "also run, for every run that pretrains itself, its offline continuation control (train control_of=): "
        "the same switch checkpoint trained on offline for as many updates as the online phase makes, evaluated at "
        "the same updates; the summary sets every result beside it"
    )
    launcher: str = doc(
        "local", "local: trainers as processes here | ray: each as a task of a Ray cluster | slurm: each as a Slurm "
        "job through submitit (ray and slurm: the study directory on a filesystem every node shares)",
        valid=OneOf(("local", "ray", "slurm")),
    )
    ray_address: str = doc("auto", "launcher=ray: the cluster to join (auto: the one `ray start` made here; or "
                                   "<host>:<port>)")
    ray_gpus: float = doc(0.0, "launcher=ray: GPUs each run declares (fractions share a GPU)", valid=Range(0))
    slurm_cluster: str = doc(
        "auto", "launcher=slurm: auto (Slurm where sbatch exists, else an error) | slurm | local (submitit's local "
        "executor: the same jobs on this machine)", valid=OneOf(("auto", "slurm", "local")),
    )
    slurm_partition: Optional[str] = doc(None, "launcher=slurm: partition (null = the cluster's default)")
    slurm_time_min: int = doc(24 * 60, "launcher=slurm: time limit per job in minutes; a job that reaches it is "
                                       "checkpointed and resubmitted as a resume", valid=AT_LEAST_1)
    slurm_gpus: int = doc(0, "launcher=slurm: GPUs per job", valid=Range(0))


@dataclass
class Job:
    algo: str
    seed: int
    overrides: list[str]
    source: Optional["Job"] = None  # the job whose pretraining this one starts from
    control_of: Optional["Job"] = None  # the job whose offline continuation control this one is
    process: Optional[subprocess.Popen] = field(default=None, repr=False)
    started: float = 0.0
    log_start: int = 0  # offset of the current attempt's output in its log

    @property
    def folder(self) -> str:
        """Its runs' folder under <runs root>/<task>/ (train's own naming)."""
        return self.algo + (CONTROL_SUFFIX if self.control_of is not None else "")

    @property
    def name(self) -> str:
        return f"{self.folder}-seed{self.seed}"

    @property
    def parent(self) -> Optional["Job"]:
        """The job that must finish first: the pretraining it starts from, or the run it controls."""
        return self.source or self.control_of


class Study:
    """The study directory: runs, job records, logs, summary."""

    def __init__(self, root: Path, task: str) -> None:
        self.root, self.task = root, task

    def runs_root(self, seed: int) -> Path:
        return self.root / "runs" / f"seed{seed}"

    def run_dirs(self, job: Job) -> list[Path]:
        folder = self.runs_root(job.seed) / self.task / job.folder
        return sorted(p for p in folder.iterdir() if (p / "config.yaml").is_file()) if folder.is_dir() else []

    def record_path(self, job: Job) -> Path:
        return self.root / "jobs" / f"{job.name}.json"

    def log_path(self, job: Job) -> Path:
        return self.root / "logs" / f"{job.name}.log"

    def record(self, job: Job) -> dict[str, Any]:
        path = self.record_path(job)
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_record(self, job: Job, **values: Any) -> None:
        path = self.record_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            handle.write((json.dumps(values, indent=2) + "\n").encode())

    def is_done(self, job: Job) -> bool:
        record = self.record(job)
        return record.get("status") == "done" and Path(record.get("run", "")).is_dir()

    def run_dir(self, job: Job) -> Optional[Path]:
        """The job's run: the recorded one, else the newest with a checkpoint to resume."""
        record = self.record(job)
        if record.get("run") and Path(record["run"]).is_dir():
            return Path(record["run"])
        resumable = [d for d in self.run_dirs(job) if (d / "checkpoints" / "latest.pt").is_file()
                     or any((d / "checkpoints").glob("step_*.pt"))]
        return resumable[-1] if resumable else None


# ---------------------------------------------------------------------- the command line
def split_arguments(argv: list[str]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(compare's own key=values, those for every run, those per algorithm)."""
    own_keys = {f.name for f in fields(CompareConfig)}
    own, shared, per_algo = [], [], {}
    for arg in argv:
        if arg in ("-h", "--help"):
            own.append(arg)
            continue
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value pairs, got '{arg}' (see --help)")
        key = arg.split("=", 1)[0]
        if ":" in key:
            algo, rest = arg.split(":", 1)
            per_algo.setdefault(algo, []).append(rest)
        elif key in own_keys or key.startswith("pretrain_from."):  # task.image_size=... is the runs
            own.append(arg)
        else:
            shared.append(arg)
    for key in ("algo", "seed", "threads", "runs_root", "resume", "init_from"):
        if any(a.split("=", 1)[0] == key for a in shared):
            raise ConfigError(f"{key}= is set by compare for each run; use "
                              f"{'algos=[...]' if key == 'algo' else 'seeds=[...]' if key == 'seed' else 'the compare keys'}")
    return own, shared, per_algo


def plan(cfg, shared: list[str], per_algo: dict[str, list[str]]) -> list[Job]:
    """The jobs, each run's settings checked now (ConfigError before anything starts)."""
    algos = list(cfg.algos)
    if not algos or not cfg.seeds:
        raise ConfigError(f"algos={algos} seeds={list(cfg.seeds)}: an empty grid runs nothing; "
                          "expected at least one algorithm and one seed")
    unknown = sorted(set(per_algo) - set(algos))
    if unknown:
        raise ConfigError(f"settings for {unknown}, which are not in algos={algos}")
    if len(set(algos)) != len(algos) or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"algos={algos} and seeds={list(cfg.seeds)} must not repeat")
    sources = {a: s for a, s in dict(cfg.pretrain_from).items() if a in algos and s in algos}
    from calql_vision.agents import algorithm, can_init_from
    from calql_vision.launch import DESCRIPTION as TRAIN_DESCRIPTION, PRESETS, machine_preset

    for algo, source in sources.items():
        if not algorithm(source).pretrains or not can_init_from(algo, source):
            raise ConfigError(f"pretrain_from.{algo}={source}: a {source} pretraining cannot start {algo}")
    jobs: dict[tuple[str, int], Job] = {}
    settings = {}
    for algo in sorted(algos, key=lambda a: a in sources):  # sources first
        overrides = [f"task={cfg.task}", f"algo={algo}", *shared, *per_algo.get(algo, [])]
        try:
            # Checked as train will load them, with the preset it picks for this machine.
            settings[algo] = load_config(TrainConfig, machine_preset(overrides)[0], "calql_vision.train",
                                         TRAIN_DESCRIPTION, presets=PRESETS, base_file="base.yaml")
        except ConfigError as error:
            raise ConfigError(f"the {algo} runs: {error}") from None
        from calql_vision.wandb_run import require_wandb

        require_wandb(settings[algo].logger)
        if algo in sources:
            check_networks_fit(algo, settings[algo], sources[algo], settings[sources[algo]])
        for seed in cfg.seeds:
            source = jobs.get((sources[algo], seed)) if algo in sources else None
            jobs[(algo, seed)] = Job(algo, int(seed), overrides, source)
    planned = [jobs[(a, int(s))] for a in algos for s in cfg.seeds]
    if cfg.control:  # a run started from another's pretraining shares that run's control
        from calql_vision.control import online_updates

        planned += [Job(job.algo, job.seed, [], control_of=job) for job in planned
                    if algorithm(job.algo).pretrains and job.source is None
                    and settings[job.algo].offline_steps > 0 and online_updates(settings[job.algo]) > 0]
    return planned


# What init_from loads must have the same shape in the pretraining and in the runs it starts
# (the encoder and image size come from the settings every run shares).
NETWORK_KEYS = ("num_critics", "critic_layer_norm", "actor_layer_norm", "hidden_dims")


def check_networks_fit(algo: str, settings, source: str, source_settings) -> None:
    """A ConfigError, before anything starts, when `source`'s pretrained networks cannot be
    loaded into `algo`'s runs (train would refuse init_from only after the pretraining)."""
    def value(config, key):
        found = OmegaConf.select(config, f"algo.{key}")
        return OmegaConf.to_container(found) if OmegaConf.is_config(found) else found

    differ = [(key, value(settings, key), value(source_settings, key)) for key in NETWORK_KEYS]
    differ = [(key, mine, theirs) for key, mine, theirs in differ if mine != theirs]
    if differ:
        shown = ", ".join(f"algo.{key} {mine} against {theirs}" for key, mine, theirs in differ)
        fixes = " ".join(f"{algo}:algo.{key}={str(theirs).lower().replace(' ', '')}" for key, _, theirs in differ)
        raise ConfigError(f"pretrain_from.{algo}={source}: the networks differ ({shown}); set {fixes}, "
                          f"or pretrain_from.{algo}=null to pretrain {algo} itself")


# ---------------------------------------------------------------------- running the grid
def command(job: Job, study: Study, threads: int) -> list[str]:
    run = study.run_dir(job)
    if run is not None:  # stopped, killed or failed before: continue where it was
        return [sys.executable, "-m", "calql_vision.train", f"resume={run}", f"threads={threads}"]
    if job.control_of is not None:
        return [sys.executable, "-m", "calql_vision.train", f"control_of={study.run_dir(job.control_of)}",
                f"threads={threads}", f"runs_root={study.runs_root(job.seed)}",
                *wandb_labels(job, study, job.control_of.overrides)]
    args = [*job.overrides, f"seed={job.seed}", f"threads={threads}", f"runs_root={study.runs_root(job.seed)}",
            *wandb_labels(job, study, job.overrides)]
    if job.source is not None:
        args.append(f"init_from={study.run_dir(job.source)}")
    return [sys.executable, "-m", "calql_vision.train", *args]


def wandb_labels(job: Job, study: Study, overrides: list[str]) -> list[str]:
    """W&B group = the study's folder name, tags = algorithm, seed<k> (and "control"), unless
    the command line sets them. Only logging settings: a rerun may differ without harm."""
    named = {arg.split("=", 1)[0] for arg in overrides}
    labels = []
    if "wandb_group" not in named:
        labels.append(f"wandb_group={study.root.resolve().name}")
    if "wandb_tags" not in named:
        labels.append(f"wandb_tags=[{job.algo},seed{job.seed}{',control' if job.control_of is not None else ''}]")
    return labels


def _live_elsewhere(job: Job, study: Study) -> bool:
    """A trainer not started by this compare holds one of the job's runs: one of an earlier
    compare, still stopping, or a train started by hand."""
    return any(RunDir(run).busy() for run in study.run_dirs(job))


def run_grid(jobs: list[Job], study: Study, parallel: int, threads: int, launcher) -> dict[str, str]:
    """Run every unfinished job through `launcher` (calql_vision/launchers.py); returns
    {job name: done | failed (why) | skipped (why)}. Local trainers run in sessions of their
    own, so a terminal's Ctrl-C reaches compare alone, which passes one stop to each (a second
    one would stop them without a checkpoint); Slurm jobs are left to the scheduler."""
    outcome = {job.name: "done (earlier)" for job in jobs if study.is_done(job)}
    waiting = [job for job in jobs if job.name not in outcome]
    running: list[Job] = []
    told: set[str] = set()
    total = len(waiting)
    if total:
        print(f"{len(outcome)} of {len(jobs)} runs finished earlier; running {total} ({parallel} at once)")
    try:
        while waiting or running:
            # A trainer still alive from an earlier compare holds a place too, and its run is
            # neither started twice nor taken for a stale one and deleted: its job waits.
            elsewhere = {job.name for job in waiting if _live_elsewhere(job, study)}
            for name in sorted(elsewhere - told):
                print(f"waiting: a trainer of {name} from before is still running (it stops and saves, or finishes)",
                      flush=True)
            told |= elsewhere
            for job in list(waiting):
                if len(running) + len(elsewhere) >= parallel:
                    break
                if job.name in elsewhere:
                    continue
                if job.parent is not None and job.parent.name not in outcome:
                    continue  # its pretraining, or the run it controls, is still running
                waiting.remove(job)
                if job.parent is not None and not outcome[job.parent.name].startswith("done"):
                    outcome[job.name] = f"skipped ({job.parent.name} failed)"
                    continue
                keep = study.run_dir(job)
                for stale in study.run_dirs(job):  # begun but never checkpointed: nothing to resume
                    if stale != keep:
                        shutil.rmtree(stale)
                log = study.log_path(job)
                log.parent.mkdir(parents=True, exist_ok=True)
                job.log_start = log.stat().st_size if log.exists() else 0  # a retry appends: its reason is read from here on
                job.process = launcher.start(command(job, study, threads), log, job.name,
                                             study.runs_root(job.seed) / study.task / job.folder)
                job.started = time.time()
                running.append(job)
                print(f"started {job.name} (log {study.log_path(job)})", flush=True)
            time.sleep(0.5)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                code = job.process.returncode
                minutes = (time.time() - job.started) / 60
                run = study.run_dir(job) or (study.run_dirs(job) or [None])[-1]
                status = "done" if code == 0 else "failed"
                study.write_record(job, status=status, returncode=code, run=str(run) if run else None,
                                   minutes=round(minutes, 2))
                outcome[job.name] = ("done" if code == 0
                                     else f"failed (exit code {code}; "
                                          f"{last_error(study.log_path(job), code, job.log_start)})")
                finished = sum(1 for j in jobs if j.name in outcome)
                print(f"[{finished}/{len(jobs)}] {job.name}: {outcome[job.name]} after {minutes:.1f} min", flush=True)
    except KeyboardInterrupt:
        if not launcher.stops_runs_on_interrupt:
            print(f"compare: {len(running)} submitted job(s) keep running under the scheduler; the same command "
                  "waits for them and collects their runs", file=sys.stderr, flush=True)
            raise
        # Each run stops at a safe point with a checkpoint; wait for them, so the next call
        # resumes them. A further stop must not end compare meanwhile: its trainers would then
        # get their second signal (PR_SET_PDEATHSIG) and stop without the checkpoint.
        def still_saving(signum, frame):
            print("compare: the runs are still saving their checkpoints; waiting for them", file=sys.stderr,
                  flush=True)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, still_saving)
        for job in running:
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGINT)
        for job in running:
            job.process.wait()
        raise
    return outcome


def last_error(log: Path, returncode: int, start: int = 0) -> str:
    """The run's own error line, the last exception of a traceback, or the signal that killed it;
    never a progress bar. `start`: where this attempt's output begins in the log."""
    with open(log, "rb") as handle:
        handle.seek(start)
        text = handle.read().decode(errors="replace")
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or re.match(r"[\w.]*(Error|Exception)\b", line)]
    if errors:
        return errors[-1][:300]
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    text = [line for line in lines if "%|" not in line]  # tqdm bars: "offline:  17%|###  | ..."
    return (text or ["no output"])[-1][:300]


# ---------------------------------------------------------------------- the summary
def summarize(cfg, jobs: list[Job], study: Study, outcome: dict[str, str]) -> str:
    """summary.md and the figures; returns the table."""
    from calql_vision.plotting.figures import plot_calibration, plot_drift, plot_success
    from calql_vision.plotting.runs import Run, read_metrics
    from calql_vision.study import BOOTSTRAP_SAMPLES, aggregate, run_numbers, wilson_half_width

    runs: dict[str, Run] = {}
    for job in jobs:
        run_dir = study.run_dir(job)
        if outcome.get(job.name, "").startswith("done") and run_dir is not None:
            config = OmegaConf.load(run_dir / "config.yaml")
            runs[job.name] = Run(run_dir, job.name, config, read_metrics(run_dir / "metrics.csv"))
    numbers = {}
    for job in sorted(jobs, key=lambda j: j.source is not None):  # sources first: their switch is needed
        # A control's rows past the switch count as its online phase (plotting.runs.evaluations).
        if job.name not in runs:
            continue
        run = runs[job.name]
        source = runs.get(job.source.name) if job.source is not None else None
        # A run started from another's pretraining has no offline evaluation: its switch is the source's.
        given = numbers[job.source.name] if source is not None else None
        numbers[job.name] = run_numbers(run.rows, cfg.threshold, given.switch if given else None,
                                        given.stochastic_switch if given else None)
        snapshot = (source or run).calibration.get("offline")
        if snapshot is not None and "q_valid" in snapshot and len(snapshot["q_valid"]):
            numbers[job.name].q_switch = float(snapshot["q_valid"].mean())
            numbers[job.name].g_switch = float(snapshot["g_valid"].mean())

    # The first five columns keep their places (scripts and tests read them by position).
    header = ["algorithm", "runs", "success at switch", "dip (points)", "online regret", "worst online success",
              "final success", f"env steps to {cfg.threshold:g}", "stochastic success at switch",
              "training-episode success (online)", "stability offline (points)", "stability online (points)",
              "mean Q at switch", "mean G at switch", "offline control: final success",
              "final minus control's (same seed)", "offline control: worst", "offline control: stability (points)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    controls = {j.control_of.name: numbers.get(j.name) for j in jobs if j.control_of is not None}
    for algo in cfg.algos:
        mine = [numbers[j.name] for j in jobs if j.algo == algo and j.control_of is None and j.name in numbers]
        # Paired by seed: each run against its own control (a run started from another's
        # pretraining, against that pretraining's control).
        pairs = [(numbers[j.name], controls.get((j.source or j).name)) for j in jobs
                 if j.algo == algo and j.control_of is None and j.name in numbers]
        pairs = [(run, control) for run, control in pairs if control is not None]
        added = [run.final - control.final for run, control in pairs
                 if run.final is not None and control.final is not None]
        reached = [n.steps_to_threshold for n in mine if n.steps_to_threshold is not None]
        cells = [
            algo, f"{len(mine)}/{len(cfg.seeds)}",
            aggregate([n.switch for n in mine]).text(),
            aggregate([n.dip for n in mine]).text(".1f", scale=100),
            aggregate([n.regret for n in mine]).text(),
            aggregate([n.worst for n in mine]).text(),
            aggregate([n.final for n in mine]).text(),
            f"{aggregate(reached).text('.0f')}; reached in {len(reached)}/{len(mine)}",
            aggregate([n.stochastic_switch for n in mine]).text(),
            aggregate([n.train_success for n in mine]).text(),
            aggregate([n.stability_offline for n in mine]).text(".1f", scale=100),
            aggregate([n.stability_online for n in mine]).text(".1f", scale=100),
            aggregate([n.q_switch for n in mine]).text(),
            aggregate([n.g_switch for n in mine]).text(),
            aggregate([c.final for _, c in pairs]).text(),
            aggregate(added).text("+.2f"),
            aggregate([c.worst for _, c in pairs]).text(),
            aggregate([c.stability_online for _, c in pairs]).text(".1f", scale=100),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    figures = ["![success across the switch](success.png)"]
    online_runs = [run for run in runs.values() if not run.is_control]
    if runs:
        plot_success(list(runs.values()), study.root / "success.png", band="ci95")
    if online_runs:
        plot_calibration(online_runs, study.root / "calibration.png", by_algo=True)
        if len(plot_drift(online_runs, study.root / "drift.png")) < len(online_runs):
            figures.append("![what moved across the switch](drift.png)")
    figures.append("![calibration, every seed](calibration.png)")
    episodes = sorted({int(r.config.get("eval_episodes", 0)) for r in runs.values()} - {0})
    size = ", ".join(f"{e} episodes (95% interval of one point: +/- {100 * wilson_half_width(e):.0f} points at "
                     f"50% success)" for e in episodes) or "no run finished"
    failed = [f"- {name}: {what}" for name, what in outcome.items() if not what.startswith("done")]
    text = "\n\n".join([
        f"# Study: {cfg.task}, algorithms {list(cfg.algos)}, seeds {list(cfg.seeds)}",
        "Each cell: the mean over seeds and its 95% percentile-bootstrap interval "
        f"({BOOTSTRAP_SAMPLES:,} resamples of the seeds). Success: the deterministic evaluations unless named "
        "otherwise. The switch is the last offline evaluation (or an online one at env step 0; for a run "
        "pretrained by another without either, its source's); "
        "the worst online success is the lowest online evaluation after it, and the dip the worst drop below the "
        "switch value, max(0, switch - worst), in points (`plot` reports the same numbers). Regret is the mean "
        "of 1 - success over the online evaluations; env steps to "
        f"{cfg.threshold:g} averages the runs that reached it. Stochastic success at switch: the stochastic "
        "(exploration) policy on the same scenes at the switch evaluation; training-episode success: all the "
        "online training episodes together; both where the runs logged them. Stability: the mean absolute change "
        "of success between neighbouring evaluations within the phase, in points (evaluation noise and swings). "
        "Q and G: means on the held-out demos at the switch (calibration/step_<n>.npz of the offline phase). "
        "Offline control: each run's own switch checkpoint trained on the dataset alone for as many updates as its "
        "online phase made, same seed, evaluated at the same update counts (`train control_of=`); final minus "
        "control's is what the online phase added over more offline training, paired by seed.",
        f"Evaluation size: {size}.",
        table,
        "Runs that did not finish:\n" + "\n".join(failed) if failed else "Every run finished.",
        "\n\n".join(figures),
    ]) + "\n"
    with atomic_file(study.root / "summary.md") as handle:
        handle.write(text.encode())
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        own, shared, per_algo = split_arguments(argv)
        cfg = load_config(CompareConfig, own, "calql_vision.compare", DESCRIPTION)
        jobs = plan(cfg, shared, per_algo)
        study = Study(Path(cfg.out or f"studies/{cfg.task}"), cfg.task)
        launcher = make_launcher(cfg, study.root / "slurm")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    study.root.mkdir(parents=True, exist_ok=True)
    with atomic_file(study.root / "study.yaml") as handle:
        handle.write(OmegaConf.to_yaml({"compare": OmegaConf.to_container(cfg), "every_run": shared,
                                        "per_algorithm": per_algo}).encode())
    received = [signal.SIGINT]

    def stop_on_sigterm(signum, frame):  # a scheduler's stop: handled as Ctrl-C is
        received[0] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        outcome = run_grid(jobs, study, cfg.jobs, cfg.threads, launcher)
    except KeyboardInterrupt:
        print(f"stopped: the runs saved checkpoints; the same command continues them (out={study.root})",
              file=sys.stderr)
        return 128 + received[0]
    table = summarize(cfg, jobs, study, outcome)
    print(table)
    print(f"wrote {study.root / 'summary.md'}")
    return 0 if all(v.startswith("done") for v in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(run_program(main))
