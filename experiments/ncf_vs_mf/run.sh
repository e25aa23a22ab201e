#!/usr/bin/env bash
# Rendle et al. 2020's NCF-vs-MF comparison on ML-100K: Popularity, SLIM, iALS, NeuMF and MF on
# `loo` (full ranking) and `loo-sampled99` (the NCF protocol), 3 seeds each, with the values the
# sweeps in conf/sweeps/ chose on validation NDCG@10 (README.md here). Writes
# runs/ncf_vs_mf/<model>-<seed>/results.json (and random811/neumf-<seed>: NeuMF on the per-user
# random split), prints the tables and draws experiments/ncf_vs_mf/ncf_vs_mf.png.
# Usage: LIT_RECS_DATA=../shared/datasets bash experiments/ncf_vs_mf/run.sh
# (the chart needs matplotlib: pip install -e ".[experiments]")
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE="${WANDB_MODE:-offline}"
out=runs/ncf_vs_mf
declare -A args=(
  [popularity]="--model conf/model/popularity.yaml"
  [slim]="--model conf/model/slim.yaml --model.init_args.l1 1.0 --model.init_args.l2 50.0"
  [ials]="--model conf/model/ials.yaml"
  [neumf]="--model conf/model/neumf.yaml"
  [mf]="--model conf/model/mf.yaml --model.init_args.optimizer.init_args.weight_decay 1.0e-5"
)
for model in ${MODELS:-popularity slim ials neumf mf}; do
  for seed in ${SEEDS:-42 43 44}; do
    # shellcheck disable=SC2086
    lit-recs fit --config conf/base.yaml --data conf/data/ml-100k-loo.yaml ${args[$model]} \
      --seed_everything "$seed" --trainer.enable_progress_bar false --trainer.logger false \
      --trainer.default_root_dir "$out/$model-$seed"
  done
done
# NeuMF on random811 too (the third reference figure of issue 6: RecBole 0.773 / 0.279)
for seed in ${RANDOM811_SEEDS:-42 43 44}; do
  lit-recs fit --config conf/base.yaml --data conf/data/ml-100k.yaml --model conf/model/neumf.yaml \
    --seed_everything "$seed" --trainer.enable_progress_bar false --trainer.logger false \
    --trainer.default_root_dir "$out/random811/neumf-$seed"
done
python experiments/ncf_vs_mf/summarize.py "$out" --chart experiments/ncf_vs_mf/ncf_vs_mf.png
