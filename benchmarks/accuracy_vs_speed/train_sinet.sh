#!/usr/bin/env bash
# SINet sizes for the accuracy-against-speed figure: rMD17 ethanol, the recipe
# training/dft/rmd17_ethanol.yaml with a budget of B CPU minutes each (cosine_cpu, 1 thread).
#   bash benchmarks/accuracy_vs_speed/train_sinet.sh 12 [runs/sbs]     (from the project root)
# Runs the sizes one after another; set PARALLEL=1 to start them all at once (each has its
# own CPU-time budget, so the result does not depend on how many run together).
set -euo pipefail
B=${1:?budget in CPU minutes}
OUT=${2:-runs/sbs}
SIZES=${SIZES:-"1:32 2:32 3:32 2:64"}
for size in $SIZES; do
  L=${size%%:*}; C=${size##*:}
  cmd=(sinet-train training/dft/rmd17_ethanol.yaml "run_dir=$OUT/sinet-l$L-c$C"
       "model.lmax=$L" "model.channels=$C" "model.radial_hidden=$C"
       "training.max_minutes=$B" --quiet)
  if [ "${PARALLEL:-0}" = 1 ]; then
    OMP_NUM_THREADS=1 "${cmd[@]}" > "$OUT-sinet-l$L-c$C.log" 2>&1 &
  else
    OMP_NUM_THREADS=1 "${cmd[@]}"
  fi
done
wait
