#!/bin/bash
# NequIP on the shared split, BUDGET_MIN minutes of training CPU time (PEER_BUDGET_CLOCK=wall: Lightning max_time),
# one thread; package best.ckpt; identical scoring.
# usage: nequip_train.sh ethanol|acac BUDGET_MIN [OUTDIR] [extra hydra overrides, e.g. num_layers=2 l_max=2]
set -euo pipefail
MOL=$1; BUDGET_MIN=$2
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OUT=${3:-$PEERS_WORK/runs/nequip_${MOL}_${BUDGET_MIN}min_$(date -u +%Y%m%dT%H%M%S)}
shift $(( $# < 3 ? $# : 3 ))
V=$PEERS_WORK/nequip/bin
export PYTHONPATH=$SCRIPTS${PYTHONPATH:+:$PYTHONPATH}   # for the peer_timing.EpochTimer callback
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); cd "$OUT"   # absolute, since the run works inside OUT
CLOCK=${PEER_BUDGET_CLOCK:-cpu}
BUDGET_S=$(python3 -c "print(int(round(float('$BUDGET_MIN')*60)))")
# wall cap: the budget itself for clock=wall; 4x the budget (+10 min) as a safety net for clock=cpu
MAXT=$(python3 -c "b=$BUDGET_S; s=b if '$CLOCK'=='wall' else 4*b+600; print('%02d:%02d:%02d:%02d' % (s//86400, s%86400//3600, s%3600//60, s%60))")
T0=$(date +%s.%N)
# the data paths are hydra overrides, so the configs work wherever the data lie
$V/nequip-train -cp "$PEERS_DIR" -cn "nequip_${MOL}.yaml" train_file="$TRAIN" val_file="$VALID" \
  budget_s=$BUDGET_S budget_clock=$CLOCK max_time="'$MAXT'" timing_file="$OUT/timing.json" hydra.run.dir="$OUT" "$@" \
  > train.log 2>&1 || { echo "[nequip] training failed, see $OUT/train.log" >&2; tail -30 train.log >&2; exit 1; }
T1=$(date +%s.%N)
CKPT=$OUT/best.ckpt; [ -f "$CKPT" ] || CKPT=$OUT/last.ckpt
# torch 2.13: `nequip-compile --mode torchscript` is refused (deprecated for torch >= 2.10) and aotinductor
# needs a long C++ build; the packaged model (nequip-package) is scored with NequIPCalculator in eager mode.
$V/nequip-package build "$CKPT" "$OUT/nequip_${MOL}.nequip.zip" > package.log 2>&1 \
  || { echo "[nequip] package failed, see $OUT/package.log" >&2; tail -30 package.log >&2; exit 1; }
$V/python - "$OUT" "$T0" "$T1" "$CKPT" "$BUDGET_MIN" "$*" <<'PY'
import json, sys
out, t0, t1, ckpt, b, ov = sys.argv[1:7]
t = json.load(open(f"{out}/timing.json"))
json.dump({"peer": "nequip", "budget_min": float(b), "train_command_wall_s": float(t1) - float(t0),
           "train_loop_wall_s": t["train_loop_wall_s"], "train_loop_cpu_s": t["train_loop_cpu_s"],
           "budget_clock": t["budget_clock"], "cpu_sec_per_epoch": t["cpu_sec_per_epoch_median_full"], "n_epochs_started": t["n_epochs_started"],
           "n_full_epochs": t["n_full_epochs"], "sec_per_epoch": t["sec_per_epoch_median_full"],
           "hydra_overrides": ov, "scored_checkpoint": ckpt, "threads": 1}, open(f"{out}/run_info.json", "w"), indent=1)
PY
$V/python $SCRIPTS/eval_nequip.py "$OUT/nequip_${MOL}.nequip.zip" "$TEST" "$OUT/test_results.json" --extra "$OUT/run_info.json"
$V/python $SCRIPTS/record_timing.py nequip "$MOL" "$OUT" "$TIMING" || true
echo "[nequip] done: $OUT/test_results.json"
