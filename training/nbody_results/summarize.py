"""Collect the numbers of training/RESULTS.md (N-body section) from the runs in this folder.

    OMP_NUM_THREADS=1 python training/nbody_results/summarize.py [--test PATH/test.npz]

Reads seed*/log.json, siformer_seed*/log.json and ablation/L*/log.json, re-evaluates every
seed's best.pt on the test .npz (the evaluation command's code path), times inference per
batch of 100 on this machine's CPU and compares the rollout velocity estimators.  Prints JSON.

The L ablation ran at most ABLATION_EPOCHS epochs per L; its L = 1 entry is seed 0's best
validation within the same number of epochs.  SiFormer is compared with the SINet seeds at
the best validation within the epochs both have done.
"""
import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from sinet_ase.nbody.dataset import baseline_mse, default_cache_dir, load_npz_split
from sinet_ase.nbody.evaluate import evaluate_file, time_inference
from sinet_ase.nbody.model import load_nbody_model
from sinet_ase.nbody.rollout import ground_truth, measure_velocity_estimators, rollout, rollout_mse

HERE = Path(__file__).resolve().parent
ABLATION_EPOCHS = 300


def best_within(history, max_epoch):
    best = None
    for h in history:
        if h["epoch"] > max_epoch or "valid_mse" not in h:
            continue
        if best is None or h["valid_mse"] < best["valid_mse"]:
            best = h
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--test", default=str(default_cache_dir() / "test.npz"))
    p.add_argument("--rollout-systems", type=int, default=200)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = {"seeds": {}, "ablation": {}}
    logs = {}
    for d in sorted(HERE.glob("seed*")):
        if not d.is_dir() or not (d / "log.json").is_file():
            continue
        log = json.loads((d / "log.json").read_text())
        logs[d.name] = log
        ev = evaluate_file(d / "best.pt", a.test)
        out["seeds"][d.name] = dict(summary=log["summary"], reevaluated_test_mse=ev["mse"],
                                    num_parameters=ev["num_parameters"])
    common = min(max(h["epoch"] for h in log["history"] if "valid_mse" in h) for log in logs.values())
    at_common = {k: best_within(log["history"], common) for k, log in logs.items()}
    tests = [v["test_mse"] for v in at_common.values()]
    out["common_epochs"] = common
    out["at_common"] = {k: dict(epoch=v["epoch"], valid_mse=v["valid_mse"], test_mse=v["test_mse"])
                        for k, v in at_common.items()}
    out["test_mean"] = statistics.mean(tests)
    out["test_std"] = statistics.stdev(tests) if len(tests) > 1 else 0.0
    def at(history, max_epoch):
        b = best_within(history, max_epoch)
        return dict(epoch=b["epoch"], valid_mse=b["valid_mse"], test_mse=b["test_mse"])

    if "seed0" in logs:
        out["ablation"]["L1"] = dict(at(logs["seed0"]["history"], ABLATION_EPOCHS),
                                     params=logs["seed0"]["summary"]["num_parameters"])
    for d in sorted((HERE / "ablation").glob("L*")):
        if not d.is_dir() or not (d / "log.json").is_file():
            continue
        log = json.loads((d / "log.json").read_text())
        out["ablation"][d.name] = dict(at(log["history"], ABLATION_EPOCHS),
                                       epochs_done=log["summary"]["epochs_done"],
                                       params=log["summary"]["num_parameters"])
    out["siformer"] = {}
    for d in sorted(HERE.glob("siformer_seed*")):
        if not d.is_dir() or not (d / "log.json").is_file():
            continue
        log = json.loads((d / "log.json").read_text())
        done = log["summary"]["epochs_done"]
        out["siformer"][d.name] = dict(
            summary=log["summary"], reevaluated_test_mse=evaluate_file(d / "best.pt", a.test)["mse"],
            sinet_seeds_within_same_epochs={k: at(v["history"], done) for k, v in logs.items()})
    split = load_npz_split(a.test)
    out["baselines"] = baseline_mse(split)
    best_seed = min(out["seeds"], key=lambda k: out["seeds"][k]["summary"]["best_valid_mse"])
    out["best_seed_by_valid"] = best_seed
    model = load_nbody_model(HERE / best_seed / "best.pt")
    out["inference"] = time_inference(model, split, 100, repeats=30)
    n = a.rollout_systems
    x, v, q = split["x"][:n], split["v"][:n], split["q"][:n]
    truth = ground_truth(x, v, q, 5)
    out["rollout_mse_K5"] = {m: rollout_mse(rollout(model, x, v, q, 5, velocity=m)["x"], truth["x"]).tolist()
                             for m in ("bdf2", "finite_difference", "constant_acceleration")}
    out["velocity_estimators_true_positions"] = {k: e.tolist() for k, e in
                                                 measure_velocity_estimators(x, v, q, 3).items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
