#!/bin/bash
# Table 3a question at the budget setting, at EQUAL WALL TIME: QM9 gap with L = 1..4,
# training/qm9_gap_budget.yaml unchanged (10,000 training molecules, 1,000 validation
# molecules, the full 10,831-molecule test split, cosine schedule) except that each L
# gets as many epochs as fit in about 20 minutes on one core of the 2-core CPU with a
# second training on the other core (measured that way on 2026-11-27: 97 / 141 / 186 /
# 297 s per epoch for L = 1 / 2 / 3 / 4), so the cosine schedule ends within the budget;
# max_minutes=40 is a safety stop.
# One thread per run; runs/qm9_gap_ablation_time/L<L>/summary.json holds each test MAE.
#   bash scripts/qm9_ablation_L_equal_time.sh [L ...]   (default: 1 2 3 4, one after the other)
# --resume makes a rerun continue each L where it stopped.
cd "$(dirname "$0")/.."
declare -A EPOCHS=([1]=12 [2]=8 [3]=5 [4]=4)
for L in ${@:-1 2 3 4}; do
  resume=""
  [ -f "runs/qm9_gap_ablation_time/L$L/checkpoint.pt" ] && resume="--resume"
  OMP_NUM_THREADS=1 ${SINET_TRAIN:-sinet-train} training/qm9_gap_budget.yaml training.num_threads=1 \
    training.epochs=${EPOCHS[$L]} training.max_minutes=40 model.lmax=$L \
    run_dir=runs/qm9_gap_ablation_time/L$L --quiet $resume
done
