#!/usr/bin/env bash
# FM and FFM on ML-100K, the three tasks of issue 4, with the configs in conf/ (hyper-parameters
# chosen on validation by tune.py, see README.md here):
#   CTR (PROTOCOLS.md CTR protocol), seeds 42 43 44        -> test AUC / LogLoss
#   rating regression, folds u1..u5 (mku.sh cut of u.data)  -> test RMSE / MAE
#   top-N, `loo` with 4 sampled negatives, seeds 42 43 44   -> full-ranking HR@10 / NDCG@10
# Usage: LIT_RECS_DATA=../shared/datasets bash experiments/fm_ml100k/run.sh [ctr rating topn]
# Writes runs/fm_ml100k/<task>/<model>-<seed or fold>/results.json; summarize.py prints the tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE="${WANDB_MODE:-offline}"
out=runs/fm_ml100k
common=(--trainer.enable_progress_bar false --trainer.logger false)
for task in ${@:-ctr rating topn}; do
  for model in fm ffm; do
    case $task in
      ctr)    runs="42 43 44"; data=(--config conf/trainer/ctr.yaml --data conf/data/ml-100k-ctr.yaml) ;;
      rating) runs="1 2 3 4 5"; data=(--config conf/trainer/rating.yaml --data conf/data/ml-100k-rating.yaml
                --model.init_args.l2 "$([ $model = fm ] && echo 0.1 || echo 0.03)") ;;  # rating validation
      topn)   runs="42 43 44"; data=(--data conf/data/ml-100k-fm-topn.yaml --model.init_args.l2 0) ;;
    esac
    for r in $runs; do
      if [ "$task" = rating ]; then which=(--data.init_args.fold "$r"); else which=(--seed_everything "$r"); fi
      lit-recs fit --config conf/base.yaml --model "conf/model/$model.yaml" "${data[@]}" \
        "${which[@]}" "${common[@]}" --trainer.default_root_dir "$out/$task/$model-$r"
    done
  done
done
python experiments/fm_ml100k/summarize.py $out
