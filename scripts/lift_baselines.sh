#!/usr/bin/env bash
# Every algorithm on lift_visual at a CPU scale, one seed, the same settings for all (README,
# "Every algorithm on lift_visual"). Two runs at a time, one torch thread each:
#   ./run.sh bash scripts/lift_baselines.sh [runs_root]
# Shared: 64 px, batch 64, a 16-channel encoder, tau 0.02 (a value starting at 0 reaches the
# returns within the budget), 4,000 offline updates where the method pretrains, 3,000 online
# environment steps, 20 evaluation episodes at steps 2,000, 4,000 (the switch), 6,000 and the
# end. Each method otherwise keeps its own configs/algo/<name>.yaml, except the warm-up: the
# reference 5,000 steps would be most of this online budget, so sac, rlpd and wsrl get 300.
set -euo pipefail
runs_root="${1:-runs/lift_baselines}"
data=data/lift64_40ep_noise0p3.hdf5
if [ ! -f "$data" ]; then
  python -m calql_vision.collect task=lift_visual task.image_size=64 episodes=40 noise=0.3 out="$data" seed=0
fi
common="task=lift_visual task.image_size=64 encoder.channels=16 encoder.strides=[2,2,2,1] batch_size=64
  dataset=$data offline_steps=4000 online_env_steps=3000 eval_every=2000 eval_episodes=20 log_every=100
  checkpoint_every=2000 seed=0 threads=1 precision=bf16 algo.tau=0.02 runs_root=$runs_root"
# Longest first, so the two workers finish together.
printf '%s\n' \
  "algo=wsrl algo.warmup_steps=300" "algo=calql" "algo=cql" "algo=iql" "algo=aca" \
  "algo=rlpd algo.warmup_steps=300" "algo=sac algo.warmup_steps=300" |
  xargs -P 2 -I{} sh -c "python -m calql_vision.train $(echo $common) {} > /dev/null 2>&1 \
    && echo 'done: {}' || echo 'FAILED: {}'"
