"""What the deterministic policy does once it holds the cube, checkpoint by checkpoint.

    python docs/figures/lift_visual_after_grasp/after_grasp.py "label=<run dir>"... [steps=6000,7000,...] \
        [demos=<robomimic hdf5>]

Each checkpoint (every step_<n>.pt of the run, or the steps named) is rolled out on the
run's own training-time evaluation scenes (as many as its eval_episodes; the success column
reproduces metrics.csv), and every step's grasp flag and action are kept. One
markdown row per checkpoint:

* success and grasp rate: the shares of episodes that lifted the cube, and that held it at
  some step;
* held, not lifted: the share that held it and still failed;
* z after grasp: the mean vertical action over the first AFTER steps after the first grasp,
  over the episodes that grasped (the demonstrations lift at +1 once the gripper has closed);
* gripper after grasp: the mean gripper action over the same steps (+1 closes);
* steps to lift: from the first grasp to success, mean over the successful episodes;
* Q gain of z = +1: at the first grasped state of each episode that grasped, the critics' min
  Q(s, a) with the policy's action but its vertical part set to +1, minus Q(s, policy's action),
  mean over those episodes (positive: the critic prefers lifting at full speed).

The rollouts of a checkpoint are kept in <run>/eval/after_grasp_<checkpoint>.json and reused.
With demos=<file>, a first row measures the demonstrations the same way: each recorded state
is restored in a low-dim Lift env to read the grasp flag (the Q column stays empty).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

AFTER = 10


def rollouts(run: Path, checkpoint: str) -> list[dict]:
    """Per episode: success, and per step the grasp flag and the action."""
    cache = run / "eval" / f"after_grasp_{Path(checkpoint).stem}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import torch

    from calql_vision.evaluate import load_policy
    from calql_vision.evaluation import evaluate_policy, evaluation_seed

    torch.set_num_threads(1)
    cfg, workers, agent, _ = load_policy(run, checkpoint, device="cpu")
    steps: dict[int, list] = {}
    first_grasped: dict[int, dict] = {}  # episode -> its first observation with the cube held

    def act(obs, episode):
        action = agent.act(obs, deterministic=True)
        steps.setdefault(episode, []).append({"action": [float(a) for a in action]})
        return action

    def on_frame(episode, obs, info, renderer):
        if "grasped" in info:  # every step's info; the reset's carries only success
            steps[episode][-1]["grasped"] = bool(info["grasped"])
            if info["grasped"] and episode not in first_grasped:
                first_grasped[episode] = {key: np.array(value) for key, value in obs.items()}

    try:
        result = evaluate_policy(workers, act, int(cfg.eval_episodes), evaluation_seed(int(cfg.seed)), on_frame=on_frame)
    finally:
        workers.close()
    gains = q_gain_of_full_lift(agent, first_grasped)
    episodes = [{"success": bool(e.success), "steps": steps[i], "q_gain_full_lift": gains.get(i)}
                for i, e in enumerate(result.episodes)]
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(episodes))
    return episodes


def q_gain_of_full_lift(agent, observations: dict[int, dict]) -> dict[int, float]:
    """Per episode: min-critic Q(s, a with a_z = +1) - Q(s, a) at its first grasped state."""
    if not observations:
        return {}
    order = sorted(observations)
    batch = {key: np.stack([observations[e][key] for e in order]) for key in observations[order[0]]}
    _, gains = q_gains_of_setting(agent, batch, dimension=2, values=(1.0,))
    return {e: float(gain) for e, gain in zip(order, gains[:, 0])}


def q_gains_of_setting(agent, batch: dict, dimension: int, values) -> tuple[np.ndarray, np.ndarray]:
    """The policy's deterministic actions (N, A) on a batch of observations, and per value v
    the critics' min Q(s, a with a[dimension] = v) - Q(s, a), as (N, len(values))."""
    import torch

    actions = agent.act(batch, deterministic=True).astype(np.float32)
    images, proprio, _ = agent._observation_tensors(batch)  # noqa: SLF001  (the tensors agent.act builds)

    def q(a):
        return agent.q_values({"obs": images, "proprio": proprio, "actions": torch.as_tensor(a, device=agent.device)})

    base = q(actions)
    gains = []
    for value in values:
        changed = actions.copy()
        changed[:, dimension] = value
        gains.append(q(changed) - base)
    return actions, np.stack(gains, axis=1)


def row(episodes: list[dict]) -> dict[str, float]:
    grasp_at = [next((t for t, s in enumerate(e["steps"]) if s["grasped"]), None) for e in episodes]
    grasped = [(e, t) for e, t in zip(episodes, grasp_at) if t is not None]
    after = [np.array([s["action"] for s in e["steps"][t:t + AFTER]]) for e, t in grasped]
    lifted = [len(e["steps"]) - t for e, t in grasped if e["success"]]
    return {
        "success": np.mean([e["success"] for e in episodes]),
        "grasp rate": len(grasped) / len(episodes),
        "held, not lifted": sum(not e["success"] for e, _ in grasped) / len(episodes),
        "z after grasp": np.mean([a[:, 2].mean() for a in after]) if after else np.nan,
        "gripper after grasp": np.mean([a[:, 6].mean() for a in after]) if after else np.nan,
        "steps to lift": np.mean(lifted) if lifted else np.nan,
        "Q gain of z = +1": (np.mean(gains) if (gains := [e["q_gain_full_lift"] for e, _ in grasped]) and None not in gains
                             else np.nan),
    }


def demonstrations(path: str) -> list[dict]:
    """The demos of a robomimic file in rollouts()' form: success, and per step the grasp flag
    of the recorded state and the recorded action."""
    import h5py

    from calql_vision.config import load_group_file
    from envs import make_env

    env = make_env(load_group_file("task", "lift_state"), seed=0)
    episodes = []
    try:
        with h5py.File(path, "r") as f:
            for name in sorted(f["data"], key=lambda n: int(n.split("_")[1])):
                demo = f["data"][name]
                steps = [{"grasped": bool(env.reset_to(state)[1]["grasped"]), "action": [float(a) for a in action]}
                         for state, action in zip(demo["states"][:], demo["actions"][:])]
                episodes.append({"success": bool(demo["rewards"][-1] > 0), "steps": steps, "q_gain_full_lift": None})
    finally:
        env.close()
    return episodes


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))


def format_cells(values: dict[str, float], columns: list[str]) -> list[str]:
    def cell(column: str) -> str:
        value = values[column]
        if value != value:  # NaN: nothing to average
            return "-"
        if column.endswith("after grasp") or column.startswith("Q"):
            return f"{value:+.2f}"
        return f"{value:.0f}" if column == "steps to lift" else f"{value:.2f}"
    return [cell(c) for c in columns]


def main(argv: list[str]) -> None:
    chosen = next((a.split("=", 1)[1] for a in argv if a.startswith("steps=")), None)
    demos = next((a.split("=", 1)[1] for a in argv if a.startswith("demos=")), None)
    runs = [a.split("=", 1) for a in argv if not a.startswith(("steps=", "demos="))]
    columns = ["success", "grasp rate", "held, not lifted", "z after grasp", "gripper after grasp", "steps to lift",
               "Q gain of z = +1"]
    print("| run | step | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    if demos:
        print("| " + " | ".join(["demonstrations", "-", *format_cells(row(demonstrations(demos)), columns)]) + " |")
    for label, folder in runs:
        run = Path(folder)
        steps = [int(s) for s in chosen.split(",")] if chosen else checkpoint_steps(run)
        for step in steps:
            if not (run / "checkpoints" / f"step_{step}.pt").exists():  # a control starts after the switch
                continue
            cells = format_cells(row(rollouts(run, f"step_{step}.pt")), columns)
            print(f"| {label} | {step:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
