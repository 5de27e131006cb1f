"""Table of the runs that tried to close the gap to the paper's 0.0044 (training/RESULTS.md).

    OMP_NUM_THREADS=1 python training/nbody_results/attempts/summarize_attempts.py [--test PATH/test.npz]

For every folder here with a ``log.json`` (copied from the run's output folder): the model
settings that differ from training/nbody.yaml, parameters, epochs done, best validation
epoch, validation and test MSE there, training wall time. Where the folder also holds the
run's ``best.pt``, the test MSE is recomputed from it on the test ``.npz`` (the evaluation
command's code path) and printed beside the logged one. For every group of seeds of one
setting whose ``best.pt`` files are all here, it also prints the MSE of their ensemble (the
mean of the members' predicted positions) on the validation and test splits. Prints a
markdown table and, with ``--json``, the rows as JSON.
"""
import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from sinet_ase.nbody.dataset import default_cache_dir, load_nbody_dataset  # noqa: E402
from sinet_ase.nbody.evaluate import evaluate_file  # noqa: E402
from sinet_ase.nbody.model import load_nbody_model  # noqa: E402
from sinet_ase.nbody.train import DEFAULT_CONFIG, evaluate_mse, load_config  # noqa: E402

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parents[1] / "nbody.yaml"


def differences(config):
    """Entries of the run's config that differ from the recipe (model and train sections)."""
    recipe = load_config(RECIPE, {})
    out = {}
    for section in ("model", "train"):
        for key, value in config.get(section, {}).items():
            default = recipe[section].get(key, DEFAULT_CONFIG[section].get(key))
            if key in ("seed", "epochs", "max_minutes", "device", "threads") or value == default:
                continue
            if key == "schedule_epochs" and config["train"].get("lr_schedule", "constant") == "constant":
                continue  # logs before commit "schedule_epochs only for cosine" carry it; no effect
            out[f"{section}.{key}"] = value
    return out


def row(folder, test_npz):
    log = json.loads((folder / "log.json").read_text())
    history = [h for h in log["history"] if "valid_mse" in h]
    best = min(history, key=lambda h: h["valid_mse"])
    summary = log.get("summary") or {}
    r = {
        "run": folder.name,
        "seed": log["config"]["train"]["seed"],
        "changes": differences(log["config"]),
        "num_parameters": summary.get("num_parameters") or 0,
        "epochs_done": max(h["epoch"] for h in log["history"]),
        "best_epoch": best["epoch"],
        "valid_mse": best["valid_mse"],
        "test_mse": best.get("test_mse"),
        "train_seconds": log["history"][-1].get("seconds"),  # wall time of the last epoch logged
    }
    if (folder / "best.pt").exists() and test_npz is not None:
        r["test_mse_reevaluated"] = evaluate_file(folder / "best.pt", test_npz)["mse"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", default=None, help="test .npz (default: the N-body cache's test.npz)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    test_npz = Path(args.test) if args.test else default_cache_dir() / "test.npz"
    if not test_npz.exists():
        test_npz = None
    rows = [row(f, test_npz) for f in sorted(HERE.iterdir()) if (f / "log.json").exists()]
    print("| run | seed | changes from the recipe | params | epochs done | best epoch | valid MSE | "
          "test MSE | re-evaluated | wall min |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
        again = r.get("test_mse_reevaluated")
        print(f"| {r['run']} | {r['seed']} | {changes} | {r['num_parameters']:,} | {r['epochs_done']} | "
              f"{r['best_epoch']} | {r['valid_mse']:.5f} | {r['test_mse']:.5f} | "
              f"{'-' if again is None else f'{again:.5f}'} | "
              f"{'-' if r['train_seconds'] is None else round(r['train_seconds'] / 60)} |")
    groups = {}
    for r in rows:
        groups.setdefault(r["run"].rsplit("_seed", 1)[0], []).append(r)
    data = None
    for name, members in groups.items():
        if len(members) < 2:
            continue
        values = [r["test_mse"] for r in members]
        print(f"{name}: test MSE {statistics.mean(values):.5f} ± {statistics.stdev(values):.5f} "
              f"over {len(values)} seeds")
        files = [HERE / r["run"] / "best.pt" for r in members]
        if all(f.exists() for f in files):
            data = data or load_nbody_dataset()
            models = [load_nbody_model(f) for f in files]
            print(f"{name}: ensemble of the {len(files)} seeds, valid MSE "
                  f"{evaluate_mse(models, data['valid']):.5f}, test MSE {evaluate_mse(models, data['test']):.5f}")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
