"""Does the critic tell the actor that the demonstrations' actions are better than its own?

    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/critic_preference.py \\
        studies/lift_state_norm_clip calql,cql [steps=1500,3000,6000]

For each run of the study (`<study>/runs/seed<k>/<task>/<algo>/<run>`) and each checkpoint
named, on every transition of the demonstrations the run trained on (its config's dataset
and filter key), with the critics' min and un-augmented observations:

* preference for the data's action: Q(s, a_data) - Q(s, pi(s)), pi the deterministic policy,
  mean over the transitions; and the share of transitions where it is positive;
* bound active: the share where Q(s, pi(s)) lies below the Monte-Carlo return of the data
  from s, the share in which Cal-QL's calibration bound holds the policy's Q up (CQL's runs
  are measured the same way, the bound unused);
* distance to the data: the mean |pi(s) - a_data| over the three position actions, and the
  share of transitions where the policy's gripper command has the other sign than the data's.

Each is given for two stages of a demonstration: reaching (the transitions before the
demonstration first commands the gripper closed) and after (the rest: closing, holding,
lifting). One markdown row per algorithm, stage and step, the mean over the seeds with the
per-seed values after it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

COLUMNS = ["preference for the data's action", "share preferring it", "bound active", "|pi - a| (xyz)",
           "gripper sign differs"]


def run_folders(study: Path, algo: str) -> list[tuple[int, Path]]:
    found = []
    for seed_folder in sorted(study.glob("runs/seed*"), key=lambda p: int(p.name[4:])):
        runs = [r for r in seed_folder.glob(f"*/{algo}/*") if (r / "config.yaml").is_file()]
        if len(runs) == 1:
            found.append((int(seed_folder.name[4:]), runs[0]))
    return found


def demonstration_batch(cfg, spec_image_keys) -> dict[str, np.ndarray]:
    """Every transition of the run's training demonstrations, with each one's stage."""
    from calql_vision.training_data import dataset_filter_key, default_dataset_path
    from datasets import load_transitions, read_mask_names

    path = Path(cfg.dataset) if cfg.dataset else default_dataset_path(cfg.task)
    data = load_transitions(path, image_keys=list(spec_image_keys), proprio_keys=list(cfg.task.proprio_keys),
                            gamma=cfg.algo.discount, reward_scale=cfg.reward_scale, reward_bias=cfg.reward_bias,
                            filter_key=dataset_filter_key(path, read_mask_names(path), cfg.filter_key),
                            show_progress=False)
    closing = data.actions[:, 6] > 0
    reaching = np.zeros(len(data.actions), dtype=bool)
    for demo in np.unique(data.demo_of_transition):
        index = np.flatnonzero(data.demo_of_transition == demo)
        first_close = np.argmax(closing[index]) if closing[index].any() else len(index)
        reaching[index[:first_close]] = True
    return {"proprio": data.proprio[data.obs_index], "images": {k: v[data.obs_index] for k, v in data.images.items()},
            "actions": data.actions.astype(np.float32), "reward_to_go": data.reward_to_go, "reaching": reaching}


def measure(run: Path, step: int) -> dict[str, dict[str, float]]:
    import torch

    from calql_vision.evaluate import load_policy

    torch.set_num_threads(1)
    cfg, workers, agent, _ = load_policy(run, f"step_{step}.pt", device="cpu")
    try:
        batch = demonstration_batch(cfg, workers.image_keys)
    finally:
        workers.close()
    obs = {"proprio": batch["proprio"], **batch["images"]}
    policy_actions = agent.act(obs, deterministic=True).astype(np.float32)
    images, proprio, _ = agent._observation_tensors(obs)  # noqa: SLF001  (the tensors agent.act builds)
    q = {name: agent.q_values({"obs": images, "proprio": proprio, "actions": torch.as_tensor(a)})
         for name, a in (("data", batch["actions"]), ("policy", policy_actions))}
    preference = q["data"] - q["policy"]
    out = {}
    for stage, mask in (("reaching", batch["reaching"]), ("after", ~batch["reaching"])):
        out[stage] = {
            COLUMNS[0]: float(preference[mask].mean()),
            COLUMNS[1]: float((preference[mask] > 0).mean()),
            COLUMNS[2]: float((q["policy"][mask] < batch["reward_to_go"][mask]).mean()),
            COLUMNS[3]: float(np.abs(policy_actions[mask, :3] - batch["actions"][mask, :3]).mean()),
            COLUMNS[4]: float((np.sign(policy_actions[mask, 6]) != np.sign(batch["actions"][mask, 6])).mean()),
        }
    return out


def cell(column: str, values: list[float]) -> str:
    form = "{:+.1f}" if column == COLUMNS[0] else "{:.2f}"
    return form.format(np.mean(values)) + " (" + ", ".join(form.format(v) for v in values) + ")"


def main(argv: list[str]) -> None:
    study, algos = Path(argv[0]), argv[1].split(",")
    steps = next((a.split("=", 1)[1] for a in argv[2:] if a.startswith("steps=")), "1500,3000,6000")
    print("| algorithm | stage | step | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for algo in algos:
        for step in [int(s) for s in steps.split(",")]:
            per_seed = [measure(run, step) for _, run in run_folders(study, algo)]
            for stage in ("reaching", "after"):
                cells = [cell(c, [m[stage][c] for m in per_seed]) for c in COLUMNS]
                print(f"| {algo} | {stage} | {step:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
