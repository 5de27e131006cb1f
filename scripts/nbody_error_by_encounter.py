"""Where does an N-body test MSE come from? Per-system errors by closest approach.

    OMP_NUM_THREADS=1 python scripts/nbody_error_by_encounter.py MODEL.pt [A.pt,B.pt ...]
        [--split test] [--json OUT.json]

A comma-separated list of model files is scored as one ensemble (the mean of the
members' predicted positions), as in ``scripts/nbody_draws.py``.

For every system of the split, the script re-simulates the 1,000 steps from the input
frame with the data set's own simulator (bit-exact, see ``sinet_ase.nbody.simulator``),
records the positions every 10 steps and takes the smallest pair distance ``d_min`` over
the interval. It then prints, for the x + v baseline and every model, the MSE within
bins of ``d_min`` and each bin's share of the split's summed squared error, plus the
share of the worst 1 % and 5 % of systems and the median per-system MSE.
"""

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sinet_ase.files import atomic_write_text  # noqa: E402
from sinet_ase.nbody import simulator as sim  # noqa: E402
from sinet_ase.nbody.dataset import load_nbody_dataset  # noqa: E402
from sinet_ase.nbody.model import load_nbody_ensemble  # noqa: E402
from sinet_ase.nbody.evaluate import ensemble_displacement, split_to_tensors  # noqa: E402

BIN_EDGES = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0, np.inf)
INTERVAL_STEPS = 1000


def closest_approach(split, record_every: int = 10) -> np.ndarray:
    """``(N,)`` smallest pair distance over the 1,000 steps from the input frame."""
    pos, _ = sim.simulate(split["x"], split["v"], split["q"], INTERVAL_STEPS, record_every)
    assert np.allclose(pos[:, -1], split["target"]), "re-simulation must reproduce the target frame"
    i, j = np.triu_indices(pos.shape[2], 1)
    return np.linalg.norm(pos[:, :, i] - pos[:, :, j], axis=-1).min(axis=(1, 2))


def per_system_mse(members, split) -> np.ndarray:
    """``(N,)`` MSE over each system's coordinates of the members' mean prediction."""
    t = split_to_tensors(split, members[0].dtype)
    with torch.no_grad():
        pred = ensemble_displacement([m.eval() for m in members], t["x"], t["v"], t["q"])
    return ((pred - t["dx"].double()) ** 2).mean(dim=(1, 2)).numpy()


def breakdown(errors: np.ndarray, d_min: np.ndarray) -> dict:
    total = errors.sum()
    worst = np.sort(errors)[::-1]
    bins = []
    for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
        mask = (d_min >= lo) & (d_min < hi)
        bins.append(
            dict(
                lo=lo,
                hi=hi,
                n=int(mask.sum()),
                mse=float(errors[mask].mean()) if mask.any() else None,
                share=float(errors[mask].sum() / total),
            )
        )
    n = len(errors)
    return dict(
        mse=float(errors.mean()),
        median=float(np.median(errors)),
        worst_1pct_share=float(worst[: max(1, n // 100)].sum() / total),
        worst_5pct_share=float(worst[: max(1, n // 20)].sum() / total),
        bins=bins,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="N-body model files (best.pt); A.pt,B.pt = ensemble")
    ap.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    split = load_nbody_dataset()[args.split]
    d_min = closest_approach(split)
    rows = {"x + v": breakdown(((split["x"] + split["v"] - split["target"]) ** 2).mean(axis=(1, 2)), d_min)}
    for path in args.models:
        rows[path] = breakdown(per_system_mse(load_nbody_ensemble(path), split), d_min)

    labels = [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">= {lo:g}" for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:])]
    counts = [b["n"] for b in next(iter(rows.values()))["bins"]]
    print(f"{args.split} split, {len(d_min)} systems; closest approach d_min over the interval\n")
    print(
        "| predictor | MSE | median per system | worst 1 % | worst 5 % | "
        + " | ".join(f"d_min {lab} (n = {n})" for lab, n in zip(labels, counts))
        + " |"
    )
    print("|---" * (5 + len(labels)) + "|")
    for name, r in rows.items():
        cells = [f"{b['mse']:.5f} ({100 * b['share']:.0f} %)" for b in r["bins"]]
        print(
            f"| {name} | {r['mse']:.5f} | {r['median']:.5f} | {100 * r['worst_1pct_share']:.0f} % | "
            f"{100 * r['worst_5pct_share']:.0f} % | " + " | ".join(cells) + " |"
        )
    print("\ncells: MSE of the systems in the bin (the bin's share of the summed squared error)")
    if args.json:
        atomic_write_text(
            args.json, json.dumps(dict(split=args.split, bin_edges=[float(e) for e in BIN_EDGES], rows=rows), indent=1)
        )


if __name__ == "__main__":
    main()
