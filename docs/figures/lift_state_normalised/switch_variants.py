"""One method on one task: each seed's pretraining fine-tuned online again through init_from,
with and without a change at the switch, beside the study's own online phase; per seed, from
the runs' metrics.csv.

    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/switch_variants.py \
        studies/lift_state_norm calql \
        "carried, from the checkpoint=studies/calql_online_alpha/carried" "0.1=studies/calql_online_alpha/alpha0p1"

The first folder is the compare study that pretrained (and fine-tuned) each seed. Each
`label=folder` after the method holds `seed<k>/<task>/<algo>/<run>`: give the same init_from
procedure without the change as one of them, since an init_from run is another random draw
of the online phase and the change is judged against that draw.

Prints a markdown table: success at the switch (the pretraining's last evaluation), every
online evaluation, the worst and the final, with the temperature and the policy's entropy at
the first online evaluation; then the means over the seeds each variant has finished. With
`--with-control` last, each seed's offline continuation control from the study is a row too
(its evaluations at the same update counts, at the environment steps the online run reaches them).
"""
from __future__ import annotations

import sys
from pathlib import Path

from study_runs import control_run, evaluations, one_run, task_folder, variant_run, variants  # this folder's reader

from calql_vision.control import CONTROL_PHASE

SAME_RUN = "the study's own online phase"
CONTROL = "offline control (no online phase)"


def env_steps(online: list[dict]) -> list[int]:
    return [int(row["env_step"]) for row in online]


def line(name: str, seed: int, switch: float, online: list[dict], schedule: list[int]) -> str:
    """One run's row; where its evaluations fall at other environment steps than the header's
    (a warm-up delays the updates they count), each success carries its own step."""
    success = [row["eval_success_rate"] for row in online]
    steps = env_steps(online)
    cells = [f"{s:.2f}" if steps == schedule[:len(steps)] else f"{s:.2f} @{step:,}" for s, step in zip(success, steps)]
    first = online[0]
    return (f"| {name} | {seed} | {switch:.2f} | " + " / ".join(cells)
            + f" | {min(success):.2f} | **{success[-1]:.2f}** | {first['alpha']:.2f} | {first['entropy']:+.2f} |")


def variants_of(seed: int, study_run: Path, folders: dict[str, Path], algo: str,
                with_control: bool) -> dict[str, list[dict]]:
    """Label -> the online evaluations of that variant of this seed (those that have run)."""
    found = {SAME_RUN: evaluations(study_run, "online")}
    if with_control:  # compare puts it beside the run: <task>/<algo>-control/<run>
        found[CONTROL] = evaluations(control_run(study_run, algo), CONTROL_PHASE)
    for label, folder in folders.items():
        run = variant_run(folder, seed, algo)
        if run is not None:
            found[label] = evaluations(run, "online")
    return {label: online for label, online in found.items() if online}


def main(study: str, algo: str, *variant_args: str) -> None:
    with_control = variant_args[-1:] == ("--with-control",)
    folders = variants(variant_args[:-1] if with_control else variant_args)
    table, finals, schedule = [], {}, []
    for seed_dir in sorted(Path(study, "runs").glob("seed*")):
        seed = int(seed_dir.name[4:])
        study_run = one_run(task_folder(seed_dir) / algo)
        switch = evaluations(study_run, "offline")[-1]["eval_success_rate"]
        schedule = max(schedule, env_steps(evaluations(study_run, "online")), key=len)
        for label, online in variants_of(seed, study_run, folders, algo, with_control).items():
            table.append(line(label, seed, switch, online, schedule))
            success = [row["eval_success_rate"] for row in online]
            finals.setdefault(label, []).append((switch, min(success), success[-1], len(online)))
    steps = " / ".join(f"{step:,}" for step in schedule)
    print(f"| {algo}: variant | seed | switch | online, {steps} env steps | worst | final "
          f"| alpha at the first online evaluation | entropy there |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(table))
    # Means over the seeds whose run of that variant has finished (as many evaluations as the
    # longest), so a run still going does not pull a mean.
    longest = max(n for runs in finals.values() for *_, n in runs)
    print(f"\n| {algo}: variant | seeds finished | switch | worst | final |\n|---|---|---|---|---|")
    for label, runs in finals.items():
        done = [r for r in runs if r[3] == longest]
        if done:
            means = [sum(r[i] for r in done) / len(done) for i in range(3)]
            print(f"| {label} | {len(done)} | {means[0]:.2f} | {means[1]:.2f} | {means[2]:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
