#!/bin/bash
# L ablation (paper Table 3b), REDUCED to 300 epochs per L (the paper trains 1,000): the
# recipe's model (training/nbody.yaml: c = 16, 2 layers, MLP 32) with L = 2..5, for one seed.
# L = 1 is the recipe run of that seed itself (its best validation within the same epochs).
# Writes runs/nbody_ablation/L<L> (seed 0) or L<L>_seed<S>; on a CPU each L takes
# ~1.5-3 s per epoch (1 thread).
#   SEED=1 LS="2 3" DEVICE=cpu bash scripts/nbody_ablation.sh
# Rerunning continues each L where it stopped (EPOCHS may be raised).
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-300}
SEED=${SEED:-0}
suffix=""
[ "$SEED" != 0 ] && suffix="_seed$SEED"
for L in ${LS:-2 3 4 5}; do
  run=runs/nbody_ablation/L$L$suffix
  resume=""; [ -f "$run/checkpoint.pt" ] && resume=--resume
  OMP_NUM_THREADS=1 ${SINET_TRAIN:-sinet-train} training/nbody.yaml run_dir=$run seed=$SEED \
    model.lmax=$L training.epochs=$EPOCHS training.device=${DEVICE:-cpu} $resume
done
