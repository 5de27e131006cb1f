#!/bin/bash
# usage: bash benchmarks/peers/run_peer.sh mace|nequip ethanol|acac BUDGET_MIN [OUTDIR] [nequip hydra overrides...]
# Trains the peer for BUDGET_MIN minutes of training-loop CPU time (PEER_BUDGET_CLOCK=wall: wall time)
# on ONE thread, then scores its best model on the test set with scripts/eval_common.py
# -> OUTDIR/test_results.json. OUTDIR defaults to $PEERS_WORK/runs/<peer>_<mol>_<B>min_<UTC time>.
# Needs bash setup.sh first (venvs and split files under PEERS_WORK, default /tmp/sinet-peers).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER=${1:?mace|nequip}; MOL=${2:?ethanol|acac}; B=${3:?budget minutes}; shift 3
case "$PEER" in
  mace)   exec bash "$HERE/scripts/mace_train.sh" "$MOL" "$B" "$@" ;;
  nequip) exec bash "$HERE/scripts/nequip_train.sh" "$MOL" "$B" "$@" ;;
  *) echo "unknown peer $PEER" >&2; exit 2 ;;
esac
