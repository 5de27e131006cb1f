"""Fine-tuning learning curve: the shipped xTB potential fine-tuned on N DFT frames vs from scratch.

    OMP_NUM_THREADS=1 python benchmarks/finetune_learning_curve.py             # 8 runs of --minutes (0.25) CPU minutes
    OMP_NUM_THREADS=1 python benchmarks/finetune_learning_curve.py --sizes 25 100 --minutes 1

Data: revised-MD17 ethanol (PBE/def2-SVP) from ``../shared/data/rmd17_ethanol`` (read in
place, never copied into the repository; the subsets below are written under ``--out``).
``train.xyz`` (1,000 frames) is shuffled once (seed 0): the first 50 frames validate every
run (early stopping picks the best epoch), and the training sets are the first N of the other
950, so each set contains the smaller ones. The test set is every ``--test-stride``-th frame
of ``test_MD.xyz`` (200 of 1,000 by default), disjoint from ``train.xyz``.

For each N two runs get the same budget (``training.max_minutes`` CPU minutes of the
process, ``scheduler: cosine_cpu``, one thread) and the same loss (the recipe
``training/dft/rmd17_ethanol.yaml``: forces weight 100, energy weight 1, raised to 1000 for
the last quarter; batch 5; float32):

* ``finetune``: ``model.init_from: sinet-xtb-md17`` (GFN2-xTB on ten molecules; its
  architecture: lmax 2, 32 channels, 2 layers), lr 0.002 without warm-up (the recipe of the
  shipped potential's own second stage, ``training/xtb_md17_stage2.yaml``);
* ``scratch``: the same architecture from random weights, lr 0.005 with 2 warm-up epochs
  (the rMD17 recipe).

The E0s are fitted on each training set in both (``atomic_energies: fit``). Each best model
is scored on the test frames with ``sinet_ase.predict`` (float64): force MAE per
component (meV/Å) and energy MAE per molecule (meV). Writes ``<out>/finetune_curve.json``
and the figure ``--figure``.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rmd17_ethanol"
XTB_ARCHITECTURE = dict(cutoff=5.0, lmax=2, channels=32, num_layers=2, num_radial=8, radial_hidden=32, mlp_hidden=64)

CONFIG = """\
# written by benchmarks/finetune_learning_curve.py
run_dir: {run_dir}
seed: 0
data:
  train: [{train}]
  valid: [{valid}]
model: {model}
training:
  epochs: 100000
  max_minutes: {minutes}
  scheduler: cosine_cpu
  num_threads: 1
  batch_size: 5
  valid_batch_size: 50
  lr: {lr}
  warmup_epochs: {warmup}
  min_lr: 0.00001
  ema_decay: 0.99
  energy_weight: 1.0
  forces_weight: 100.0
  stage2_start: 0.75
  stage2_energy_weight: 1000.0
  grad_clip: 10.0
  patience: 1000
  dtype: float32
"""

MODES = {
    "finetune": dict(model="{init_from: sinet-xtb-md17}", lr=0.002, warmup=0),
    "scratch": dict(model=json.dumps(XTB_ARCHITECTURE), lr=0.005, warmup=2),
}


def write_subsets(out: Path, sizes, seed: int = 0):
    """``valid.xyz`` (50 frames) and ``train_<N>.xyz`` (nested) under ``out/data``."""
    import ase.io

    frames = ase.io.read(DATA / "train.xyz", ":")
    order = np.random.default_rng(seed).permutation(len(frames))
    valid, pool = order[:50], order[50:]
    if max(sizes) > len(pool):
        raise ValueError(f"at most {len(pool)} training frames (1,000 minus 50 validation)")
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    ase.io.write(data / "valid.xyz", [frames[i] for i in valid], format="extxyz")
    for n in sizes:
        ase.io.write(data / f"train_{n}.xyz", [frames[i] for i in pool[:n]], format="extxyz")
    return data


def run(out: Path, data: Path, n: int, mode: str, minutes: float) -> Path:
    run_dir = out / f"{mode}_{n}"
    if (run_dir / "summary.json").exists():
        return run_dir  # done before: rerunning the script only scores it
    config = out / f"{mode}_{n}.yaml"
    config.write_text(
        CONFIG.format(
            run_dir=run_dir, train=data / f"train_{n}.xyz", valid=data / "valid.xyz", minutes=minutes, **MODES[mode]
        )
    )
    resume = ["--resume"] if (run_dir / "checkpoint.pt").exists() else []
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sinet_ase.cli import train_main; sys.exit(train_main())",
            str(config),
            "--quiet",
            *resume,
        ],
        check=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        cwd=ROOT,
    )
    return run_dir


def score(model_file: Path, frames) -> dict:
    from sinet_ase import predict

    pred = predict(str(model_file), frames, batch_size=50, dtype="float64")
    f_err = np.concatenate([(p - f.get_forces()).ravel() for p, f in zip(pred["forces"], frames)])
    e_err = pred["energy"] - np.array([f.get_potential_energy() for f in frames])
    return {
        "force_mae_meV_per_A": 1000 * float(np.abs(f_err).mean()),
        "force_rmse_meV_per_A": 1000 * float(np.sqrt((f_err**2).mean())),
        "energy_mae_meV": 1000 * float(np.abs(e_err).mean()),
    }


def run_record(run_dir: Path) -> dict:
    """Epochs and CPU seconds of a run: from its summary, or from the checkpoint of a run
    that was stopped before its budget ended (``finished: False``)."""
    summary = run_dir / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        return {
            "epochs": s["epochs_done"],
            "best_epoch": s["best"]["epoch"],
            "train_cpu_seconds": s["train_cpu_seconds"],
            "finished": True,
        }
    import torch

    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {
        "epochs": state["epoch"],
        "best_epoch": state["best"]["epoch"],
        "train_cpu_seconds": state["cpu_elapsed"],
        "finished": False,
    }


def plot(results, figure: Path, minutes: float, n_test: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for mode, style in (("finetune", "o-"), ("scratch", "s--")):
        rows = sorted((r["n_train"], r["force_mae_meV_per_A"]) for r in results if r["mode"] == mode)
        if rows:
            label = "fine-tuned from sinet-xtb-md17" if mode == "finetune" else "from scratch"
            ax.plot(*zip(*rows), style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("DFT training frames N (rMD17 ethanol)")
    ax.set_ylabel(f"force MAE on {n_test} test_MD frames (meV/Å)")
    ax.set_title(f"same architecture, {minutes:g} CPU min per run (1 thread)", fontsize=10)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)


def main(argv=None) -> int:
    import ase.io

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo_finetune"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 400, 950])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--minutes", type=float, default=0.25, help="CPU minutes per run")
    parser.add_argument(
        "--score-only", action="store_true", help="train nothing: score the runs under --out that have a best model"
    )
    parser.add_argument("--test-stride", type=int, default=5)
    parser.add_argument("--figure", type=Path, default=ROOT / "docs/results/finetune_learning_curve.png")
    args = parser.parse_args(argv)
    if not (DATA / "train.xyz").is_file():
        parser.error(
            f"{DATA} has no train.xyz: the shared data must sit at ../shared/data "
            "beside the repository (../shared/data/README.md)"
        )
    os.chdir(ROOT)
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_subsets(args.out, args.sizes)
    test = ase.io.read(DATA / "test_MD.xyz", ":")[:: args.test_stride]
    results = []
    for n in args.sizes:
        for mode in args.modes:
            if args.score_only:
                run_dir = args.out / f"{mode}_{n}"
                if not (run_dir / "best_model.pt").exists():
                    continue
            else:
                run_dir = run(args.out, data, n, mode, args.minutes)
            row = {"n_train": n, "mode": mode, **score(run_dir / "best_model.pt", test), **run_record(run_dir)}
            results.append(row)
            print(
                f"N={n:4d} {mode:8s} force MAE {row['force_mae_meV_per_A']:7.1f} meV/Å  energy MAE "
                f"{row['energy_mae_meV']:8.1f} meV  ({row['epochs']} epochs, best {row['best_epoch']}, "
                f"{row['train_cpu_seconds']:.0f} CPU s)",
                flush=True,
            )
            write_report(args, argv, results, len(test))  # after every run: a cut-off run keeps the others
    return 0


def write_report(args, argv, results, n_test):
    plot(results, args.figure, args.minutes, n_test)
    report = {
        "command": " ".join(
            ["python", "benchmarks/finetune_learning_curve.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "minutes_per_run": args.minutes,
        "test_frames": n_test,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "threads": 1,
        },
        "results": results,
    }
    (args.out / "finetune_curve.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
