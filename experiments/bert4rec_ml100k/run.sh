#!/usr/bin/env bash
# BERT4Rec on ML-100K, protocol seq-loo, 3 seeds: train with early stopping on validation NDCG@10
# (seen items masked), then test the best checkpoint with seen-item masking on and off.
# Usage: LIT_RECS_DATA=../shared/datasets bash experiments/bert4rec_ml100k/run.sh
# Writes runs/bert4rec_ml100k/s<seed>/results.json (masked test) and .../unmasked/results.json;
# summarize.py prints the README table from them. THREADS=1 sets torch's CPU threads.
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE="${WANDB_MODE:-offline}"
out=runs/bert4rec_ml100k
for seed in ${SEEDS:-42 43 44}; do
  run=$out/s$seed
  lit-recs fit --config conf/base.yaml --data conf/data/ml-100k-seq.yaml \
    --model conf/model/bert4rec.yaml --seed_everything $seed --trainer.max_epochs 400 \
    --trainer.callbacks.patience 20 --trainer.enable_progress_bar false \
    ${THREADS:+--torch_num_threads $THREADS} --trainer.default_root_dir $run
  lit-recs test --config $run/config.yaml --ckpt_path $run/checkpoints/best.ckpt \
    --model.init_args.mask_seen false --trainer.default_root_dir $run/unmasked
done
python experiments/bert4rec_ml100k/summarize.py $out
