"""Does the critic know better than the actor? Each checkpoint rolled out twice on its run's own
evaluation scenes: with the deterministic policy (the success column of metrics.csv), and
acting at every step by the action the critics' min Q ranks highest among the deterministic
action and K samples of the policy.

    python docs/figures/lift_visual_after_grasp/best_of_samples.py "label=<run dir>"... [steps=6000] [k=16]

If picking by Q lifts success well above the deterministic policy's, the critic ranks the
actions the task needs above the ones the actor settles on, and the actor does not extract
them; if not, the critic is no better a guide than the actor. The samples come from a
generator seeded per episode, so a rerun gives the same rows. One markdown row per
checkpoint: success and grasp rate of each way of acting.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from after_grasp import checkpoint_steps  # this folder's sibling


def evaluate(run: Path, checkpoint: str, samples: int) -> dict[str, tuple[float, float]]:
    import torch

    from calql_vision.evaluate import load_policy
    from calql_vision.evaluation import evaluate_policy, evaluation_seed

    torch.set_num_threads(1)
    cfg, workers, agent, _ = load_policy(run, checkpoint, device="cpu")
    generators: dict[int, torch.Generator] = {}

    @torch.no_grad()
    def best_of_samples(obs, episode):
        if episode not in generators:
            generators[episode] = torch.Generator().manual_seed(episode)
        images, proprio, _ = agent._observation_tensors(obs)  # noqa: SLF001  (the tensors agent.act builds)
        features = agent.encode(agent.encoder, images, proprio)
        candidates = [agent.actor.deterministic(features)]
        candidates += [agent.actor.sample(features, generators[episode]) for _ in range(samples)]
        actions = torch.stack(candidates, dim=1)  # (1, 1 + K, A)
        q = agent.critic(features, actions).min(0).values  # (1, 1 + K)
        return actions[0, int(q[0].argmax())].numpy().astype(np.float64)

    def deterministic(obs, episode):
        return agent.act(obs, deterministic=True)

    out = {}
    try:
        for name, act in (("deterministic", deterministic), (f"best of {samples + 1} by Q", best_of_samples)):
            result = evaluate_policy(workers, act, int(cfg.eval_episodes), evaluation_seed(int(cfg.seed)))
            out[name] = (result.success_rate, result.grasp_rate)
    finally:
        workers.close()
    return out


def main(argv: list[str]) -> None:
    chosen = next((a.split("=", 1)[1] for a in argv if a.startswith("steps=")), None)
    samples = int(next((a.split("=", 1)[1] for a in argv if a.startswith("k=")), 16))
    runs = [a.split("=", 1) for a in argv if not a.startswith(("steps=", "k="))]
    header = False
    for label, folder in runs:
        run = Path(folder)
        for step in [int(s) for s in chosen.split(",")] if chosen else checkpoint_steps(run):
            if not (run / "checkpoints" / f"step_{step}.pt").exists():
                continue
            result = evaluate(run, f"step_{step}.pt", samples)
            if not header:
                names = list(result)
                print("| run | step | " + " | ".join(f"{n}: success / grasp rate" for n in names) + " |")
                print("|---|---|" + "---|" * len(names))
                header = True
            cells = [f"{s:.2f} / {g:.2f}" for s, g in result.values()]
            print(f"| {label} | {step:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
