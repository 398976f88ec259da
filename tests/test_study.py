"""The numbers of a study (calql_vision.study) against hand computations on synthetic metrics
files written as the trainer writes them."""
from __future__ import annotations

import math

import numpy as np
import pytest

from calql_vision.plotting.runs import read_metrics
from calql_vision.study import (aggregate, bootstrap_interval, dip_numbers, run_numbers, stability, training_success,
                                wilson_half_width)
from test_plot import EVALUATIONS, write_run

# By hand from EVALUATIONS, with threshold 0.5. The dip: switch minus the worst online
# evaluation, at least 0 (a success rate; compare shows it x 100). Stochastic: 0.2 below the
# switch (test_plot.stochastic_success); training episodes: 0.2 + 0.4 * seed on every row.
#   run        switch  stoch  online successes      worst  dip  regret                     final  first >= 0.5
#   calql s0   0.6     0.4    .4 .5 .7 .9           0.4    0.2  mean(.6,.5,.3,.1) = 0.375  0.9    200
#   calql s1   0.5     0.3    .5 .6 .8 1.0          0.5    0    mean(.5,.4,.2,0)  = 0.275  1.0    150
#   cql s0     0.7     0.5    .1 .0 .3 .6           0.0    0.7  mean(.9,1,.7,.4)  = 0.75   0.6    500
#   cql s1     0.6     0.4    .2 .2 .4 .5           0.2    0.4  mean(.8,.8,.6,.5) = 0.675  0.5    510
BY_HAND = {
    ("calql", 0): (0.6, 0.4, 0.4, 0.2, 0.375, 0.9, 200, 0.2),
    ("calql", 1): (0.5, 0.3, 0.5, 0.0, 0.275, 1.0, 150, 0.6),
    ("cql", 0): (0.7, 0.5, 0.0, 0.7, 0.75, 0.6, 500, 0.2),
    ("cql", 1): (0.6, 0.4, 0.2, 0.4, 0.675, 0.5, 510, 0.6),
}
# Stability: mean |change| between neighbouring evaluations of a phase.
#   offline (two evaluations): |0.6-0.2|, |0.5-0.3|, |0.7-0.4|, |0.6-0.3|
#   online: calql s0 (.1+.2+.2)/3, s1 (.1+.2+.2)/3, cql s0 (.1+.3+.3)/3, s1 (0+.2+.1)/3
STABILITY = {("calql", 0): (0.4, 0.5 / 3), ("calql", 1): (0.2, 0.5 / 3),
             ("cql", 0): (0.3, 0.7 / 3), ("cql", 1): (0.3, 0.3 / 3)}


@pytest.fixture(scope="module")
def metrics_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_runs")
    rows = {}
    for (algo, seed), evals in EVALUATIONS.items():
        for old_format in (False, True):
            run_dir = write_run(root / f"{algo}{seed}{'old' * old_format}", algo, seed, evals, calibration=False,
                                old_format=old_format)
            rows[(algo, seed, "old") if old_format else (algo, seed)] = read_metrics(run_dir / "metrics.csv")
    return rows


@pytest.mark.parametrize("key", sorted(BY_HAND))
def test_run_numbers_match_the_hand_computation(metrics_rows, key):
    numbers = run_numbers(metrics_rows[key], threshold=0.5)
    switch, stochastic, worst, dip, regret, final, steps, train = BY_HAND[key]
    assert numbers.switch == pytest.approx(switch)
    assert numbers.stochastic_switch == pytest.approx(stochastic)
    assert numbers.worst == pytest.approx(worst)
    assert numbers.dip == pytest.approx(dip)
    assert numbers.regret == pytest.approx(regret)
    assert numbers.final == pytest.approx(final)
    assert numbers.steps_to_threshold == steps
    assert numbers.train_success == pytest.approx(train)
    assert (numbers.stability_offline, numbers.stability_online) == pytest.approx(STABILITY[key])


@pytest.mark.parametrize("key", sorted(BY_HAND))
def test_old_metrics_files_give_the_same_numbers_without_the_new_ones(metrics_rows, key):
    new, old = run_numbers(metrics_rows[key], 0.5), run_numbers(metrics_rows[(*key, "old")], 0.5)
    assert (old.stochastic_switch, old.train_success) == (None, None)
    for name in ("switch", "worst", "dip", "regret", "final", "steps_to_threshold", "stability_offline",
                 "stability_online"):
        assert getattr(old, name) == getattr(new, name), name


def test_undefined_numbers_are_none_not_zero(metrics_rows):
    rows = metrics_rows[("cql", 0)]
    never = run_numbers(rows, threshold=0.95)
    assert never.steps_to_threshold is None, "0.95 is never reached"
    offline_only = [row for row in rows if row["phase"] == "offline"]
    numbers = run_numbers(offline_only, threshold=0.5)
    assert numbers.switch == pytest.approx(0.7)
    assert (numbers.dip, numbers.worst, numbers.regret, numbers.final, numbers.steps_to_threshold,
            numbers.train_success, numbers.stability_online) == (None,) * 7


def test_a_run_pretrained_elsewhere_measures_its_dip_from_the_given_switch(metrics_rows):
    online_only = [row for row in metrics_rows[("calql", 0)] if row["phase"] == "online"]
    assert run_numbers(online_only, 0.5).switch is None
    numbers = run_numbers(online_only, 0.5, switch=0.8, stochastic_switch=0.6)
    assert numbers.switch == 0.8 and numbers.dip == pytest.approx(0.4)  # 0.8 - 0.4
    assert numbers.stochastic_switch == 0.6


def evaluation_rows(*evaluations):
    """Rows as read_metrics gives them: (phase, step, env_step, success, stochastic success)."""
    return [{"phase": phase, "step": float(step), "env_step": float(env_step), "eval_success_rate": success,
             "eval_stochastic_success_rate": stochastic} for phase, step, env_step, success, stochastic in evaluations]


def test_dip_by_hand():
    nan = math.nan
    rows = evaluation_rows(("offline", 50, 0, 0.3, 0.1), ("offline", 100, 0, 0.8, 0.5), ("offline", 100.5, 0, nan, nan),
                           ("online", 110, 20, 0.6, 0.2), ("online", 120, 40, 0.9, 0.7), ("online", 200, 300, 0.1, 0.1),
                           ("online", 300, 500, 1.0, 0.9))
    dip = dip_numbers(rows)
    # switch: the last offline evaluation, 0.8 (stochastic 0.5); worst online 0.1, late in the
    # phase; dip 0.8 - 0.1 = 0.7
    assert (dip.switch, dip.stochastic_switch, dip.worst) == (0.8, 0.5, 0.1)
    assert dip.dip == pytest.approx(0.7)
    # Never below the switch: 0, not negative.
    assert dip_numbers(rows[:2] + rows[4:5]).dip == 0.0
    # A run pretrained elsewhere that evaluates at env step 0 first: that is its switch.
    online = evaluation_rows(("online", 0, 0, 0.6, 0.4), ("online", 10, 30, 0.45, 0.2), ("online", 20, 60, 0.7, 0.5))
    dip = dip_numbers(online, switch=0.9)  # its own switch evaluation wins over a given one
    assert (dip.switch, dip.stochastic_switch, dip.worst) == (0.6, 0.4, 0.45)
    assert dip.dip == pytest.approx(0.15)


def test_stability_by_hand():
    rows = evaluation_rows(("offline", 10, 0, 0.2, 0.0), ("offline", 20, 0, 0.6, 0.0), ("offline", 30, 0, 0.5, 0.0),
                           ("online", 30, 0, 0.5, 0.0), ("online", 40, 50, 0.1, 0.0), ("online", 50, 100, 0.4, 0.0),
                           ("online", 60, 150, 0.4, 0.0))
    # offline: (|0.6-0.2| + |0.5-0.6|) / 2 = 0.25; online after the switch (env step > 0):
    # 0.1, 0.4, 0.4 -> (0.3 + 0) / 2 = 0.15; the 0.5 -> 0.1 across the switch is the dip's
    assert stability(rows) == pytest.approx({"offline": 0.25, "online": 0.15})
    assert stability(rows[:1] + rows[4:5]) == {"offline": None, "online": None}


def test_training_success_weighs_rows_by_their_episodes():
    nan = math.nan
    rows = [{"phase": "online", "step": 1.0, "train_success_rate": 0.5, "train_episodes": 4.0},
            {"phase": "online", "step": 2.0, "train_success_rate": nan, "train_episodes": 0.0},
            {"phase": "online", "step": 3.0, "train_success_rate": 1.0, "train_episodes": 1.0},
            {"phase": "online", "step": 4.0, "train_success_rate": 0.0, "train_episodes": 3.0},
            {"phase": "offline", "step": 0.0, "train_success_rate": 1.0, "train_episodes": 9.0}]  # not online
    # (0.5 * 4 + 1.0 * 1 + 0.0 * 3) / (4 + 1 + 3) = 3 / 8
    assert training_success(rows) == pytest.approx(0.375)
    assert training_success(rows[1:2]) is None
    assert training_success([{"phase": "online", "step": 1.0, "episode_success": 1.0}]) is None  # old columns


def test_bootstrap_interval_by_hand():
    # Two values: a resample's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles fall on 0 and 1.
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    # Three values: the all-lowest resample alone has probability 1/27 (3.7% > 2.5%).
    low, high = bootstrap_interval([0.2, 0.4, 0.6])
    assert (low, high) == (pytest.approx(0.2), pytest.approx(0.6))
    assert bootstrap_interval([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3))
    assert bootstrap_interval([0.7]) == (0.7, 0.7)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_bootstrap_interval_agrees_with_the_normal_approximation_for_many_seeds():
    values = np.random.default_rng(0).normal(10.0, 2.0, size=60)
    low, high = bootstrap_interval(values)
    # The percentile bootstrap uses the plug-in standard deviation (divisor n).
    half = 1.959964 * values.std() / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_aggregate_over_seeds(metrics_rows):
    dips = {algo: [100 * run_numbers(metrics_rows[(algo, s)], 0.5).dip for s in (0, 1)] for algo in ("calql", "cql")}
    calql, cql = aggregate(dips["calql"]), aggregate(dips["cql"])
    assert (calql.n, cql.n) == (2, 2)
    assert (calql.mean, calql.low, calql.high) == pytest.approx((10.0, 0.0, 20.0))
    assert (cql.mean, cql.low, cql.high) == pytest.approx((55.0, 40.0, 70.0))
    assert cql.text(".1f") == "55.0 [40.0, 70.0]"
    # Undefined values are left out, and say how many seeds remain.
    assert aggregate([None, 0.25, float("nan")]).text() == "0.25 (1 seed)"
    assert aggregate([None]).text() == "-"


def test_wilson_half_width_is_half_the_evaluate_interval():
    from calql_vision.evaluate import wilson_interval

    for episodes in (10, 20, 50):
        low, high = wilson_interval(episodes // 2, episodes)
        assert wilson_half_width(episodes) == pytest.approx((high - low) / 2)
    assert round(100 * wilson_half_width(20)) == 20  # +/- 20 points for 20 episodes at 50%


def table_row(summary: str, header: str, algo: str) -> dict[str, str]:
    """A summary.md table row as {column: cell}."""
    lines = summary.splitlines()
    columns = [c.strip() for c in next(l for l in lines if l.startswith(header)).strip("|").split("|")]
    (line,) = [l for l in lines if l.startswith(f"| {algo} |")]
    return dict(zip(columns, (c.strip() for c in line.strip("|").split("|"))))


def write_study(root, old_format=False):
    """A compare study directory whose runs finished (written by hand, no training)."""
    from omegaconf import OmegaConf

    from calql_vision.compare import Job, Study

    study = Study(root, "lift_visual")
    jobs = [Job(algo, seed, []) for algo in ("calql", "cql") for seed in (0, 1)]
    for job in jobs:
        run_dir = write_run(study.runs_root(job.seed) / "lift_visual" / job.algo / "20260101-000000", job.algo,
                            job.seed, EVALUATIONS[(job.algo, job.seed)], old_format=old_format)
        study.write_record(job, status="done", run=str(run_dir))
    cfg = OmegaConf.create({"task": "lift_visual", "algos": ["calql", "cql"], "seeds": [0, 1], "threshold": 0.5})
    return cfg, jobs, study, {job.name: "done" for job in jobs}


def test_the_summary_reports_the_stochastic_switch_training_success_and_stability(tmp_path):
    from calql_vision.compare import summarize

    summarize(*write_study(tmp_path / "study"))
    summary = (tmp_path / "study" / "summary.md").read_text()
    calql, cql = (table_row(summary, "| algorithm |", algo) for algo in ("calql", "cql"))
    # By hand (BY_HAND, STABILITY above); two seeds: the bootstrap interval spans their two values.
    assert calql["success at switch"] == "0.55 [0.50, 0.60]"
    assert calql["stochastic success at switch"] == "0.35 [0.30, 0.40]"
    assert cql["stochastic success at switch"] == "0.45 [0.40, 0.50]"
    assert calql["dip (points)"] == "10.0 [0.0, 20.0]" and cql["dip (points)"] == "55.0 [40.0, 70.0]"
    assert calql["worst online success"] == "0.45 [0.40, 0.50]" and cql["worst online success"] == "0.10 [0.00, 0.20]"
    assert calql["training-episode success (online)"] == "0.40 [0.20, 0.60]"  # seeds 0.2 and 0.6
    assert calql["stability offline (points)"] == "30.0 [20.0, 40.0]"
    assert calql["stability online (points)"] == "16.7 [16.7, 16.7]"
    assert cql["stability online (points)"] == "16.7 [10.0, 23.3]"
    # The first columns keep their places (test_compare reads them by position).
    assert list(calql)[:5] == ["algorithm", "runs", "success at switch", "dip (points)", "online regret"]
    for name in ("success.png", "calibration.png", "drift.png"):
        assert (tmp_path / "study" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in summary


def test_the_summary_of_old_runs_has_no_stochastic_numbers_and_no_drift_figure(tmp_path):
    from calql_vision.compare import summarize

    summarize(*write_study(tmp_path / "study", old_format=True))
    summary = (tmp_path / "study" / "summary.md").read_text()
    calql = table_row(summary, "| algorithm |", "calql")
    assert calql["success at switch"] == "0.55 [0.50, 0.60]" and calql["dip (points)"] == "10.0 [0.0, 20.0]"
    assert calql["stochastic success at switch"] == "-" and calql["training-episode success (online)"] == "-"
    assert not (tmp_path / "study" / "drift.png").exists() and "drift.png" not in summary
    assert (tmp_path / "study" / "calibration.png").is_file()
