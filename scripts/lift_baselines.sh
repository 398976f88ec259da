#!/usr/bin/env bash
# Every algorithm on lift_visual at a CPU scale, one seed, the same settings for all (docs/results.md,
# "Every algorithm on lift_visual"). Two queues at once, one torch thread each:
#   ./run.sh bash scripts/lift_baselines.sh [runs_root]
# Shared: the 100-episode noise-0.3 demo set at 64 px, batch 128, the default encoder, the
# reference tau, 6,000 offline updates where the method pretrains, 3,000 online environment
# steps, 20 evaluation episodes every 2,000 updates, at the switch and at the end. Each method
# otherwise keeps its own configs/algo/<name>.yaml, except:
# - the warm-up: the reference 5,000 steps would be most of this online budget, so sac, rlpd
#   and wsrl get 300;
# - wsrl fine-tunes from the calql run's pretraining (init_from), so its networks are Cal-QL's
#   2 critics without LayerNorm, not WSRL's 10 LayerNorm critics (4x slower to pretrain here).
set -euo pipefail
runs_root="${1:-runs/lift_baselines}"
data=data/lift64_100ep_noise0p3.hdf5
if [ ! -f "$data" ]; then
  python -m calql_vision.collect task=lift_visual task.image_size=64 episodes=100 noise=0.3 out="$data" seed=0
fi
common=(task=lift_visual task.image_size=64 batch_size=128 "dataset=$data" offline_steps=6000
        online_env_steps=3000 eval_every=2000 eval_episodes=20 log_every=100 checkpoint_every=2000
        seed=0 threads=1 precision=bf16 "runs_root=$runs_root")

train() {  # train <algo> [key=value ...]: one run, its outcome on one line
  if python -m calql_vision.train "${common[@]}" algo="$@" > "$runs_root/$1.log" 2>&1; then
    echo "done: $*"
  else
    echo "FAILED: $* (see $runs_root/$1.log)"
  fi
}

wsrl_from_calql() {
  local pretrained=""
  while [ -z "$pretrained" ]; do  # the calql run's checkpoint at the switch
    pretrained=$(ls -d "$runs_root"/lift_visual/calql/*/checkpoints/step_6000.pt 2>/dev/null | head -1 || true)
    [ -n "$pretrained" ] || sleep 30
  done
  train wsrl "init_from=$pretrained" algo.num_critics=2 algo.critic_layer_norm=false \
    algo.actor_layer_norm=false algo.warmup_steps=300
}

mkdir -p "$runs_root"
{ train calql; train iql; train rlpd algo.warmup_steps=300; train sac algo.warmup_steps=300; } &
{ train cql; train aca; wsrl_from_calql; } &
wait
