"""MD ms per step of the shipped potential in two source trees, interleaved: before / after a change.

Each (tree, molecule, dtype) runs in a fresh process with ``PYTHONPATH`` set to its tree:
``SINetCalculator(..., compile=True)`` on the shipped structure, 30 VelocityVerlet steps
untimed, then ``--steps`` steps timed one by one (median and mean). The trees alternate within
every repeat (A, B, A, B, ...), so that a change of the machine's speed during the run hits
both alike; the ratio of each repeat's pair is the figure to read (the machine's speed can
change by more than the effect between repeats). Compiled networks come from inductor's cache (``--warm`` runs every config once
untimed first, which compiles what is not cached yet).

    git worktree add --detach /tmp/before HEAD~1
    python benchmarks/ab_checkouts.py /tmp/before . --repeats 3 --out benchmarks/results/ab_x.json

Threads and allocator as ``bench_md.py`` (2 threads, jemalloc when installed). Run on an idle
machine; the foreign load of each process is recorded.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_md import ForeignLoad, cpu_name, machine_state, worker_env  # noqa: E402

WORKER = """
import json, sys, time
import numpy as np, torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from sinet_ase import SINetCalculator
from sinet_ase.pretrained import default_potential, pretrained_path, shipped_structure
molecule, dtype, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
atoms = shipped_structure(molecule)
MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
atoms.calc = SINetCalculator(str(pretrained_path(default_potential())), dtype=dtype, compile=True)
dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
dyn.run(30)
times = []
for _ in range(steps):
    start = time.perf_counter()
    dyn.run(1)
    times.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"median_ms": 1000 * float(np.median(times)), "mean_ms": 1000 * float(np.mean(times))}))
"""


def run(tree, molecule, dtype, steps, args):
    env = worker_env(args.allocator, args.threads)
    env["PYTHONPATH"] = os.path.abspath(tree)
    with ForeignLoad() as load:
        proc = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", WORKER, molecule, dtype, str(steps), str(args.threads)],
            env=env,
            cwd=os.path.abspath(tree),
            capture_output=True,
            text=True,
        )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"{tree} {molecule} {dtype}: {proc.stderr.strip().splitlines()[-3:]}")
    return dict(json.loads(line[-1][len("RESULT ") :]), foreign_load_cores=round(load.cores, 3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", help="source tree A (a git worktree)")
    ap.add_argument("after", help="source tree B")
    ap.add_argument("--configs", nargs="*", default=["ethanol:float32", "ethanol:float64", "aspirin:float64"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--allocator", default="jemalloc", choices=["jemalloc", "glibc"])
    ap.add_argument("--warm", action="store_true", help="run every config once untimed first (compiles)")
    ap.add_argument("--out", default=None, help="JSON file")
    args = ap.parse_args()
    configs = [tuple(c.split(":")) for c in args.configs]
    trees = {"before": args.before, "after": args.after}
    if args.warm:
        for tree in trees.values():
            for molecule, dtype in configs:
                run(tree, molecule, dtype, 5, args)
    start = machine_state()
    records = []
    for repeat in range(args.repeats):
        for molecule, dtype in configs:
            for name, tree in trees.items():
                r = dict(run(tree, molecule, dtype, args.steps, args), tree=name, molecule=molecule, dtype=dtype)
                r["repeat"] = repeat
                print(json.dumps(r), flush=True)
                records.append(r)
    print(
        "\n| molecule | dtype | before ms (median of repeats) | after ms | before / after, per repeat | foreign load max |"
    )
    print("|---|---|---|---|---|---|")
    for molecule, dtype in configs:
        med = {
            name: float(
                np.median(
                    [
                        r["median_ms"]
                        for r in records
                        if (r["tree"], r["molecule"], r["dtype"]) == (name, molecule, dtype)
                    ]
                )
            )
            for name in trees
        }
        ratios = [
            a["median_ms"] / b["median_ms"]
            for a in records
            for b in records
            if (a["tree"], b["tree"]) == ("before", "after")
            and a["repeat"] == b["repeat"]
            and (a["molecule"], a["dtype"]) == (b["molecule"], b["dtype"]) == (molecule, dtype)
        ]
        load = max(r["foreign_load_cores"] for r in records if (r["molecule"], r["dtype"]) == (molecule, dtype))
        print(
            f"| {molecule} | {dtype} | {med['before']:.3f} | {med['after']:.3f} | {', '.join(f'{x:.3f}' for x in ratios)} | {load:.2f} |"
        )
    if args.out:
        env = {"cpu": cpu_name(), "threads": args.threads, "allocator": args.allocator, "argv": sys.argv}
        env.update(start=start, end=machine_state())
        with open(args.out, "w") as handle:
            json.dump({"env": env, "records": records}, handle, indent=1)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
