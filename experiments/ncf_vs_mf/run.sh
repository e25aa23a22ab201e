#!/usr/bin/env bash
# Rendle et al. 2020's NCF-vs-MF comparison on ML-100K: Popularity, SLIM, iALS, NeuMF and MF on
# `loo` (full ranking) and `loo-sampled99` (the NCF protocol), 3 seeds each. Each protocol's columns
# come from runs tuned and checkpointed on that protocol's validation NDCG@10 (README.md here):
#   full       runs/ncf_vs_mf/<model>-<seed>            the values of conf/sweeps/*_loo.yaml
#   sampled99  runs/ncf_vs_mf/sampled99/<model>-<seed>  conf/sweeps/*_loo_sampled99.yaml, and
#              checkpoints and early stopping on the sampled validation (conf/trainer/sampled99.yaml)
# NeuMF is the paper's: GMF and MLP trained first (gmf-<seed>, mlp-<seed>, same sizes and decay),
# NeuMF started from both. Also NeuMF on `random811` (random811/*), then the tables and the chart
# experiments/ncf_vs_mf/ncf_vs_mf.png.
# Usage: LIT_RECS_DATA=../shared/datasets bash experiments/ncf_vs_mf/run.sh
#   MODELS="gmf mlp neumf" SEEDS=42 SELECTIONS=sampled99 RANDOM811_MODELS="" ... runs a part;
#   THREADS=1 sets torch's CPU threads.
# (the chart needs matplotlib: pip install -e ".[experiments]")
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE="${WANDB_MODE:-offline}"
out=runs/ncf_vs_mf
decay="--model.init_args.optimizer.init_args.weight_decay 1.0e-5"
# pre-training waits 20 epochs for an improvement (10 elsewhere): with 10, GMF on random811 seed 44
# stopped at epoch 20 on the popularity plateau (validation NDCG@10 0.126; the other seeds 0.25)
towers="--trainer.callbacks.patience 20"
neumf="--model conf/model/neumf.yaml --model.init_args.pretrained_gmf OUT/gmf-SEED/checkpoints/best.ckpt
       --model.init_args.pretrained_mlp OUT/mlp-SEED/checkpoints/best.ckpt"
# SEED and OUT are replaced per run: NeuMF reads the towers trained with the same seed, split and
# selection
declare -A full=(  # chosen on validation NDCG@10 of the full ranking
  [popularity]="--model conf/model/popularity.yaml"
  [slim]="--model conf/model/slim.yaml --model.init_args.l1 1.0 --model.init_args.l2 50.0"
  [ials]="--model conf/model/ials.yaml"
  [gmf]="--model conf/model/gmf.yaml --model.init_args.gmf_dim 16 $decay $towers"
  [mlp]="--model conf/model/mlp.yaml $decay $towers"
  [neumf]="$neumf"
  [mf]="--model conf/model/mf.yaml $decay"
)
no_decay="--model.init_args.optimizer.init_args.weight_decay 0.0"
declare -A sampled=(  # chosen on validation NDCG@10 of the sampled protocol
  [popularity]="--model conf/model/popularity.yaml"
  [slim]="--model conf/model/slim.yaml --model.init_args.l1 1.0 --model.init_args.l2 184.8"
  [ials]="--model conf/model/ials.yaml --model.init_args.dim 64 --model.init_args.alpha0 0.1
          --model.init_args.reg 0.01"
  [gmf]="--model conf/model/gmf.yaml --model.init_args.gmf_dim 64 $no_decay $towers"
  [mlp]="--model conf/model/mlp.yaml $no_decay $towers"
  [neumf]="$neumf --model.init_args.gmf_dim 64 $no_decay"
  [mf]="--model conf/model/mf.yaml $decay"
)
fit() {  # fit <data config> <model arguments> <seed> <run folder> [<trainer config>]
  local model_args=${2//SEED/$3}
  # shellcheck disable=SC2086
  lit-recs fit --config conf/base.yaml ${5:+--config $5} --data "$1" \
    ${model_args//OUT/$(dirname "$4")} \
    --seed_everything "$3" --trainer.enable_progress_bar false --trainer.logger false \
    ${THREADS:+--torch_num_threads $THREADS} --trainer.default_root_dir "$4"
}
for selection in ${SELECTIONS-full sampled99}; do
  for model in ${MODELS-popularity slim ials gmf mlp neumf mf}; do
    for seed in ${SEEDS:-42 43 44}; do
      if [[ $selection == full ]]; then
        fit conf/data/ml-100k-loo.yaml "${full[$model]}" "$seed" "$out/$model-$seed"
      else
        fit conf/data/ml-100k-loo.yaml "${sampled[$model]}" "$seed" "$out/sampled99/$model-$seed" \
          conf/trainer/sampled99.yaml
      fi
    done
  done
done
# NeuMF on random811 too (the third reference figure of issue 6: RecBole 0.773 / 0.279)
for model in ${RANDOM811_MODELS-gmf mlp neumf}; do
  for seed in ${RANDOM811_SEEDS:-42 43 44}; do
    fit conf/data/ml-100k.yaml "${full[$model]}" "$seed" "$out/random811/$model-$seed"
  done
done
python experiments/ncf_vs_mf/summarize.py "$out" --chart experiments/ncf_vs_mf/ncf_vs_mf.png
