#!/usr/bin/env bash
# MD time per step of every shipped DFT potential on its own start structure, eager and
# compiled, float64 and float32, in one run on an idle machine (bench_md.py protocol: ASE
# velocity Verlet, median of the timed steps, 2 threads, jemalloc).
#   bash benchmarks/accuracy_vs_speed/time_shipped.sh [OUT=benchmarks/results]
# Writes OUT/md_sinet_shipped_<potential>.json, one file per potential. The molecules' files
# also time MACE at the size of its paper's rMD17 / AcAc models (random weights; MACE_PYTHON,
# as in time_models.sh), so that the speed ratio of each shipped molecule potential is same-run.
set -euo pipefail
OUT=${1:-benchmarks/results}
POT=sinet_ase/potentials
export MACE_PYTHON=${MACE_PYTHON:-${PEERS_WORK:-/tmp/sinet-peers}/mace/bin/python}
common=(--dtypes float64 float32 --allocators jemalloc --steps 40 --wait-idle 120 --out "$OUT")
while read -r name system peers; do
  # shellcheck disable=SC2086  # peers: zero or more model names
  python benchmarks/bench_md.py --systems "$system" --tag "_shipped_$name" "${common[@]}" \
    --models "file-$POT/$name.pt" "file-c-$POT/$name.pt" $peers
done <<'LIST'
sinet-rmd17-ethanol ethanol_9 mace-paper
sinet-acac acac_15 mace-paper
sinet-rmd17-aspirin aspirin_21 mace-paper
sinet-mlearn-si si_64
sinet-mlearn-ge ge_64
sinet-mlearn-li li_54
sinet-mlearn-mo mo_54
LIST
