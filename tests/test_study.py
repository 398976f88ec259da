"""The numbers of a study (calql_vision.study) against hand computations on synthetic metrics
files written as the trainer writes them."""
from __future__ import annotations

import math

import numpy as np
import pytest

from calql_vision.plotting.runs import read_metrics
from calql_vision.study import aggregate, bootstrap_interval, run_numbers, wilson_half_width
from test_plot import EVALUATIONS, ONLINE_ENV_STEPS, write_run

# By hand from EVALUATIONS, with threshold 0.5 and the dip searched in the first 40% of the
# 500 online env steps (env_step <= 200):
#   run        switch  early online successes  dip   regret                          final  first >= 0.5
#   calql s0   0.6     0.4 (100), 0.5 (200)     20    mean(.6,.5,.3,.1)  = 0.375      0.9    200
#   calql s1   0.5     0.5 (150)                 0    mean(.5,.4,.2,0)   = 0.275      1.0    150
#   cql s0     0.7     0.1 (90), 0.0 (190)      70    mean(.9,1,.7,.4)   = 0.75       0.6    500
#   cql s1     0.6     0.2 (100)                40    mean(.8,.8,.6,.5)  = 0.675      0.5    510
BY_HAND = {
    ("calql", 0): (0.6, 20.0, 0.375, 0.9, 200),
    ("calql", 1): (0.5, 0.0, 0.275, 1.0, 150),
    ("cql", 0): (0.7, 70.0, 0.75, 0.6, 500),
    ("cql", 1): (0.6, 40.0, 0.675, 0.5, 510),
}


@pytest.fixture(scope="module")
def metrics_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_runs")
    rows = {}
    for (algo, seed), evals in EVALUATIONS.items():
        run_dir = write_run(root / f"{algo}{seed}", algo, seed, evals, calibration=False)
        rows[(algo, seed)] = read_metrics(run_dir / "metrics.csv")
    return rows


@pytest.mark.parametrize("key", sorted(BY_HAND))
def test_run_numbers_match_the_hand_computation(metrics_rows, key):
    numbers = run_numbers(metrics_rows[key], ONLINE_ENV_STEPS, threshold=0.5, early_fraction=0.4)
    switch, dip, regret, final, steps = BY_HAND[key]
    assert numbers.switch == pytest.approx(switch)
    assert numbers.dip == pytest.approx(dip)
    assert numbers.regret == pytest.approx(regret)
    assert numbers.final == pytest.approx(final)
    assert numbers.steps_to_threshold == steps


def test_undefined_numbers_are_none_not_zero(metrics_rows):
    rows = metrics_rows[("cql", 0)]
    never = run_numbers(rows, ONLINE_ENV_STEPS, threshold=0.95, early_fraction=0.4)
    assert never.steps_to_threshold is None, "0.95 is never reached"
    # No online evaluation within the first 10% (the first is at env step 90 > 50).
    assert run_numbers(rows, ONLINE_ENV_STEPS, threshold=0.5, early_fraction=0.1).dip is None
    offline_only = [row for row in rows if row["phase"] == "offline"]
    numbers = run_numbers(offline_only, ONLINE_ENV_STEPS, threshold=0.5, early_fraction=0.4)
    assert numbers.switch == pytest.approx(0.7)
    assert (numbers.dip, numbers.regret, numbers.final, numbers.steps_to_threshold) == (None, None, None, None)


def test_a_run_pretrained_elsewhere_measures_its_dip_from_the_given_switch(metrics_rows):
    online_only = [row for row in metrics_rows[("calql", 0)] if row["phase"] == "online"]
    assert run_numbers(online_only, ONLINE_ENV_STEPS, 0.5, 0.4).switch is None
    numbers = run_numbers(online_only, ONLINE_ENV_STEPS, 0.5, 0.4, switch=0.8)
    assert numbers.switch == 0.8 and numbers.dip == pytest.approx(40.0)  # 0.8 - 0.4


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
    dips = {algo: [run_numbers(metrics_rows[(algo, s)], ONLINE_ENV_STEPS, 0.5, 0.4).dip for s in (0, 1)]
            for algo in ("calql", "cql")}
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
