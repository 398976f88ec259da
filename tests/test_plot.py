"""The plot program: figures from synthetic run directories, headline numbers by hand."""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from calql_vision.agents.calql import CalQLAgent
from calql_vision.metrics import metric_columns
from calql_vision.plot import calibration_numbers, fail_forever_return, headline_numbers, main, read_metrics
from calql_vision.plotting.figures import mean_band

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_STEPS, ONLINE_ENV_STEPS = 1000, 500

# (phase, step, env_step, success) per run. Online env steps run ahead of the update count
# by a different amount per seed, as episodes of different lengths make them in training.
EVALUATIONS = {
    ("calql", 0): [("offline", 500, 0, 0.2), ("offline", 1000, 0, 0.6), ("online", 1100, 100, 0.4),
                   ("online", 1200, 200, 0.5), ("online", 1300, 310, 0.7), ("online", 1500, 500, 0.9)],
    ("calql", 1): [("offline", 500, 0, 0.3), ("offline", 1000, 0, 0.5), ("online", 1100, 150, 0.5),
                   ("online", 1200, 230, 0.6), ("online", 1300, 330, 0.8), ("online", 1500, 520, 1.0)],
    ("cql", 0): [("offline", 500, 0, 0.4), ("offline", 1000, 0, 0.7), ("online", 1100, 90, 0.1),
                 ("online", 1200, 190, 0.0), ("online", 1300, 300, 0.3), ("online", 1500, 500, 0.6)],
    ("cql", 1): [("offline", 500, 0, 0.3), ("offline", 1000, 0, 0.6), ("online", 1100, 100, 0.2),
                 ("online", 1200, 210, 0.2), ("online", 1300, 320, 0.4), ("online", 1500, 510, 0.5)],
}


ACTION_DIMS = 7  # 6 arm + the gripper, last
# The columns newer trainers write; old_format=True leaves them out, as older runs' files do.
NEW_COLUMNS = ["eval_stochastic_success_rate", "eval_stochastic_return", "train_success_rate", "train_return",
               "train_episodes", "action_change", *(f"action_change_{d}" for d in range(ACTION_DIMS)),
               "feature_change", "policy_std", *(f"policy_std_{d}" for d in range(ACTION_DIMS))]


def stochastic_success(success: float) -> float:
    """The synthetic runs' stochastic policy: 0.2 below the deterministic one, at least 0."""
    return round(max(0.0, success - 0.2), 2)


def train_success(seed: int) -> float:
    """The synthetic runs' training episodes: the same success rate on every row, per seed."""
    return round(0.2 + 0.4 * seed, 2)


def columns(old_format: bool) -> list[str]:
    old = [c for c in metric_columns(CalQLAgent.METRICS) if c not in NEW_COLUMNS]
    old += [c for c in ("episode_return", "episode_success") if c not in old] if old_format else []
    return old if old_format else old + NEW_COLUMNS


def new_columns(step: int, phase: str, first: bool, success: float | None, seed: int) -> dict:
    """The new columns of one row: stochastic evaluation where the row evaluates, training
    episodes on online rows (2 ended at every 100th step, none else), drift on every row but the first."""
    row = {}
    if success is not None:
        row.update(eval_stochastic_success_rate=stochastic_success(success),
                   eval_stochastic_return=-100 * (1 - stochastic_success(success)))
    if phase == "online":
        episodes = 2 if step % 100 == 0 else 0
        row["train_episodes"] = episodes
        if episodes:
            row.update(train_success_rate=train_success(seed), train_return=-100 * (1 - train_success(seed)))
    if not first:
        grow = 3.0 if phase == "online" else 1.0  # the actor moves more online
        changes = [0.01 * (d + 1) * grow for d in range(ACTION_DIMS)]
        stds = [0.5 + 0.05 * d for d in range(ACTION_DIMS)]
        row.update(action_change=float(np.mean(changes)), feature_change=0.02 * grow, policy_std=float(np.mean(stds)),
                   **{f"action_change_{d}": c for d, c in enumerate(changes)},
                   **{f"policy_std_{d}": v for d, v in enumerate(stds)})
    return row


def write_run(run_dir: Path, algo: str, seed: int, evaluations, offline_steps=OFFLINE_STEPS,
              online_env_steps=ONLINE_ENV_STEPS, log_every=50, calibration=True, old_format=False) -> Path:
    """A run directory as the trainer writes it: config.yaml, metrics.csv, calibration/*.npz;
    old_format: a metrics.csv of an older trainer (no stochastic evaluation, training-episode
    or drift columns, the last episode's episode_return/episode_success instead)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        f"task:\n  name: lift_visual\nalgo:\n  name: {algo}\nseed: {seed}\n"
        f"offline_steps: {offline_steps}\nonline_env_steps: {online_env_steps}\n"
    )
    rng = np.random.default_rng(seed)
    by_step = {step: (phase, env_step, success) for phase, step, env_step, success in evaluations}
    last_step = max(by_step)
    steps = sorted(set(range(log_every, last_step + 1, log_every)) | set(by_step))
    online = [(s, e) for s, (p, e, _) in by_step.items() if p == "online"]
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(old_format))
        writer.writeheader()
        for step in steps:
            phase = "offline" if step <= offline_steps else "online"
            env_step = 0 if phase == "offline" else int(np.interp(step, *zip(*sorted(online))))
            row = {"phase": phase, "step": step, "env_step": env_step,
                   "td_loss": 2.0 * np.exp(-step / 400) + 0.05 * rng.random(),
                   "cql_gap": 5.0 - 3.0 * step / last_step + rng.normal(0, 0.2),
                   "bound_rate": 0.3 * rng.random() if algo == "calql" else 0.0,
                   "q_data_mean": -50 * (1 - np.exp(-step / 500)) + rng.normal(0, 1), "mc_return_mean": -45.0,
                   "actor_loss": 40 * np.exp(-step / 600) + rng.normal(0, 1), "alpha": np.exp(-step / 800)}
            success = by_step[step][2] if step in by_step else None
            if success is not None:
                row.update(eval_success_rate=success, eval_return=-100 * (1 - success))
            if not old_format:
                row.update(new_columns(step, phase, step == steps[0], success, seed))
            elif phase == "online":
                row.update(episode_success=1.0, episode_return=-20.0)
            writer.writerow(row)
    if calibration:
        (run_dir / "calibration").mkdir()
        for phase, step in (("offline", offline_steps), ("online", last_step)):
            g_valid, g_online, g_train = -60 * rng.random(300), -80 * rng.random(200), -60 * rng.random(400)
            np.savez(run_dir / "calibration" / f"step_{step}.npz", phase=np.array(phase), step=np.array(step),
                     env_step=np.array(0 if phase == "offline" else by_step[last_step][1]),
                     q_valid=g_valid + rng.normal(0, 4, 300), g_valid=g_valid,
                     q_online=(g_online + rng.normal(3, 6, 200)) if phase == "online" else np.zeros(0),
                     g_online=g_online if phase == "online" else np.zeros(0),
                     q_train=g_train + rng.normal(-2, 3, 400), g_train=g_train)
    return run_dir


def make_runs(root: Path, calibration=True, old_format=False) -> Path:
    for (algo, seed), evaluations in EVALUATIONS.items():
        write_run(root / "lift_visual" / algo / f"2026010{seed}-000000", algo, seed, evaluations,
                  calibration=calibration, old_format=old_format)
    return root


def run_plot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calql_vision.plot", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def assert_real_image(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 10_000, path
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 600
    pixels = image[..., :3].reshape(-1, 3)
    assert pixels.std(0).max() > 0.05  # not one flat colour
    colours = np.unique((pixels * 15).round().astype(int), axis=0)
    assert len(colours) > 10  # lines, text, bands and markers in several colours
    return image


def test_cli_writes_all_figures_and_the_table(tmp_path):
    root = make_runs(tmp_path / "runs")
    result = run_plot(str(root), f"out={tmp_path / 'figures'}")
    assert result.returncode == 0, result.stderr
    for name in ("success.png", "calibration.png", "diagnostics.png", "drift.png"):
        assert_real_image(tmp_path / "figures" / name)
    assert "drift.png" not in result.stdout, "no note: every run has the drift columns"
    summary = (tmp_path / "figures" / "summary.txt").read_text()
    assert summary.splitlines()[0] in result.stdout
    line = next(l for l in summary.splitlines() if l.startswith("lift_visual/cql/20260100"))
    # cql seed 0: switch 0.7 (stochastic 0.7 - 0.2 = 0.5); worst online min(0.1, 0.0, 0.3, 0.6) = 0.0;
    # dip 0.7 - 0.0 = 0.7; final 0.6; regret mean(0.9, 1.0, 0.7, 0.4) = 0.75
    assert line.split()[1:] == ["cql", "0", "online", "500/500", "0.70", "0.50", "0.70", "0.00", "0.60", "0.75"]
    # the calibration table: the offline snapshot (step 1000) of every run, train and valid samples
    calibration = summary.split("calibration at the end of offline pretraining")[1]
    rows_of_cql0 = [l.split() for l in calibration.splitlines() if l.startswith("lift_visual/cql/20260100")]
    assert [(r[2], r[3], r[4]) for r in rows_of_cql0] == [("1000", "train", "400"), ("1000", "valid", "300")]


def test_offline_only_runs_get_one_calibration_column(tmp_path):
    run_dir = write_run(tmp_path / "runs" / "calql" / "a", "calql", 0, [("offline", 500, 0, 0.2), ("offline", 1000, 0, 0.6)],
                        online_env_steps=0)
    snapshot_path = run_dir / "calibration" / "step_1000.npz"
    with np.load(snapshot_path) as data:
        snapshot = {k: data[k] for k in data.files}
    np.savez(snapshot_path, **{**snapshot, "phase": np.array("offline")})
    result = run_plot(str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    image = assert_real_image(tmp_path / "runs" / "plots" / "calibration.png")
    assert image.shape[1] < 800  # one column (two would be about 1300 px wide)


def test_default_out_is_first_path_plots(tmp_path):
    root = make_runs(tmp_path / "runs")
    one_run = root / "lift_visual" / "calql" / "20260100-000000"
    assert run_plot(str(one_run)).returncode == 0
    assert (one_run / "plots" / "success.png").is_file()
    table = (one_run / "plots" / "summary.txt").read_text().split("\n\n")[0].splitlines()
    assert len(table) == 2 and table[1].startswith(str(one_run))


def plot_skipping(root: Path, figure: str, drawn: tuple[str, ...]) -> subprocess.CompletedProcess:
    """`plot` on `root`: it succeeds, says it skipped `figure`, leaves it out and draws `drawn`."""
    result = run_plot(str(root))
    assert result.returncode == 0, result.stderr
    assert f"{figure} skipped" in result.stdout
    assert not (root / "plots" / figure).exists()
    for name in drawn:
        assert_real_image(root / "plots" / name)
    return result


def test_missing_calibration_files_skip_only_that_figure(tmp_path):
    root = make_runs(tmp_path / "runs", calibration=False)
    plot_skipping(root, "calibration.png", drawn=("success.png", "diagnostics.png"))


def test_a_bad_path_exits_2_with_a_message():
    result = run_plot("/no/such/runs")
    assert result.returncode == 2
    assert result.stderr == "error: /no/such/runs: no such file or directory\n"


@pytest.mark.parametrize("args, message", [
    ([], "give at least one run directory"),
    (["{root}"], "no run directories"),
    (["{root}", "colour=red"], "unknown key 'colour'"),
])
def test_bad_command_lines_exit_2(tmp_path, capsys, args, message):
    assert main([a.format(root=tmp_path) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_help_explains_the_figures(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "success.png" in text and "calibration.png" in text and "out=<dir>" in text


def rows(evaluations):
    return [{"phase": p, "step": s, "env_step": e, "eval_success_rate": v} for p, s, e, v in evaluations]


def test_headline_numbers_by_hand():
    numbers = headline_numbers(rows(EVALUATIONS[("calql", 0)]))
    # switch: step 1000 -> 0.6; worst online: min(0.4, 0.5, 0.7, 0.9) = 0.4; dip 0.6 - 0.4 = 0.2;
    # final: 0.9; regret: mean(1-0.4, 1-0.5, 1-0.7, 1-0.9) = (0.6+0.5+0.3+0.1)/4 = 0.375;
    # no stochastic evaluations in these rows
    assert numbers == pytest.approx({"switch": 0.6, "stochastic_switch": None, "dip": 0.2, "worst": 0.4,
                                     "final": 0.9, "regret": 0.375})


def test_dip_is_the_worst_drop_below_the_switch_over_the_whole_online_phase():
    evaluations = [("offline", 10, 0, 0.8), ("online", 20, 40, 0.5), ("online", 30, 100, 0.2),
                   ("online", 40, 101, 0.0), ("online", 50, 400, 1.0)]
    numbers = headline_numbers(rows(evaluations))
    assert numbers["worst"] == 0.0 and numbers["dip"] == pytest.approx(0.8)  # late in the phase counts too
    assert numbers["regret"] == pytest.approx((0.5 + 0.8 + 1.0 + 0.0) / 4)
    never_below = [("offline", 10, 0, 0.3), ("online", 20, 40, 0.5), ("online", 30, 100, 0.4)]
    assert headline_numbers(rows(never_below))["dip"] == 0.0  # floored: rising is no negative dip


def test_the_switch_is_an_online_evaluation_at_env_step_0_when_there_is_no_offline_one():
    # A run pretrained elsewhere that evaluates before its first online step: that evaluation is
    # the switch, not an online result.
    evaluations = [("online", 0, 0, 0.7), ("online", 20, 150, 0.3), ("online", 30, 300, 0.9)]
    numbers = headline_numbers(rows(evaluations))
    assert (numbers["switch"], numbers["worst"]) == (0.7, 0.3) and numbers["dip"] == pytest.approx(0.4)
    # Logged in both phases at the last offline step: the online one is the later evaluation of
    # the policy the online phase starts from; it is not "after" the switch.
    both = [("offline", 10, 0, 0.6), ("online", 10, 0, 0.5), ("online", 20, 150, 0.2)]
    numbers = headline_numbers(rows(both))
    assert (numbers["switch"], numbers["worst"]) == (0.5, 0.2) and numbers["dip"] == pytest.approx(0.3)


def test_read_metrics_keeps_an_offline_and_an_online_row_at_one_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("phase,step,env_step,eval_success_rate\n"
                    "offline,10,0,0.6\nonline,10,0,0.5\nonline,20,150,0.2\n")
    assert [(r["phase"], r["step"]) for r in read_metrics(path)] == [("offline", 10), ("online", 10), ("online", 20)]
    assert headline_numbers(read_metrics(path))["switch"] == 0.5


def test_undefined_numbers_are_none():
    # rows read from metrics.csv: evaluations only on some rows (nan elsewhere)
    offline_only = rows([("offline", 5, 0, float("nan")), ("offline", 10, 0, 0.4)])
    assert headline_numbers(offline_only) == {
        "switch": 0.4, "stochastic_switch": None, "dip": None, "worst": None, "final": 0.4, "regret": None}
    assert set(headline_numbers([]).values()) == {None}


def test_calibration_numbers_by_hand():
    g = np.array([-100.0, -100.0, -10.0, -20.0])  # two fail-forever values, two observed returns
    q = np.array([-30.0, -40.0, -12.0, -15.0])
    numbers = calibration_numbers(q, g, fail_forever=-100.0)
    assert numbers == pytest.approx({"n": 4, "q": -24.25, "g": -57.5, "below": 0.25, "observed": 0.5,
                                     "q_observed": -13.5, "g_observed": -15.0})
    only_failures = calibration_numbers(q[:2], g[:2], fail_forever=-100.0)
    assert only_failures["observed"] == 0.0 and only_failures["q_observed"] is None
    assert calibration_numbers(np.zeros(0), np.zeros(0), -100.0)["q"] is None


def test_fail_forever_return_follows_the_reward_transform():
    assert fail_forever_return({"reward_bias": -1.0, "algo": {"discount": 0.99}}) == pytest.approx(-100.0)
    assert fail_forever_return({"reward_bias": -5.0, "algo": {"discount": 0.9}}) == pytest.approx(-50.0)


def test_read_metrics_keeps_the_last_row_of_a_repeated_step_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("phase,step,env_step,eval_success_rate,td_loss\n"
                    "offline,5,0,,1.0\noffline,10,0,,2.0\noffline,10,0,,3.0\noffline,15,0\n")
    assert [(r["step"], r["td_loss"]) for r in read_metrics(path)] == [(5, 1.0), (10, 3.0)]


def test_mean_band_is_drawn_where_most_runs_have_data():
    line = lambda *points: (np.array([p[0] for p in points], float), np.array([p[1] for p in points], float))
    # two runs: both are needed; the first is interpolated at -2 and 5, nothing past 5
    x, mean, low, high = mean_band([line((-4, 0), (0, 0), (10, 1)), line((-2, 1), (5, 1))])
    assert list(x) == [-2, 0, 5]
    assert list(mean) == [0.5, 0.5, 0.75] and list(low) == [0, 0, 0.5] and list(high) == [1, 1, 1]
    # three runs, one still offline: the other two carry the mean through the online phase
    x, mean, low, high = mean_band([line((-4, 0), (0, 0.6)), line((-4, 0), (0, 0.3), (10, 1)),
                                    line((-4, 0), (0, 0.3), (10, 0.5))])
    assert list(x) == [-4, 0, 10]
    assert mean == pytest.approx([0, 0.4, 0.75]) and list(low) == [0, 0.3, 0.5] and list(high) == [0, 0.6, 1]


def test_diagnostics_follow_what_each_run_logged():
    from calql_vision.plotting.figures import diagnostic_keys
    from calql_vision.plotting.runs import Run

    nan = math.nan
    calql = Run(Path("a"), "a", OmegaConf.create({"algo": {"name": "calql"}}),
                [{"phase": "offline", "step": 1.0, "td_loss": 1.0, "cql_gap": 2.0, "q_data_mean": -3.0, "value_loss": nan}])
    iql = Run(Path("b"), "b", OmegaConf.create({"algo": {"name": "iql"}}),
              [{"phase": "offline", "step": 1.0, "td_loss": 1.0, "value_loss": 0.5, "weight_clip_rate": 0.1,
                "eval_success_rate": 0.5}])
    assert diagnostic_keys([calql]) == ["td_loss", "cql_gap"]
    assert diagnostic_keys([calql, iql]) == ["td_loss", "cql_gap", "value_loss", "weight_clip_rate"]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_old_format_runs_still_plot_without_the_drift_figure(tmp_path):
    root = make_runs(tmp_path / "runs", old_format=True)
    plot_skipping(root, "drift.png", drawn=("success.png", "calibration.png", "diagnostics.png"))
    line = next(l for l in (root / "plots" / "summary.txt").read_text().splitlines()
                if l.startswith("lift_visual/cql/20260100"))
    # the same numbers as the new format; no stochastic evaluation at the switch
    assert line.split()[1:] == ["cql", "0", "online", "500/500", "0.70", "-", "0.70", "0.00", "0.60", "0.75"]


def test_the_drift_figure_leaves_out_only_the_runs_without_its_columns(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "calql" / "new", "calql", 0, EVALUATIONS[("calql", 0)], calibration=False)
    write_run(root / "cql" / "old", "cql", 0, EVALUATIONS[("cql", 0)], calibration=False, old_format=True)
    result = run_plot(str(root))
    assert result.returncode == 0, result.stderr
    assert "note: drift.png leaves out runs without the drift columns, or past its first 12: cql/old" in result.stdout
    drift = root / "plots" / "drift.png"
    assert drift.read_bytes()[:8] == PNG_SIGNATURE
    image = assert_real_image(drift)
    one_row = image.shape[0]
    # Two runs with the columns: two rows of panels, a taller figure.
    write_run(root / "cql" / "new", "cql", 1, EVALUATIONS[("cql", 1)], calibration=False)
    assert run_plot(str(root)).returncode == 0
    assert assert_real_image(drift).shape[0] > one_row * 1.4


def test_the_success_figure_draws_stochastic_and_training_success_where_logged(tmp_path):
    from calql_vision.plotting.figures import plot_success
    from calql_vision.plotting.runs import discover_runs

    new = discover_runs([make_runs(tmp_path / "new", calibration=False)])
    labels = plot_success(new, tmp_path / "new.png")
    assert any(label.startswith("dashed: stochastic") for label in labels)
    assert any(label.startswith("dotted: online training episodes") for label in labels)
    assert [label.split()[0] for label in labels[:2]] == ["calql", "cql"]
    old = discover_runs([make_runs(tmp_path / "old", calibration=False, old_format=True)])
    labels = plot_success(old, tmp_path / "old.png", band="ci95")
    assert not any("stochastic" in label or "training" in label for label in labels)
    for name in ("new.png", "old.png"):
        assert_real_image(tmp_path / name)


def test_stochastic_and_training_curves_share_the_success_x_axis(tmp_path):
    from calql_vision.plotting.figures import success_curve
    from calql_vision.plotting.runs import discover_runs

    (run,) = discover_runs([write_run(tmp_path / "run", "cql", 1, EVALUATIONS[("cql", 1)], calibration=False)])
    # width 500: offline step s at (s - 1000) * 500 / 1000; online at env_step
    x, y = success_curve(run, 500, "eval_stochastic_success_rate")
    assert list(x) == [-250, 0, 100, 210, 320, 510]
    assert y == pytest.approx([0.1, 0.4, 0.0, 0.0, 0.2, 0.3])  # 0.2 below the deterministic, at least 0
    x, y = success_curve(run, 500, "train_success_rate")
    assert len(x) and x.min() > 0 and set(y) == {0.6}  # online rows with episodes only; seed 1: 0.2 + 0.4
    x, y = success_curve(run, 500, "action_change_6")
    # from the second row (step 100; the first, step 50, has no previous row): the gripper's 0.01 * 7
    assert x[0] == (100 - 1000) * 500 / 1000 and y[0] == pytest.approx(0.07)


def test_drift_columns_per_dimension(tmp_path):
    from calql_vision.plotting.figures import dimension_keys, has_drift
    from calql_vision.plotting.runs import discover_runs

    new, old = discover_runs([write_run(tmp_path / "a", "calql", 0, EVALUATIONS[("calql", 0)], calibration=False),
                              write_run(tmp_path / "b", "cql", 0, EVALUATIONS[("cql", 0)], calibration=False,
                                        old_format=True)])
    assert has_drift(new) and not has_drift(old)
    assert dimension_keys(new, "policy_std") == [f"policy_std_{d}" for d in range(ACTION_DIMS)]
    assert dimension_keys(new, "action_change")[-1] == "action_change_6"  # numeric order, not "action_change_10"
    assert dimension_keys(old, "policy_std") == []


def test_diagnostics_leave_out_evaluations_training_episodes_and_drift():
    from calql_vision.plotting.figures import diagnostic_keys
    from calql_vision.plotting.runs import Run

    row = {"phase": "online", "step": 1.0, "td_loss": 1.0, "eval_stochastic_success_rate": 0.5,
           "eval_stochastic_return": -3.0, "train_success_rate": 0.5, "train_return": -2.0, "train_episodes": 2.0,
           "action_change": 0.1, "action_change_0": 0.1, "feature_change": 0.01, "policy_std": 0.4,
           "policy_std_6": 0.4, "episode_success": 1.0}
    run = Run(Path("a"), "a", OmegaConf.create({"algo": {"name": "calql"}}), [row])
    assert diagnostic_keys([run]) == ["td_loss"]


def test_calibration_panels_show_every_seed_by_algorithm(tmp_path):
    from calql_vision.plotting.figures import MAX_CALIBRATION_RUNS, calibration_panels, plot_calibration
    from calql_vision.plotting.runs import discover_runs

    root = tmp_path / "runs"
    for algo in ("calql", "cql"):
        for seed in range(3):
            write_run(root / algo / str(seed), algo, seed, EVALUATIONS[(algo, seed % 2)])
    write_run(root / "cql" / "nofiles", "cql", 9, EVALUATIONS[("cql", 0)], calibration=False)
    runs = discover_runs([root])
    per_run = calibration_panels(runs)
    assert len(per_run) == MAX_CALIBRATION_RUNS and all(len(group) == 1 for _, group in per_run)
    assert [group[0].algo for _, group in per_run] == ["calql", "calql", "cql", "cql"]  # both algorithms
    by_algo = calibration_panels(runs, by_algo=True)
    assert [(title, [r.seed for r in group]) for title, group in by_algo] == [
        ("calql (3 seeds)", [0, 1, 2]), ("cql (3 seeds)", [0, 1, 2])]
    assert plot_calibration(runs, tmp_path / "calibration.png", by_algo=True) == ["cql/nofiles"]
    image = assert_real_image(tmp_path / "calibration.png")
    assert image.shape[0] < 1400  # two rows (4 rows of runs would be about 2200 px)
