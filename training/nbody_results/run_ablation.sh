#!/bin/bash
# L ablation (paper Table 3b), REDUCED for the shared 2-core CPU: 10 epochs per L
# (validation every 5), seed 0, otherwise the recipe (the --set values repeat the
# recipe's model size, c = 16, 2 layers, MLP 32).  EPOCHS may be raised and the
# script rerun: --resume extends each run exactly.  (Run 2026-11-27: L = 1..4 done;
# L = 5 stopped before its first validation when the CPU was withdrawn.)
cd "$(dirname "$0")/../.."
EPOCHS=${EPOCHS:-10}
for L in 1 2 3 4 5; do
  OMP_NUM_THREADS=1 ${PYTHON:-python} -m sinet_ase.nbody.train training/nbody.yaml \
    --out training/nbody_results/ablation/L$L --seed 0 --lmax $L --epochs $EPOCHS --resume \
    --set model.channels=16 --set model.num_layers=2 --set model.mlp_hidden=32 --set model.radial_hidden=16
done
