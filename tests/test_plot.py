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


def write_run(run_dir: Path, algo: str, seed: int, evaluations, offline_steps=OFFLINE_STEPS,
              online_env_steps=ONLINE_ENV_STEPS, log_every=50, calibration=True) -> Path:
    """A run directory as the trainer writes it: config.yaml, metrics.csv, calibration/*.npz."""
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
        writer = csv.DictWriter(f, fieldnames=metric_columns(CalQLAgent.METRICS))
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
            if step in by_step:
                row.update(eval_success_rate=by_step[step][2], eval_return=-100 * (1 - by_step[step][2]))
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


def make_runs(root: Path, calibration=True) -> Path:
    for (algo, seed), evaluations in EVALUATIONS.items():
        write_run(root / "lift_visual" / algo / f"2026010{seed}-000000", algo, seed, evaluations, calibration=calibration)
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
    for name in ("success.png", "calibration.png", "diagnostics.png"):
        assert_real_image(tmp_path / "figures" / name)
    summary = (tmp_path / "figures" / "summary.txt").read_text()
    assert summary.splitlines()[0] in result.stdout
    line = next(l for l in summary.splitlines() if l.startswith("lift_visual/cql/20260100"))
    # cql seed 0: offline final 0.7; dip min(0.1 at 90, 0.0 at 190 > 100 = 500/5 excluded) = 0.1;
    # final 0.6; regret mean(0.9, 1.0, 0.7, 0.4) = 0.75
    assert line.split()[1:] == ["cql", "0", "online", "500/500", "0.70", "0.10", "0.60", "0.75"]
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


def test_missing_calibration_files_skip_only_that_figure(tmp_path):
    root = make_runs(tmp_path / "runs", calibration=False)
    result = run_plot(str(root))
    assert result.returncode == 0, result.stderr
    assert "calibration.png skipped" in result.stdout
    assert not (root / "plots" / "calibration.png").exists()
    assert_real_image(root / "plots" / "success.png")
    assert_real_image(root / "plots" / "diagnostics.png")


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
    numbers = headline_numbers(rows(EVALUATIONS[("calql", 0)]), {"online_env_steps": 500})
    # offline final: step 1000 -> 0.6; dip: env_step <= 100 -> only 0.4; final: 0.9;
    # regret: mean(1-0.4, 1-0.5, 1-0.7, 1-0.9) = (0.6+0.5+0.3+0.1)/4 = 0.375
    assert numbers == pytest.approx({"offline_final": 0.6, "dip": 0.4, "final": 0.9, "regret": 0.375})


def test_dip_is_the_lowest_in_the_first_fifth():
    evaluations = [("offline", 10, 0, 0.8), ("online", 20, 40, 0.5), ("online", 30, 100, 0.2),
                   ("online", 40, 101, 0.0), ("online", 50, 400, 1.0)]
    numbers = headline_numbers(rows(evaluations), {"online_env_steps": 500})
    assert numbers["dip"] == 0.2  # 0.0 at env_step 101 is past 500/5
    assert numbers["regret"] == pytest.approx((0.5 + 0.8 + 1.0 + 0.0) / 4)


def test_dip_falls_back_to_the_first_online_evaluation():
    evaluations = [("offline", 10, 0, 0.8), ("online", 20, 150, 0.3), ("online", 30, 300, 0.1)]
    assert headline_numbers(rows(evaluations), {"online_env_steps": 500})["dip"] == 0.3


def test_undefined_numbers_are_none():
    # rows read from metrics.csv: evaluations only on some rows (nan elsewhere)
    offline_only = rows([("offline", 5, 0, float("nan")), ("offline", 10, 0, 0.4)])
    assert headline_numbers(offline_only, {"online_env_steps": 500}) == {
        "offline_final": 0.4, "dip": None, "final": 0.4, "regret": None}
    assert set(headline_numbers([], {}).values()) == {None}


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
