#!/usr/bin/env bash
# Rendle et al. 2020's NCF-vs-MF comparison on ML-100K: Popularity, SLIM, iALS, NeuMF and MF on
# `loo` (full ranking) and `loo-sampled99` (the NCF protocol), 3 seeds each, with the values the
# sweeps in conf/sweeps/ chose on validation NDCG@10 (README.md here). Writes
# runs/ncf_vs_mf/<model>-<seed>/results.json, prints the table and draws ncf_vs_mf.png.
# Usage: LIT_RECS_DATA=../shared/datasets bash experiments/ncf_vs_mf/run.sh
# (the chart needs matplotlib: pip install -e ".[experiments]")
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE="${WANDB_MODE:-offline}"
out=runs/ncf_vs_mf
declare -A args=(
  [popularity]="--model conf/model/popularity.yaml"
  [slim]="--model conf/model/slim.yaml --model.init_args.l1 ${SLIM_L1:-1.0} --model.init_args.l2 ${SLIM_L2:-50.0}"
  [ials]="--model conf/model/ials.yaml --model.init_args.dim ${IALS_DIM:-128} --model.init_args.alpha0 ${IALS_ALPHA0:-0.1} --model.init_args.reg ${IALS_REG:-0.01}"
  [neumf]="--model conf/model/neumf.yaml ${NEUMF_ARGS:-}"
  [mf]="--model conf/model/mf.yaml --model.init_args.optimizer.init_args.weight_decay ${MF_WD:-1.0e-5} --model.init_args.dim ${MF_DIM:-128}"
)
for model in popularity slim ials neumf mf; do
  for seed in ${SEEDS:-42 43 44}; do
    # shellcheck disable=SC2086
    lit-recs fit --config conf/base.yaml --data conf/data/ml-100k-loo.yaml ${args[$model]} \
      --seed_everything "$seed" --trainer.enable_progress_bar false --trainer.logger false \
      --trainer.default_root_dir "$out/$model-$seed"
  done
done
python experiments/ncf_vs_mf/summarize.py "$out" --chart "$out/ncf_vs_mf.png"
