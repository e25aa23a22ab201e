#!/usr/bin/env bash
# Rendle et al. 2020's NCF-vs-MF comparison on ML-100K: Popularity, SLIM, iALS, NeuMF and MF on
# `loo` (full ranking) and `loo-sampled99` (the NCF protocol), 3 seeds each, with the values the
# sweeps in conf/sweeps/ chose on validation NDCG@10 (README.md here). NeuMF is the paper's: GMF
# and MLP trained first (gmf-<seed>, mlp-<seed>, same sizes and decay), NeuMF started from both.
# Writes runs/ncf_vs_mf/<model>-<seed>/results.json (and random811/*: NeuMF on the per-user random
# split), prints the tables and draws experiments/ncf_vs_mf/ncf_vs_mf.png.
# Usage: LIT_RECS_DATA=../shared/datasets bash experiments/ncf_vs_mf/run.sh
#   MODELS="gmf mlp neumf" SEEDS=42 ... runs a part; THREADS=1 sets torch's CPU threads.
# (the chart needs matplotlib: pip install -e ".[experiments]")
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE="${WANDB_MODE:-offline}"
out=runs/ncf_vs_mf
decay="--model.init_args.optimizer.init_args.weight_decay 1.0e-5"
# pre-training waits 20 epochs for an improvement (10 elsewhere): with 10, GMF on random811 seed 44
# stopped at epoch 20 on the popularity plateau (validation NDCG@10 0.126; the other seeds 0.25)
towers="--trainer.callbacks.patience 20"
# SEED and OUT are replaced per run: NeuMF reads the towers trained with the same seed and split
declare -A args=(
  [popularity]="--model conf/model/popularity.yaml"
  [slim]="--model conf/model/slim.yaml --model.init_args.l1 1.0 --model.init_args.l2 50.0"
  [ials]="--model conf/model/ials.yaml"
  [gmf]="--model conf/model/gmf.yaml --model.init_args.gmf_dim 16 $decay $towers"
  [mlp]="--model conf/model/mlp.yaml $decay $towers"
  [neumf]="--model conf/model/neumf.yaml --model.init_args.pretrained_gmf OUT/gmf-SEED/checkpoints/best.ckpt
           --model.init_args.pretrained_mlp OUT/mlp-SEED/checkpoints/best.ckpt"
  [mf]="--model conf/model/mf.yaml $decay"
)
fit() {  # fit <data config> <model> <seed> <run folder>
  local model_args=${args[$2]//SEED/$3}
  # shellcheck disable=SC2086
  lit-recs fit --config conf/base.yaml --data "$1" ${model_args//OUT/$(dirname "$4")} \
    --seed_everything "$3" --trainer.enable_progress_bar false --trainer.logger false \
    ${THREADS:+--torch_num_threads $THREADS} --trainer.default_root_dir "$4"
}
for model in ${MODELS:-popularity slim ials gmf mlp neumf mf}; do
  for seed in ${SEEDS:-42 43 44}; do
    fit conf/data/ml-100k-loo.yaml "$model" "$seed" "$out/$model-$seed"
  done
done
# NeuMF on random811 too (the third reference figure of issue 6: RecBole 0.773 / 0.279)
for model in ${RANDOM811_MODELS:-gmf mlp neumf}; do
  for seed in ${RANDOM811_SEEDS:-42 43 44}; do
    fit conf/data/ml-100k.yaml "$model" "$seed" "$out/random811/$model-$seed"
  done
done
python experiments/ncf_vs_mf/summarize.py "$out" --chart experiments/ncf_vs_mf/ncf_vs_mf.png
