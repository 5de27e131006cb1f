#!/usr/bin/env bash
# MD time per step of the models in the accuracy comparison, all in one run on an idle machine
# (bench_md.py protocol: ASE velocity Verlet, median of the timed steps, 2 threads, jemalloc).
#   bash benchmarks/accuracy_vs_speed/time_models.sh [RUNS=runs] [OUT=benchmarks/results]
# SINet: the trained model files (eager, and the shipped sizes compiled too); peers: random-weight
# models of the trained sizes (speed does not depend on the weights) and MACE at the size of its
# paper's rMD17 / AcAc models. Peer venvs: benchmarks/peers/setup.sh (PEERS_WORK).
set -euo pipefail
RUNS=${1:-runs}
OUT=${2:-benchmarks/results}
PEERS_WORK=${PEERS_WORK:-/tmp/sinet-peers}
export MACE_PYTHON=${MACE_PYTHON:-$PEERS_WORK/mace/bin/python}
export NEQUIP_PYTHON=${NEQUIP_PYTHON:-$PEERS_WORK/nequip/bin/python}
common=(--dtypes float64 float32 --allocators jemalloc --steps 40 --wait-idle 120 --out "$OUT")
sinet=()
for run in "$RUNS"/sbs/sinet-*; do sinet+=("file-$run/best_model.pt"); done
python benchmarks/bench_md.py --systems ethanol_9 --tag _dft_ethanol "${common[@]}" --models \
  "file-$RUNS/rmd17_ethanol/best_model.pt" "file-c-$RUNS/rmd17_ethanol/best_model.pt" "${sinet[@]}" \
  mace-l1 mace-paper nequip-t3l1c32
python benchmarks/bench_md.py --systems acac_15 --tag _dft_acac "${common[@]}" --models \
  "file-$RUNS/acac/best_model.pt" "file-c-$RUNS/acac/best_model.pt" mace-paper
