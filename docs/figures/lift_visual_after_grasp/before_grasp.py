"""How the episodes that never hold the cube fail, checkpoint by checkpoint.

    python docs/figures/lift_visual_after_grasp/before_grasp.py "label=<run dir>"... [steps=6000,12000] \
        [demos=<robomimic hdf5>]

Each checkpoint is rolled out on the run's own training-time evaluation scenes (as
after_grasp.py does; the success column reproduces metrics.csv), keeping per step the
action, the grasp flag, the distance from the gripper's grasp site to the cube's centre and
how far the cube has been pushed across the table. The scripted demonstrator closes the
gripper once it is within 1 cm of the cube's centre. One markdown row per checkpoint:

* success, grasp rate: as in after_grasp.py;
* the episodes that never held the cube, as shares of all episodes:
  * never near: the grasp site never came within NEAR of the cube's centre;
  * closed near, no grasp: it did, and the gripper was commanded closed there at some step,
    yet the pads never both touched the cube;
  * near, never closed there: it came near but the gripper was never commanded closed while near;
* pushed: the share of those episodes in which the cube moved more than PUSHED across the
  table before any grasp;
* closest approach: the median over those episodes of their smallest distance (cm);
* Q gain of closing: the critics' min Q(s, a) with the policy's action but its gripper part
  set to +1 (closed), minus Q(s, policy's action), averaged over an episode's states near the
  cube before any grasp; then the mean over the episodes that came near and held the cube,
  and over those that came near and never held it (positive: the critic prefers closing).

A second table gives, per checkpoint, the policy's mean gripper command at those near states
and the same Q difference for gripper commands -1, -0.5, 0, +0.5 and +1: the critic's
profile along the gripper axis where the grasp is decided.

The rollouts are kept in <run>/eval/before_grasp_<checkpoint>.json and reused. With
demos=<file>, a first row measures the demonstrations: each recorded state is restored in
a low-dim Lift env.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from after_grasp import checkpoint_steps, q_gains_of_setting  # this folder's sibling

NEAR = 0.02  # metres: twice the demonstrator's closing tolerance
PUSHED = 0.02  # metres of the cube's travel across the table
GRIPPER_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)  # gripper commands probed: -1 opens, +1 closes


def step_record(action, info, start_xy) -> dict:
    cube = np.asarray(info["object_pos"])
    site = np.asarray(info["low_dim"]["robot0_eef_pos"])
    return {"action": [float(a) for a in action], "grasped": bool(info["grasped"]),
            "distance": float(np.linalg.norm(site - cube)), "pushed": float(np.linalg.norm(cube[:2] - start_xy))}


def rollouts(run: Path, checkpoint: str) -> list[dict]:
    cache = run / "eval" / f"before_grasp_{Path(checkpoint).stem}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import torch

    from calql_vision.evaluate import load_policy
    from calql_vision.evaluation import evaluate_policy, evaluation_seed

    torch.set_num_threads(1)
    cfg, workers, agent, _ = load_policy(run, checkpoint, device="cpu")
    steps: dict[int, list] = {}
    actions: dict[int, np.ndarray] = {}
    start: dict[int, np.ndarray] = {}
    near: dict[int, list] = {}  # episode -> its observations within NEAR of the cube before any grasp

    def act(obs, episode):
        actions[episode] = agent.act(obs, deterministic=True)
        return actions[episode]

    def on_frame(episode, obs, info, renderer):
        if "grasped" not in info:  # the reset's info carries success alone: read the start below
            return
        if episode not in start:  # the first step barely moves the cube: its position then is the start
            start[episode] = np.asarray(info["object_pos"])[:2]
        steps.setdefault(episode, []).append(step_record(actions[episode], info, start[episode]))
        if steps[episode][-1]["distance"] < NEAR and not any(s["grasped"] for s in steps[episode]):
            near.setdefault(episode, []).append({key: np.array(value) for key, value in obs.items()})

    try:
        result = evaluate_policy(workers, act, int(cfg.eval_episodes), evaluation_seed(int(cfg.seed)), on_frame=on_frame)
    finally:
        workers.close()
    profiles = gripper_profiles(agent, near)
    episodes = [{"success": bool(e.success), "steps": steps[i], "gripper_profile": profiles.get(i)}
                for i, e in enumerate(result.episodes)]
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(episodes))
    return episodes


def gripper_profiles(agent, observations: dict[int, list]) -> dict[int, dict]:
    """Per episode, over its states near the cube before any grasp: the policy's mean gripper
    command, and the mean of min-critic Q(s, a with the gripper part set to g) - Q(s, a) for
    each g of GRIPPER_GRID (a the policy's deterministic action)."""
    if not observations:
        return {}
    episodes = sorted(observations)
    flat = [o for e in episodes for o in observations[e]]
    owner = np.array([e for e in episodes for _ in observations[e]])
    batch = {key: np.stack([o[key] for o in flat]) for key in flat[0]}
    actions, gains = q_gains_of_setting(agent, batch, dimension=6, values=GRIPPER_GRID)
    return {int(e): {"command": float(actions[owner == e, 6].mean()),
                     "q": [float(v) for v in gains[owner == e].mean(axis=0)]} for e in episodes}


def demonstrations(path: str) -> list[dict]:
    import h5py

    from calql_vision.config import load_group_file
    from envs import make_env

    env = make_env(load_group_file("task", "lift_state"), seed=0)
    episodes = []
    try:
        with h5py.File(path, "r") as f:
            for name in sorted(f["data"], key=lambda n: int(n.split("_")[1])):
                demo = f["data"][name]
                records, start_xy = [], None
                for state, action in zip(demo["states"][:], demo["actions"][:]):
                    info = env.reset_to(state)[1]
                    start_xy = np.asarray(info["object_pos"])[:2] if start_xy is None else start_xy
                    records.append(step_record(action, info, start_xy))
                episodes.append({"success": bool(demo["rewards"][-1] > 0), "steps": records, "gripper_profile": None})
    finally:
        env.close()
    return episodes


def row(episodes: list[dict]) -> dict[str, float]:
    missed_episodes = [e for e in episodes if not any(s["grasped"] for s in e["steps"])]
    missed = [e["steps"] for e in missed_episodes]

    def near(s):
        return s["distance"] < NEAR

    never_near = [m for m in missed if not any(near(s) for s in m)]
    closed_near = [m for m in missed if any(near(s) and s["action"][6] > 0 for s in m)]
    n = len(episodes)
    return {
        "success": np.mean([e["success"] for e in episodes]),
        "grasp rate": 1 - len(missed) / n,
        "never near": len(never_near) / n,
        "closed near, no grasp": len(closed_near) / n,
        "near, never closed there": (len(missed) - len(never_near) - len(closed_near)) / n,
        "pushed": np.mean([max(s["pushed"] for s in m) > PUSHED for m in missed]) if missed else np.nan,
        "closest approach (cm)": np.median([100 * min(s["distance"] for s in m) for m in missed]) if missed else np.nan,
        "Q gain of closing: held": mean_gain([e for e in episodes if e not in missed_episodes]),
        "Q gain of closing: missed": mean_gain(missed_episodes),
    }


def mean_gain(episodes: list[dict], grid_index: int = -1) -> float:
    """The mean over the episodes that came near of Q(gripper = GRIPPER_GRID[i]) - Q(policy)."""
    gains = [e["gripper_profile"]["q"][grid_index] for e in episodes if e["gripper_profile"] is not None]
    return float(np.mean(gains)) if gains else np.nan


def profile_row(episodes: list[dict]) -> list[float]:
    """The policy's gripper command near the cube, then Q(g) - Q(policy) for each g of the grid,
    each a mean over the episodes that came near before any grasp."""
    commands = [e["gripper_profile"]["command"] for e in episodes if e["gripper_profile"] is not None]
    return [float(np.mean(commands)) if commands else np.nan] + [mean_gain(episodes, i) for i in range(len(GRIPPER_GRID))]


def main(argv: list[str]) -> None:
    chosen = next((a.split("=", 1)[1] for a in argv if a.startswith("steps=")), None)
    demos = next((a.split("=", 1)[1] for a in argv if a.startswith("demos=")), None)
    runs = [a.split("=", 1) for a in argv if not a.startswith(("steps=", "demos="))]
    columns = list(row([{"success": True, "gripper_profile": None,
                         "steps": [{"grasped": True, "distance": 0.0, "pushed": 0.0, "action": [0.0] * 7}]}]))

    def cell(column, value):
        if value != value:  # NaN: nothing to average
            return "-"
        return f"{value:.1f}" if column.endswith("(cm)") else f"{value:+.2f}" if column.startswith("Q") else f"{value:.2f}"

    def cells(values):
        return [cell(c, values[c]) for c in columns]

    print("| run | step | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    if demos:
        print("| " + " | ".join(["demonstrations", "-", *cells(row(demonstrations(demos)))]) + " |", flush=True)
    profiles = []
    for label, folder in runs:
        run = Path(folder)
        steps = [int(s) for s in chosen.split(",")] if chosen else checkpoint_steps(run)
        for step in steps:
            if (run / "checkpoints" / f"step_{step}.pt").exists():  # a control starts after the switch
                episodes = rollouts(run, f"step_{step}.pt")
                print(f"| {label} | {step:,} | " + " | ".join(cells(row(episodes))) + " |", flush=True)
                profiles.append((label, step, profile_row(episodes)))
    print("\n| run | step | policy's gripper command near the cube | "
          + " | ".join(f"Q(gripper {g:+g}) - Q(policy)" for g in GRIPPER_GRID) + " |")
    print("|---|---|" + "---|" * (1 + len(GRIPPER_GRID)))
    for label, step, values in profiles:
        print(f"| {label} | {step:,} | " + " | ".join("-" if v != v else f"{v:+.2f}" for v in values) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
