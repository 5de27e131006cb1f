#!/bin/bash
# Table 3a shape: QM9 gap with L = 1..4 at a REDUCED budget sized for the 2-core CPU
# (training/qm9_gap_budget.yaml with 3,000 training molecules and 10 epochs instead of
# 10,000 and 20; everything else, the 1,000 validation molecules and the full
# 10,831-molecule test split included, as in the budget recipe). One thread per run;
# runs/qm9_gap_ablation/L<L>/summary.json holds each test MAE.
#   bash scripts/qm9_ablation_L.sh [L ...]        (default: 1 2 3 4, one after the other)
# --resume makes a rerun continue each L where it stopped.
cd "$(dirname "$0")/.."
for L in ${@:-1 2 3 4}; do
  resume=""
  [ -f "runs/qm9_gap_ablation/L$L/checkpoint.pt" ] && resume="--resume"
  OMP_NUM_THREADS=1 ${SINET_TRAIN:-sinet-train} training/qm9_gap_budget.yaml training.num_threads=1 \
    training.epochs=10 training.max_minutes=null qm9.train_subset=3000 model.lmax=$L \
    run_dir=runs/qm9_gap_ablation/L$L --quiet $resume
done
