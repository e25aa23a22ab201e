#!/usr/bin/env bash
# Two-tower / DSSM on ML-100K (issue 5), with the configs in conf/ (chosen on validation, see
# README.md here); seeds 42 43 44 for every row:
#   main    : in-batch softmax + logQ over feature towers, protocols random811 and loo; on loo also
#             with the mean of the last 20 items' vectors in the user tower
#   losses  : the losses / negatives / history on the same tower, random811 (the in-batch softmax +
#             logQ row is main's random811)
#   encoders: GRU and transformer history encoders, loo (seed 42 only: ~1 min per epoch)
#   ctr     : DSSM as a classifier, CTR protocol (PROTOCOLS.md)
# Usage: LIT_RECS_DATA=../shared/datasets bash experiments/two_tower_ml100k/run.sh [main losses encoders ctr]
# Writes runs/two_tower_ml100k/<section>/<variant>-<seed>/results.json; summarize.py prints tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE="${WANDB_MODE:-offline}"
out=runs/two_tower_ml100k
seeds="${SEEDS:-42 43 44}"
common=(--config conf/base.yaml --trainer.enable_progress_bar false --trainer.logger false
        --torch_num_threads 1)  # one thread per run: two runs side by side on 2 cores
tower=(--data conf/data/ml-100k-two-tower.yaml --model conf/model/two_tower.yaml)
sampled=(--data.init_args.num_negatives 4)  # a pairwise loss over 4 sampled negatives per row
history=(--data.init_args.history_length 20 --model.init_args.tower.history)
declare -A variant=(
  [in_batch]="--model.init_args.loss.init_args.logq_correction false"
  [in_batch_logq_mixed]="--data.init_args.num_negatives 1"
  [sampled_softmax]="${sampled[*]} --model.init_args.loss lit_recs.losses.sampled_softmax"
  [bce]="${sampled[*]} --model.init_args.loss lit_recs.losses.bce"
  [bpr]="${sampled[*]} --model.init_args.loss lit_recs.losses.bpr"
  [hinge]="${sampled[*]} --model.init_args.loss lit_recs.losses.hinge"
  [bpr_hard]="${sampled[*]} --model.init_args.loss lit_recs.losses.bpr --data.init_args.negative_distribution hard"
  [history_mean]="--data.init_args.history_length 20 --model.init_args.tower.history mean"
  [ids_only]="--data.init_args.categorical [user_id,item_id] --data.init_args.multi_hot [] --data.init_args.text []"
)
fit() {  # section name seed args...
  local dir="$out/$1/$2-$3" seed="$3"; shift 3
  [ -f "$dir/results.json" ] && return 0  # already done (delete the folder to rerun)
  lit-recs fit "${common[@]}" "$@" --seed_everything "$seed" --trainer.default_root_dir "$dir"
}
for section in ${@:-main losses encoders ctr}; do
  for seed in $seeds; do
    case $section in
      main)
        fit main random811 "$seed" "${tower[@]}"
        fit main loo "$seed" "${tower[@]}" --data.init_args.split loo
        fit main loo_history_mean "$seed" "${tower[@]}" --data.init_args.split loo "${history[@]}" mean ;;
      losses)
        for name in "${!variant[@]}"; do
          # shellcheck disable=SC2086  # the variant's arguments are words
          fit losses "$name" "$seed" "${tower[@]}" ${variant[$name]}
        done ;;
      encoders)
        [ "$seed" = 42 ] || continue
        for enc in gru transformer; do
          fit encoders "loo_history_$enc" "$seed" "${tower[@]}" --data.init_args.split loo \
            "${history[@]}" "$enc"
        done ;;
      ctr)
        fit ctr dssm "$seed" --config conf/trainer/ctr.yaml --data conf/data/ml-100k-dssm-ctr.yaml \
          --model conf/model/dssm.yaml ;;
    esac
  done
done
python experiments/two_tower_ml100k/summarize.py $out
