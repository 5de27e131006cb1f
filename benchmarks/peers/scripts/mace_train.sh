#!/bin/bash
# MACE on the shared split, BUDGET_MIN minutes of training CPU time (PEER_BUDGET_CLOCK=wall: wall clock),
# one thread, then identical scoring.
# usage: mace_train.sh ethanol|acac BUDGET_MIN [OUTDIR]
# env: MACE_SEC_PER_EPOCH (override the measured epoch time used to place the SWA/stage-two start)
set -euo pipefail
MOL=$1; BUDGET_MIN=$2
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OUT=${3:-$PEERS_WORK/runs/mace_${MOL}_${BUDGET_MIN}min_$(date -u +%Y%m%dT%H%M%S)}
V=$PEERS_WORK/mace/bin
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); cd "$OUT"   # absolute, since the run works inside OUT
BUDGET_S=$(python3 -c "print(int(float('$BUDGET_MIN')*60))")
E0S=$($V/python $SCRIPTS/e0s.py "$ISO" mace 2>/dev/null)
# seconds per epoch: env override, else the value measured by the last run on this molecule
# (CPU seconds per epoch when the budget clock is cpu, the default)
CLOCK=${PEER_BUDGET_CLOCK:-cpu}; export PEER_BUDGET_CLOCK=$CLOCK
KEY=$([ "$CLOCK" = cpu ] && echo cpu_sec_per_epoch || echo sec_per_epoch)
SPE=${MACE_SEC_PER_EPOCH:-$(python3 -c "import json;print(json.load(open('$TIMING/mace_$MOL.json'))['$KEY'])" 2>/dev/null || echo "")}
SWA_ARGS=()
if [ -n "$SPE" ]; then
  # MACE's own default is start_swa = 3/4 of the epochs; here 3/4 of the epochs the budget allows
  EST=$(python3 -c "print(int($BUDGET_S/$SPE))")
  START=$(python3 -c "print(max(1,int(0.75*$EST)))")
  if [ "$EST" -ge 4 ]; then SWA_ARGS=(--swa --start_swa="$START"); fi
  echo "[mace] ${SPE} s/epoch ($CLOCK) -> ~$EST epochs in ${BUDGET_S}s; stage two (SWA) from epoch $START" | tee plan.txt
else
  echo "[mace] no measured epoch time: no stage two (SWA)" | tee plan.txt
fi
T0=$(date +%s.%N)
$V/python $SCRIPTS/mace_budget_train.py "$BUDGET_S" "$OUT/timing.json" -- \
  --name="mace_${MOL}" --work_dir="$OUT" --seed=123 \
  --train_file="$TRAIN" --valid_file="$VALID" \
  --energy_key=energy --forces_key=forces \
  --E0s="$E0S" \
  --model=MACE --hidden_irreps='64x0e + 64x1o' --max_L=1 --r_max=5.0 \
  --correlation=3 --num_interactions=2 \
  --batch_size=5 --valid_batch_size=10 \
  --default_dtype=float64 --device=cpu --num_workers=0 \
  --lr=0.01 --amsgrad --ema --ema_decay=0.99 \
  --max_num_epochs=100000 --eval_interval=1 --error_table=TotalMAE \
  "${SWA_ARGS[@]}" --plot=False \
  > train.log 2>&1 || { echo "[mace] training failed, see $OUT/train.log" >&2; tail -20 train.log >&2; exit 1; }
T1=$(date +%s.%N)
MODEL=$OUT/mace_${MOL}_stagetwo.model; [ -f "$MODEL" ] || MODEL=$OUT/mace_${MOL}.model
$V/python - "$OUT" "$T0" "$T1" "$MODEL" "$BUDGET_MIN" "${SWA_ARGS[*]:-}" <<'PY'
import json, sys
out, t0, t1, model, b, swa = sys.argv[1:7]
t = json.load(open(f"{out}/timing.json"))
json.dump({"peer": "mace", "budget_min": float(b), "train_command_wall_s": float(t1) - float(t0),
           "train_loop_wall_s": t["train_loop_wall_s"], "train_loop_cpu_s": t["train_loop_cpu_s"],
           "budget_clock": t["budget_clock"], "cpu_sec_per_epoch": t["cpu_sec_per_epoch_median_full"], "n_epochs_started": t["n_epochs_started"],
           "n_full_epochs": t["n_full_epochs"], "sec_per_epoch": t["sec_per_epoch_median_full"],
           "stage_two": swa, "scored_model": model, "threads": 1}, open(f"{out}/run_info.json", "w"), indent=1)
PY
$V/python $SCRIPTS/eval_mace.py "$MODEL" "$TEST" "$OUT/test_results.json" --extra "$OUT/run_info.json"
$V/python $SCRIPTS/record_timing.py mace "$MOL" "$OUT" "$TIMING" || true
echo "[mace] done: $OUT/test_results.json"
