#!/bin/bash
# L ablation (paper Table 3b), REDUCED to 300 epochs per L (the paper trains 1,000): seed 0,
# the recipe's model (training/nbody.yaml: c = 16, 2 layers, MLP 32) with L = 2..5.
# L = 1 is the seed-0 recipe run itself: summarize.py takes its best validation within
# the same 300 epochs.  Run 2026-11-27 on one lent H100 by training/nbody_gpu.sh (same
# commands, --device cuda); on a CPU each L takes ~1.5-3 s per epoch (1 thread).
# Seeds 1 and 2 (fifth session, on the 2-core CPU): SEED=1 LS="2 3" bash run_ablation.sh writes
# ablation/L<L>_seed1; L = 1 is again the recipe run of that seed.
# --resume: rerunning continues each L where it stopped (EPOCHS may be raised).
cd "$(dirname "$0")/../.."
EPOCHS=${EPOCHS:-300}
SEED=${SEED:-0}
suffix=""
[ "$SEED" != 0 ] && suffix="_seed$SEED"
for L in ${LS:-2 3 4 5}; do
  OMP_NUM_THREADS=1 ${PYTHON:-python} -m sinet_ase.nbody.train training/nbody.yaml \
    --out training/nbody_results/ablation/L$L$suffix --seed $SEED --lmax $L --epochs $EPOCHS --resume \
    --device "${DEVICE:-auto}"
done
