#!/bin/bash
# N-body runs on one lent GPU (issues #4 and #7), all in one command:
#   bash training/nbody_gpu.sh RUN_DIR MINUTES
# 1. benchmarks/gpu_check.py check: the calculator and the N-body model give the CPU's
#    numbers on CUDA (stops here if not);
# 2. eight trainings side by side on the one GPU, each through `sinet-train` and stopped at the
#    first validation after MINUTES of training (training.max_minutes; `--resume` continues
#    any of them):
#    - seeds 0, 1, 2 of training/nbody.yaml (the recipe's 1,000 epochs);
#    - the L ablation (Table 3b), L = 2..5, seed 0, at most 300 epochs (L = 1 is seed 0 itself);
#    - SiFormer backbone, seed 0, edge MLP 16 wide so that its parameter count (13,296) is
#      close to SINet's (14,128);
# 3. inference time per batch of 100 on the GPU (each seed's best model, `sinet-eval --time`)
#    and benchmarks/gpu_check.py time.
# The dataset is read from $SINET_ASE_CACHE/nbody (made by sinet_ase.nbody.dataset).
set -u
cd "$(dirname "$0")/.."
RUN=${1:-runs/nbody_gpu}
MIN=${2:-6}
PY=${PYTHON:-python3}
mkdir -p "$RUN/ablation"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv
$PY benchmarks/gpu_check.py check --out "$RUN/gpu_check.json" > "$RUN/gpu_check.out" 2>&1
status=$?
tail -n 25 "$RUN/gpu_check.out"
[ $status -eq 0 ] || { echo "gpu_check failed: not starting the trainings"; exit 1; }

train() {  # train RUN_NAME KEY=VALUE...: one sinet-train run in $RUN/RUN_NAME
  local name=$1; shift
  OMP_NUM_THREADS=1 sinet-train training/nbody.yaml run_dir="$RUN/$name" \
    training.device="${DEVICE:-cuda}" training.max_minutes="$MIN" "$@" > "$RUN/$name.out" 2>&1 &
}
for S in 0 1 2; do
  train "seed$S" seed=$S
done
for L in 2 3 4 5; do
  train "ablation/L$L" seed=0 model.lmax=$L training.epochs=300
done
train siformer_seed0 seed=0 model.backbone=siformer model.num_heads=4 model.mlp_hidden=16
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; tail -n 2 "$RUN"/*.out
wait
for f in "$RUN"/*.out "$RUN"/ablation/*.out; do echo "== $f"; tail -n 3 "$f"; done
# inference per batch of 100 on the GPU, each finished seed's best model
for S in 0 1 2; do
  sinet-eval "$RUN/seed$S/best_model.pt" "$SINET_ASE_CACHE/nbody/test.npz" --time \
    --device cuda --json "$RUN/seed$S/eval_gpu.json" > "$RUN/seed$S/eval_gpu.out" 2>&1; tail -n 3 "$RUN/seed$S/eval_gpu.out"
done
