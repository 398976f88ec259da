"""The figures of the plot program: success, calibration, diagnostics, drift (matplotlib, Agg)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import OmegaConf

from calql_vision.plotting.runs import Run, evaluations

PHASE_TITLES = {"offline": "end of offline phase", "online": "latest"}
# Diagnostics panels: these first where a run logs them, then whatever else its agent logs
# (IQL's advantages, ACA's prior weight, ...), at most MAX_DIAGNOSTICS panels with Q vs G.
PREFERRED_DIAGNOSTICS = ["td_loss", "actor_loss", "alpha", "cql_gap", "bound_rate", "value_loss", "adv_mean",
                         "z_loss", "prior_weight", "entropy"]
NOT_DIAGNOSTICS = {"phase", "step", "env_step", "eval_success_rate", "eval_return", "episode_return",
                   "episode_success", "updates_per_s", "env_steps_per_s", "q_data_mean", "mc_return_mean"}
# Evaluations, training episodes and drift have figures of their own (success, drift); with the
# per-dimension columns they would fill every diagnostics panel.
NOT_DIAGNOSTIC_PREFIXES = ("eval_", "train_", "action_change", "feature_change", "policy_std")
MAX_DIAGNOSTICS = 9
SEED_STYLES = ["-", "--", ":", "-."]
MAX_CALIBRATION_RUNS = 4
MAX_DRIFT_RUNS = 12
SEED_MARKERS = ["o", "s", "D", "v", "P", "X", "*", "h"]
# The success figure's other curves, beside each algorithm's deterministic evaluations: the mean
# over seeds only (the band stays the deterministic curve's), in the algorithm's colour.
STOCHASTIC_STYLE = dict(linestyle="--", linewidth=1.6, alpha=0.8, marker="s", markersize=3.5, markerfacecolor="none")
TRAIN_STYLE = dict(linestyle=":", linewidth=1.2, alpha=0.9)
EXTRA_SUCCESS = [
    ("eval_stochastic_success_rate", STOCHASTIC_STYLE, "dashed: stochastic (exploration) policy, same scenes"),
    ("train_success_rate", TRAIN_STYLE, "dotted: online training episodes (since the previous row)"),
]
# The offline continuation control (calql_vision/control.py): the deterministic success of the
# same checkpoints trained on offline, mean over seeds, in the algorithm's colour.
CONTROL_STYLE = dict(linestyle="-.", linewidth=1.8, marker="^", markersize=4, alpha=0.9)
DRIFT_KEYS = ("action_change", "feature_change", "policy_std")
# The drift figure's success panel also shows how often the deterministic policy held the
# object (runs from before the column have none): a fall in success with the grasp rate
# unchanged is a failure after the grasp, with it a failure to take hold of the object.
GRASP_STYLE = dict(color="0.35", linestyle="-", linewidth=1.0, marker="x", markersize=3.5)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _algo_colors(runs: Sequence[Run]) -> dict[str, Any]:
    """The same colour for an algorithm in every figure and every invocation."""
    fixed = {"calql": "tab:blue", "cql": "tab:orange", "iql": "tab:green", "aca": "tab:red", "wsrl": "tab:purple",
             "rlpd": "tab:brown", "sac": "tab:gray"}
    others = iter(["tab:pink", "tab:olive", "tab:cyan"] * 10)  # algorithms without a fixed colour
    return {algo: fixed.get(algo) or next(others) for algo in sorted({r.algo for r in runs})}


def _short(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}"


def success_curve(run: Run, offline_width: float, key: str = "eval_success_rate") -> tuple[np.ndarray, np.ndarray]:
    """The rows holding `key` (default the deterministic success; any column: the drift figure
    uses it for its own) on the success figure's x axis: online rows at env_step, offline ones at
    (step - offline_steps) * scale, so the offline phase spans [-offline_width, 0]."""
    scale = offline_width / max(run.offline_steps, 1)
    points = [(env_step if phase == "online" else (step - run.offline_steps) * scale, success)  # control: "online"
              for phase, step, env_step, success in evaluations(run.rows, key)]
    points.sort()
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def mean_band(curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str = "range") -> tuple[np.ndarray, ...]:
    """Mean and a band over runs on the union of their x values, each run interpolated inside
    the range it has reached and never extrapolated. band "range": min and max; "ci95": the 95%
    bootstrap interval of the mean (calql_vision.study). Drawn only where more than half of the runs
    have data, so one seed running ahead of the others does not make the mean jump at the end."""
    xs = np.unique(np.concatenate([x for x, _ in curves]))
    ys = np.full((len(curves), len(xs)), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (xs >= x[0]) & (xs <= x[-1])
        ys[i, inside] = np.interp(xs[inside], x, y)
    keep = np.isfinite(ys).sum(0) > len(curves) / 2
    ys = ys[:, keep]
    if band == "ci95":
        from calql_vision.study import bootstrap_interval

        low, high = np.array([bootstrap_interval(column[np.isfinite(column)]) for column in ys.T]).reshape(-1, 2).T
        return xs[keep], np.nanmean(ys, 0), low, high
    return xs[keep], np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


def _success_ticks(ax, runs: Sequence[Run], width: float, right: float) -> None:
    """Offline ticks name gradient steps (or % of the offline phase when runs differ in it);
    the tick at 0 names both: the last offline step and online env step 0."""
    from matplotlib.ticker import MaxNLocator

    budgets = {r.offline_steps for r in runs}
    n = budgets.pop() if len(budgets) == 1 else 0
    offline = [(step, _short(step)) for step in MaxNLocator(4).tick_values(0, n) if 0 <= step < n] if n else [
        (f * 100, f"{f:.0%}") for f in (0.0, 0.25, 0.5, 0.75)]
    scale = width / (n or 100)
    ticks = [(step - (n or 100)) * scale for step, _ in offline]
    labels = [label for _, label in offline]
    for env_step in MaxNLocator(5).tick_values(0, right):
        if 0 <= env_step <= right:
            ticks.append(env_step)
            labels.append(f"{_short(n) if n else '100%'} | 0" if env_step == 0 else _short(env_step))
    ax.set_xticks(ticks, labels)


def plot_success(runs: Sequence[Run], out: Path, band: str = "range") -> list[str]:
    """band "range" (min-max over seeds) or "ci95" (95% bootstrap interval of the mean). Also
    draws the stochastic evaluations and the training episodes' success where runs logged them.
    Returns the legend's labels."""
    plt = _pyplot()
    online_width = max((r.online_env_steps for r in runs), default=0)
    width = online_width or max((r.offline_steps for r in runs), default=1) or 1
    colors = _algo_colors(runs)
    fig, ax = plt.subplots(figsize=(10, 5.2), layout="constrained")
    ax.axvspan(-width, 0, color="0.94", zorder=0)
    right, drawn = width, set()
    for algo in colors:
        controls = [c for r in runs if r.algo == algo and r.is_control and len((c := success_curve(r, width))[0])]
        if controls:  # the same checkpoints trained on offline instead: the mean over seeds only
            xs, mean, _, _ = mean_band(controls)
            seeds = f"mean of {len(controls)} seeds" if len(controls) > 1 else "1 seed"
            ax.plot(xs, mean, color=colors[algo], zorder=3, label=f"{algo} offline control ({seeds})", **CONTROL_STYLE)
            right = max(right, xs[-1])
        curves = [c for r in runs if r.algo == algo and not r.is_control and len((c := success_curve(r, width))[0])]
        if not curves:
            continue
        for x, y in curves:
            ax.plot(x, y, "o-", color=colors[algo], alpha=0.3, markersize=3, linewidth=0.8, zorder=2)
            right = max(right, x[-1])
        xs, mean, low, high = mean_band(curves, band)
        n = sum(r.algo == algo and not r.is_control for r in runs)
        seeds = f"mean of {len(curves)} seeds" if len(curves) > 1 else "1 seed"
        ax.plot(xs, mean, "o-", color=colors[algo], linewidth=2, markersize=4, zorder=3,
                label=f"{algo} ({seeds}" + (f"; {n - len(curves)} without evaluations" if n > len(curves) else "") + ")")
        if len(curves) > 1:
            ax.fill_between(xs, low, high, color=colors[algo], alpha=0.18, linewidth=0, zorder=1)
        for key, style, _ in EXTRA_SUCCESS:
            extra = [c for r in runs if r.algo == algo and not r.is_control
                     and len((c := success_curve(r, width, key))[0])]
            if extra:
                xs, mean, _, _ = mean_band(extra)  # "range": no bootstrap for a curve without a band
                ax.plot(xs, mean, color=colors[algo], zorder=2, **style)
                right = max(right, xs[-1])
                drawn.add(key)
    for key, style, label in EXTRA_SUCCESS:
        if key in drawn:  # one legend entry per line style, not one per algorithm
            ax.plot([], [], color="0.3", label=label, **style)
    if not ax.get_legend_handles_labels()[0]:
        ax.text(0.5, 0.5, "no evaluations logged yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.axvline(0, color="0.3", linestyle="--", linewidth=1.2, label="online starts", zorder=2)
    ax.set_xlim(-width * 1.02, right * 1.02)
    ax.set_ylim(-0.03, 1.08)
    _success_ticks(ax, runs, width, right)
    ax.text(-width / 2, 1.04, "offline (gradient steps, rescaled)", ha="center", va="center", color="0.3")
    ax.text(right / 2, 1.04, "online (environment steps)", ha="center", va="center", color="0.3")
    ax.set_xlabel("offline: gradient steps (rescaled)   |   online: environment steps")
    ax.set_ylabel("evaluation success rate")
    tasks = sorted({str(OmegaConf.select(r.config, "task.name", default="?")) for r in runs} - {"?"})
    spread = "95% bootstrap interval of the mean" if band == "ci95" else "min-max"
    ax.set_title(f"Evaluation success{': ' * bool(tasks)}{', '.join(tasks)}\n(thick: deterministic policy, mean over "
                 f"seeds, band: {spread}, thin: each seed)",
                 fontsize=11)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    # Below the axes: with the stochastic and training lines there is no empty corner to hold it.
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), fontsize=9, framealpha=0.9)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # long labels (controls, stochastic) would be cut off
    plt.close(fig)
    return labels


def _pick_runs(runs: Sequence[Run], limit: int) -> list[Run]:
    """Up to `limit` runs, taking algorithms in turn so every algorithm is shown."""
    by_algo: dict[str, list[Run]] = {}
    for run in runs:
        by_algo.setdefault(run.algo, []).append(run)
    picked, queues = [], list(by_algo.values())
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


def calibration_panels(runs: Sequence[Run], by_algo: bool = False) -> list[tuple[str, list[Run]]]:
    """The figure's rows: (title, runs drawn in it). One run per row, up to MAX_CALIBRATION_RUNS
    taken across algorithms; by_algo: one row per algorithm with every seed's points (a study
    has too many seeds for a row each, and leaving seeds out hides how they differ)."""
    with_files = [r for r in runs if r.calibration]
    if not by_algo:
        shown = _pick_runs(with_files, MAX_CALIBRATION_RUNS)
        return [(run.label, [run]) for run in sorted(shown, key=runs.index)]
    groups: dict[str, list[Run]] = {}
    for run in with_files:
        groups.setdefault(run.algo, []).append(run)
    return [(f"{algo} ({len(group)} seed{'s' * (len(group) > 1)})", group) for algo, group in groups.items()]


def _calibration_panel(ax, snapshots: list[tuple[str, dict[str, np.ndarray] | None]], title: str, rng) -> None:
    """Q against G of one run's snapshot, or of several (one per seed, marker = seed) pooled."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("Monte-Carlo return-to-go G")
    ax.set_ylabel("Q(s, a)")
    present = [(name, snapshot) for name, snapshot in snapshots if snapshot is not None]
    if not present:
        ax.text(0.5, 0.5, "not written yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
        return
    pooled = len(snapshots) > 1
    sets = [("train", "training sample", "0.5", "o", 3), ("valid", "held-out demos", "tab:blue", "o", 8),
            ("online", "online episodes", "tab:orange", "^", 10)]
    values = []
    for key, name, color, marker, size in sets:
        qs, gs = [], []
        for index, (_, snapshot) in enumerate(present):
            q, g = (np.asarray(snapshot.get(f"{p}_{key}", []), dtype=float).ravel() for p in "qg")
            if q.size == 0 or q.size != g.size:
                continue
            keep = rng.permutation(q.size)[:3000 // len(present)]  # a readable cloud; the label's numbers use all
            ax.scatter(g[keep], q[keep], s=size, marker=SEED_MARKERS[index % len(SEED_MARKERS)] if pooled else marker,
                       color=color, alpha=0.35, linewidths=0, rasterized=True)
            qs.append(q)
            gs.append(g)
        if qs:
            q, g = np.concatenate(qs), np.concatenate(gs)
            ax.scatter([], [], s=size, marker=marker, color=color,
                       label=f"{name} (n={q.size}, mean Q-G={np.mean(q - g):+.2f})")
            values += [q, g]
    if not values:
        ax.text(0.5, 0.5, "empty file", transform=ax.transAxes, ha="center", va="center", color="0.4")
        return
    if pooled:  # which marker is which seed, and how far apart the seeds are on the held-out demos
        for index, (name, snapshot) in enumerate(present):
            q, g = (np.asarray(snapshot.get(f"{p}_valid", []), dtype=float).ravel() for p in "qg")
            gap = f": held-out mean Q-G={np.mean(q - g):+.2f}" if q.size and q.size == g.size else ""
            ax.scatter([], [], s=12, marker=SEED_MARKERS[index % len(SEED_MARKERS)], color="0.25", label=name + gap)
    low, high = float(min(v.min() for v in values)), float(max(v.max() for v in values))
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], "k--", linewidth=1, label="Q = G")
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", markerscale=1.5)


def calibration_snapshot_figure(snapshot: dict[str, np.ndarray]):
    """One snapshot (calibration/step_<n>.npz) as a figure of its own (the W&B logger's)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0), layout="constrained")
    where = f"step {int(snapshot['step'])}" + (f", env step {int(snapshot['env_step'])}" if int(snapshot["env_step"]) else "")
    _calibration_panel(ax, [("", snapshot)], f"{PHASE_TITLES.get(str(snapshot['phase']), str(snapshot['phase']))}: {where}",
                       np.random.default_rng(0))
    return fig


def plot_calibration(runs: Sequence[Run], out: Path, by_algo: bool = False) -> list[str]:
    """Writes the figure when some run has calibration files; returns the names of runs without.
    by_algo: one row per algorithm with every seed (calibration_panels)."""
    panels = calibration_panels(runs, by_algo)
    with_files = [r for r in runs if r.calibration]
    without = [r.name for r in runs if not r.calibration]
    if not panels:
        return without
    plt = _pyplot()
    shown = [run for _, group in panels for run in group]
    # Runs with no online phase at all (online_env_steps=0) get no empty "latest" column.
    phases = ("offline",) if all(run.online_env_steps == 0 for run in shown) else ("offline", "online")
    width = 5.5 * len(phases)
    fig, axes = plt.subplots(len(panels), len(phases), figsize=(width, 4.5 * len(panels) + 0.8), squeeze=False,
                             layout="constrained")
    rng = np.random.default_rng(0)
    for row, (title, group) in zip(axes, panels):
        for ax, phase in zip(row, phases):
            snapshots = [(f"seed {run.seed}", run.calibration.get(phase)) for run in group]
            where = ""
            if len(group) == 1 and snapshots[0][1] is not None:
                snapshot = snapshots[0][1]
                where = f", step {int(snapshot['step'])}"
                if int(snapshot["env_step"]):
                    where += f", env step {int(snapshot['env_step'])}"
            elif len(group) > 1:
                have = sum(snapshot is not None for _, snapshot in snapshots)
                where = f", {have} of {len(group)} seeds" if have < len(group) else ""
            _calibration_panel(ax, snapshots, f"{title}: {PHASE_TITLES[phase]}{where}", rng)
    more = f"; {len(shown)} of {len(with_files)} runs with calibration files" if len(with_files) > len(shown) else ""
    columns = "left column: last file of the offline phase; right column: latest file" if len(phases) == 2 \
        else "last file of the offline phase (offline-only runs)"
    rows = "one row per algorithm, every seed's points (marker = seed)\n" if by_algo else ""
    fig.suptitle(f"Calibration: critic min(Q1, Q2)(s, a) vs Monte-Carlo return-to-go G\n{rows}{columns}{more}")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return without


def _column(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(row["step"], row.get(key, math.nan)) for row in run.rows]
    points = [(s, v) for s, v in points if not math.isnan(v)]
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def diagnostic_keys(runs: Sequence[Run]) -> list[str]:
    """The metrics the runs' agents logged (any finite value), preferred ones first."""
    logged: list[str] = []
    for run in runs:
        for row in run.rows:
            for key, value in row.items():
                if (key not in NOT_DIAGNOSTICS and not key.startswith(NOT_DIAGNOSTIC_PREFIXES) and key not in logged
                        and isinstance(value, float) and not math.isnan(value)):
                    logged.append(key)
    ordered = [k for k in PREFERRED_DIAGNOSTICS if k in logged] + [k for k in logged if k not in PREFERRED_DIAGNOSTICS]
    return ordered[: MAX_DIAGNOSTICS - 1]


def plot_diagnostics(runs: Sequence[Run], out: Path) -> None:
    plt = _pyplot()
    colors = _algo_colors(runs)
    keys = diagnostic_keys(runs) + ["q_vs_g"]
    rows = math.ceil(len(keys) / 3)
    fig, axes = plt.subplots(rows, 3, figsize=(14, 3.75 * rows), sharex=True, layout="constrained", squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    panels = list(zip(axes.flat, keys))
    # Updates after step offline_steps are online ones; drawn for runs that got there.
    switches = sorted({r.offline_steps for r in runs if any(row["phase"] == "online" for row in r.rows)})
    for index, run in enumerate(runs):
        seed_index = [r for r in runs if r.algo == run.algo].index(run)
        style = dict(color=colors[run.algo], linestyle=SEED_STYLES[seed_index % len(SEED_STYLES)], linewidth=1.3)
        for ax, key in panels:
            if key == "q_vs_g":
                ax.plot(*_column(run, "q_data_mean"), **style, label=run.label)
                ax.plot(*_column(run, "mc_return_mean"), **{**style, "linewidth": 3.5, "alpha": 0.3})
            else:
                ax.plot(*_column(run, key), **style, label=run.label)
    for ax, key in panels:
        ax.set_title("Q(s, a) on the batch (thin) vs its return-to-go G (wide, faded)" if key == "q_vs_g" else key, fontsize=10)
        values = np.concatenate([_column(r, key)[1] for r in runs]) if key != "q_vs_g" else np.array([])
        if values.size and values.min() > 0 and values.max() > 50 * values.min():
            ax.set_yscale("log")
        if key != "q_vs_g" and not values.size:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.4")
        for step in switches:
            ax.axvline(step, color="0.3", linestyle=":", linewidth=1.2)
        ax.grid(alpha=0.3)
    for ax, _ in panels[-3:]:
        ax.set_xlabel("gradient step (offline and online)")
        ax.xaxis.set_tick_params(labelbottom=True)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if switches:
        handles.append(plt.Line2D([], [], color="0.3", linestyle=":"))
        labels.append("online starts")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=9)
    fig.suptitle("Training diagnostics (one line per run; logged means over each log interval)")
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- drift
def has_drift(run: Run) -> bool:
    """Whether the run logged any drift column (older metrics.csv files have none)."""
    return any(len(success_curve(run, 1.0, key)[0]) for key in DRIFT_KEYS)


def dimension_keys(run: Run, key: str) -> list[str]:
    """key_0, key_1, ... that the run logged, by dimension."""
    pattern = re.compile(rf"{re.escape(key)}_(\d+)")
    found = {int(m.group(1)): name for row in run.rows[:1] for name in row if (m := pattern.fullmatch(name))}
    return [found[d] for d in sorted(found) if len(success_curve(run, 1.0, found[d])[0])]


def _drift_success(ax, run: Run, width: float, color) -> float:
    """Deterministic, stochastic and training success of one run, and the deterministic
    grasp rate; returns the rightmost x."""
    right = 0.0
    for key, style in (("eval_success_rate", dict(marker="o", markersize=3, linewidth=1.8)),
                       *((key, style) for key, style, _ in EXTRA_SUCCESS)):
        x, y = success_curve(run, width, key)
        if len(x):
            ax.plot(x, y, color=color, **style)
            right = max(right, x[-1])
    x, y = success_curve(run, width, "eval_grasp_rate")
    if len(x):
        ax.plot(x, y, **GRASP_STYLE)
    ax.set_ylim(-0.03, 1.05)
    return right


def _drift_metric(ax, run: Run, width: float, key: str, color) -> float:
    """The mean (thick, the algorithm's colour) and each action dimension (thin); the last
    dimension is the gripper's. Returns the rightmost x."""
    right = 0.0
    import matplotlib

    dims = dimension_keys(run, key)
    # A sequential map for the arm: no dimension takes an algorithm's colour (the mean's).
    palette = matplotlib.colormaps["viridis"]
    for index, name in enumerate(dims):
        x, y = success_curve(run, width, name)
        gripper = index == len(dims) - 1
        ax.plot(x, y, color="black" if gripper else palette(index / max(len(dims) - 2, 1) * 0.9), linewidth=0.9,
                linestyle="--" if gripper else "-", alpha=0.75,
                label=f"gripper (dim {index})" if gripper else f"arm dim {index}")
        right = max(right, x[-1])
    x, y = success_curve(run, width, key)
    if len(x):
        ax.plot(x, y, color=color, linewidth=2.4, label="mean over dimensions" if dims else "mean")
        right = max(right, x[-1])
    else:
        ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.4")
    return right


DRIFT_TITLES = {
    "success": "success: deterministic (solid), stochastic (dashed),\n"
               "training episodes (dotted); grasp rate (grey x)",
    "action_change": "action_change: mean |change| of the deterministic action\n"
                     "on the probe set since the previous row",
    "feature_change": "feature_change: mean 1 - cos(encoder features now,\nat the previous row) on the probe set",
    "policy_std": "policy_std: the actor's mean pre-tanh std on the probe set",
}


def plot_drift(runs: Sequence[Run], out: Path) -> list[str]:
    """What moved across the switch: per run a row of success, action change, feature change and
    policy std on the success figure's x axis, so a dip can be read against what moved first.
    Written when some run logged the drift columns; returns the names of runs without them."""
    drawn = [run for run in runs if has_drift(run)]
    without = [run.name for run in runs if not has_drift(run)]
    if not drawn:
        return without
    # A row per run: past MAX_DRIFT_RUNS the figure grows past what a screen shows; the rest
    # are named like the runs without drift columns (plot the study's runs in parts to see them).
    without += [run.name for run in drawn[MAX_DRIFT_RUNS:]]
    drawn = drawn[:MAX_DRIFT_RUNS]
    plt = _pyplot()
    online_width = max((r.online_env_steps for r in drawn), default=0)
    width = online_width or max((r.offline_steps for r in drawn), default=1) or 1
    colors = _algo_colors(drawn)
    keys = ["success", *DRIFT_KEYS]
    fig, axes = plt.subplots(len(drawn), len(keys), figsize=(18, 2.9 * len(drawn) + 1.4), sharex=True, squeeze=False,
                             layout="constrained")
    right = width
    for row, run in zip(axes, drawn):
        for ax, key in zip(row, keys):
            if key == "success":
                right = max(right, _drift_success(ax, run, width, colors[run.algo]))
                ax.set_ylabel(f"{run.label}\nsuccess rate", fontsize=9)
            elif key == "feature_change":  # one number per row: no dimensions
                x, y = success_curve(run, width, key)
                if len(x):
                    ax.plot(x, y, color=colors[run.algo], linewidth=2)
                    right = max(right, x[-1])
                else:
                    ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.4")
            else:
                right = max(right, _drift_metric(ax, run, width, key, colors[run.algo]))
            ax.axvspan(-width, 0, color="0.94", zorder=0)
            ax.axvline(0, color="0.3", linestyle="--", linewidth=1.2)
            ax.grid(alpha=0.3)
    for ax, key in zip(axes[0], keys):
        ax.set_title(DRIFT_TITLES[key], fontsize=9)
    axes[0][0].set_xlim(-width * 1.02, right * 1.02)
    for ax in axes[-1]:
        _success_ticks(ax, drawn, width, right)
        ax.set_xlabel("offline: gradient steps (rescaled) | online: env steps")
    # One legend for the dimension lines, from the first panel that has them.
    handles, labels = next((ax.get_legend_handles_labels() for ax in axes[:, 1] if ax.get_legend_handles_labels()[0]),
                           ([], []))
    handles.append(plt.Line2D([], [], color="0.3", linestyle="--"))
    labels.append("online starts (x = 0)")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8.5)
    fig.suptitle("What moved across the switch: success against the drift of the actor and the encoder "
                 "(the change columns: since the previous log row)")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return without
