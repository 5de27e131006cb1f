"""Table 3b shape over seeds: test MSE at the best validation epoch within 300 epochs, per L.

    python training/nbody_results/ablation/summarize_ablation.py

L = 1 is the recipe run of each seed (training/nbody_results/seed<S>/log.json) within its
first 300 epochs; L >= 2 are the runs of run_ablation.sh: ablation/L<L> (seed 0) and
ablation/L<L>_seed<S>. Reads the logged numbers (validation and test MSE are logged at
every new best); prints a markdown table with the mean and sample standard deviation
over the seeds found.
"""
import json
import re
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
EPOCHS = 300


def best_within(log_path, max_epoch=EPOCHS):
    log = json.loads(Path(log_path).read_text())
    rows = [h for h in log["history"] if "valid_mse" in h and h["epoch"] <= max_epoch]
    best = min(rows, key=lambda h: h["valid_mse"])
    return dict(epoch=best["epoch"], valid=best["valid_mse"], test=best["test_mse"],
                params=log["summary"]["num_parameters"], done=max(h["epoch"] for h in log["history"]))


def runs():
    out = {}
    for seed_dir in sorted(HERE.parent.glob("seed[0-9]")):
        if (seed_dir / "log.json").is_file():
            out.setdefault(1, {})[int(seed_dir.name[4:])] = best_within(seed_dir / "log.json")
    for d in sorted(HERE.glob("L*")):
        m = re.fullmatch(r"L(\d+)(?:_seed(\d+))?", d.name)
        if m and (d / "log.json").is_file():
            out.setdefault(int(m.group(1)), {})[int(m.group(2) or 0)] = best_within(d / "log.json")
    return out


def main():
    table = runs()
    print("| L | params | seeds | best epochs | valid MSE | test MSE per seed | test MSE mean ± std |")
    print("|---|---|---|---|---|---|---|")
    for L, by_seed in sorted(table.items()):
        seeds = sorted(by_seed)
        tests = [by_seed[s]["test"] for s in seeds]
        spread = f"{statistics.mean(tests):.5f} ± {statistics.stdev(tests):.5f}" if len(tests) > 1 else f"{tests[0]:.5f}"
        incomplete = [s for s in seeds if by_seed[s]["done"] < EPOCHS]
        note = f" (seed {', '.join(map(str, incomplete))} stopped before {EPOCHS})" if incomplete else ""
        epochs = " / ".join(str(by_seed[s]["epoch"]) for s in seeds)
        valids = " / ".join(f"{by_seed[s]['valid']:.5f}" for s in seeds)
        test_list = " / ".join(f"{t:.5f}" for t in tests)
        print(f"| {L} | {by_seed[seeds[0]]['params']:,} | {', '.join(map(str, seeds))}{note} | "
              f"{epochs} | {valids} | {test_list} | {spread} |")


if __name__ == "__main__":
    main()
