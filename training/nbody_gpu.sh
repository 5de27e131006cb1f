#!/bin/bash
# N-body runs on one lent GPU (issues #4 and #7), all in one command:
#   bash training/nbody_gpu.sh RUN_DIR MINUTES
# 1. benchmarks/gpu_check.py check: the calculator and the N-body model give the CPU's
#    numbers on CUDA (stops here if not);
# 2. eight trainings side by side on the one GPU, each stopped at the first validation
#    after MINUTES of training (train.max_minutes; --resume continues any of them):
#    - seeds 0, 1, 2 of training/nbody.yaml, resumed from their CPU checkpoints
#      (training/nbody_results/seedN/checkpoint.pt, epoch 30) towards the recipe's 1,000
#      epochs (the checkpoints are no longer in the tree: git history has them, and a
#      seed without one starts from scratch);
#    - the L ablation (Table 3b), L = 2..5, seed 0, from scratch, at most 300 epochs
#      (L = 1 is seed 0 itself);
#    - SiFormer backbone, seed 0, from scratch, edge MLP 16 wide so that its parameter
#      count (13,296) is close to SINet's (14,128);
# 3. inference time per batch of 100 on the GPU (best seed) and benchmarks/gpu_check.py time.
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

train() {  # train OUT_NAME ARGS...
  local name=$1; shift
  OMP_NUM_THREADS=1 $PY -u -m sinet_ase.nbody.train training/nbody.yaml --device "${DEVICE:-cuda}" \
    --max-minutes "$MIN" --out "$RUN/$name" "$@" > "$RUN/$name.out" 2>&1 &
}
for S in 0 1 2; do
  cp -r "training/nbody_results/seed$S" "$RUN/seed$S"
  train "seed$S" --seed $S --resume
done
for L in 2 3 4 5; do
  train "ablation/L$L" --seed 0 --lmax $L --epochs 300
done
train siformer_seed0 --seed 0 --set model.backbone=siformer --set model.num_heads=4 \
  --set model.mlp_hidden=16
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; tail -n 2 "$RUN"/*.out
wait
for f in "$RUN"/*.out "$RUN"/ablation/*.out; do echo "== $f"; tail -n 3 "$f"; done
# inference per batch of 100 on the GPU, each finished seed's best model
for S in 0 1 2; do
  $PY -m sinet_ase.nbody.evaluate "$RUN/seed$S/best.pt" "$SINET_ASE_CACHE/nbody/test.npz" --time \
    --device cuda --json > "$RUN/seed$S/eval_gpu.json" 2>&1; tail -n 1 "$RUN/seed$S/eval_gpu.json"
done
