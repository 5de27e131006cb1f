"""How much does a 2,000-trajectory test MSE depend on which trajectories were drawn?

    OMP_NUM_THREADS=1 python scripts/nbody_draws.py MODEL.pt [A.pt,B.pt,C.pt ...]
        [--draws 10] [--n 2000] [--first-seed 1000] [--json OUT.json]

A comma-separated list of model files is scored as one ensemble (the mean of the
members' predicted positions).

Simulates ``--draws`` independent sets of ``--n`` trajectories of the benchmark protocol
(``make_split`` with ``numpy.random.default_rng(first_seed + k)``, the same simulator and
frames as the data set) and prints, for the two baselines and for every model file, the
MSE on the project's valid and test splits and the mean, standard deviation, minimum and
maximum over the fresh draws. The project's splits are one such draw each, so the spread
says how far a single test number can sit from the model's expected MSE.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from sinet_ase.files import atomic_write_text  # noqa: E402
from sinet_ase.nbody.dataset import baseline_mse, load_nbody_dataset, make_split  # noqa: E402
from sinet_ase.nbody.model import load_nbody_ensemble  # noqa: E402
from sinet_ase.nbody.evaluate import evaluate_mse  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="N-body model files (best.pt)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    project = load_nbody_dataset()
    draws = [make_split(args.n, np.random.default_rng(args.first_seed + k)) for k in range(args.draws)]
    print(f"{args.draws} draws of {args.n} trajectories simulated in {time.perf_counter() - t0:.0f} s")

    def scorers():
        yield "no motion", lambda s: baseline_mse(s)["no_motion"]
        yield "x + v", lambda s: baseline_mse(s)["constant_velocity"]
        for path in args.models:
            members = load_nbody_ensemble(path)
            yield path, lambda s, ms=members: evaluate_mse(ms, s)

    rows = []
    print("\n| predictor | valid split | test split | fresh draws: mean ± std | min | max | test / mean |")
    print("|---|---|---|---|---|---|---|")
    for name, score in scorers():
        values = [score(s) for s in draws]
        r = dict(
            predictor=name,
            valid=score(project["valid"]),
            test=score(project["test"]),
            draws=values,
            mean=statistics.mean(values),
            std=statistics.stdev(values),
        )
        rows.append(r)
        print(
            f"| {name} | {r['valid']:.5f} | {r['test']:.5f} | {r['mean']:.5f} ± {r['std']:.5f} | "
            f"{min(values):.5f} | {max(values):.5f} | {r['test'] / r['mean']:.2f} |"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(dict(n=args.n, first_seed=args.first_seed, rows=rows), indent=1))


if __name__ == "__main__":
    main()
