"""CPU seconds per training epoch with and without the fused edge kernels, on a recipe's data.

Builds the recipe's trainer (its model, data and loss; a plain cosine schedule, since the
timing does not depend on it), keeps the first ``--frames`` training structures, and runs
epochs alternately with the kernels off and on (``--repeats`` of each), timing each by the
process's CPU time. The two settings train the same model one after the other, so the losses
printed differ by the epochs already done; the equality of the two paths is tested in
``tests/test_train.py``. Run on an idle machine, one thread, from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/bench_fused_training.py training/dft/mlearn_li_c64_one_stage.yaml

Writes ``--out`` (JSON) with every epoch's CPU seconds and the machine state.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_md import allocator_name, git_commit, machine_state  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", help="a training YAML")
    ap.add_argument("--frames", type=int, default=40, help="training structures per epoch")
    ap.add_argument("--repeats", type=int, default=3, help="epochs of each setting")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/fused_training.json")
    args = ap.parse_args()

    from sinet_ase.ops import fused
    from sinet_ase.train.config import TrainConfig
    from sinet_ase.train.trainer import Trainer

    raw = yaml.safe_load(open(args.recipe))
    run_dir = tempfile.mkdtemp(prefix="bench_fused_training_")
    raw["run_dir"] = run_dir
    raw["training"].update(scheduler="cosine", max_minutes=None, epochs=1000, num_threads=args.threads)
    if fused.kernels(build=True) is None:
        raise SystemExit(f"the fused kernels cannot be built here: {fused.build_error()}")
    try:
        trainer = Trainer(TrainConfig.from_dict(raw), quiet=True)
        trainer.graphs["train"] = trainer.graphs["train"][: args.frames]
        seconds = {"unfused": [], "fused": []}
        before = machine_state()
        for _ in range(args.repeats):
            for name, on in (("unfused", False), ("fused", True)):
                fused.set_fused(trainer.model, on)
                start = time.process_time()
                loss = trainer.train_epoch()
                seconds[name].append(time.process_time() - start)
                print(f"{name:8s} {seconds[name][-1]:.2f} CPU s  (loss {loss:.5f})", flush=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    print(
        f"median CPU s per epoch of {args.frames} structures: {medians}; ratio {medians['unfused'] / medians['fused']:.2f}x"
    )
    record = {
        "recipe": args.recipe,
        "frames": args.frames,
        "threads": args.threads,
        "dtype": raw["training"].get("dtype", "float32"),
        "cpu_seconds_per_epoch": seconds,
        "median": medians,
        "ratio_unfused_over_fused": medians["unfused"] / medians["fused"],
        "command": " ".join(sys.argv),
        "commit": git_commit(),
        "allocator": allocator_name(),
        "torch": torch.__version__,
        "machine_before": before,
        "machine_after": machine_state(),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(record, handle, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
