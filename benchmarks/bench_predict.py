"""Throughput of batched ``sinet_ase.predict`` against one ``SINetCalculator`` call per structure.

Run on an idle machine (from the repository root, in the project venv)::

    python benchmarks/bench_predict.py                              # molecules + Cu cells
    python benchmarks/bench_predict.py --quick                      # a few seconds: checks that it runs
    python benchmarks/bench_predict.py --sets molecules --batch-sizes 1,8,32,128 --dtype float32
    python benchmarks/bench_predict.py --device cuda

What is timed (wall clock, ``time.perf_counter``, best of ``--repeats`` passes over
the whole set after one untimed warm-up pass):

* ``one_by_one``: a fresh ``atoms.copy()`` per structure with one shared
  ``SINetCalculator`` (so no result is served from the cache), energy + forces
  (+ stress for the periodic set): what a user's loop over frames does;
* ``predict(batch_size=B)`` for each ``B`` of ``--batch-sizes``, the same properties, given
  the calculator's model (already cast and frozen, so neither side times model loading).

Both include the neighbour lists and the graph building, so the figure is the
end-to-end structures/s a user sees. The two results are compared (maximum
absolute energy and force difference) so a fast but wrong path cannot pass.

Sets: ``molecules`` = the ten molecules shipped with the package
(``sinet_ase/potentials/structures.extxyz``; 9-21 atoms) rattled by 0.05 Å,
``--count`` frames in all, evaluated with the shipped potential ``--potential``;
``cu`` = fcc Cu cells of 32 atoms (``bulk('Cu', 'fcc', a=3.61, cubic=True) * (2, 2, 2)``),
rattled and strained, with a random-weight SINet (cutoff 5 Å, lmax 2, 64 channels,
2 layers, ``torch.manual_seed(0)``), with stress.

The machine load is recorded with each figure (``foreign_load_cores``: cores that
other processes used while it was measured); figures taken while it exceeds about
0.25 cores are not comparable. ``--wait-idle S`` waits up to S seconds for an idle
machine before each measurement. Results go to ``--out`` (JSON) and a table on stdout.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.build import bulk  # noqa: E402

from bench_md import ForeignLoad, cpu_name, machine_state, wait_for_idle  # noqa: E402
from sinet_ase import SINet, SINetCalculator, predict  # noqa: E402
from sinet_ase.pretrained import pretrained_path, shipped_structure, shipped_structure_names  # noqa: E402


def molecule_set(count, seed=0):
    rng = np.random.default_rng(seed)
    names = shipped_structure_names()
    frames = []
    for k in range(count):
        atoms = shipped_structure(names[k % len(names)])
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def copper_set(count, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(scale=0.01, size=(3, 3))), scale_atoms=True)
        frames.append(atoms)
    return frames


def copper_model():
    torch.manual_seed(0)
    return SINet(elements=["Cu"], cutoff=5.0, lmax=2, channels=64, num_layers=2)


def one_by_one(calc, frames, stress):
    energy, forces = [], []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        if stress:  # first, so that one model call serves stress, energy and forces
            atoms.get_stress()
        energy.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    return np.array(energy), forces


def timed(fn, repeats, wait_idle):
    fn()  # warm-up: first-call allocations, lazy imports
    best, load = float("inf"), []
    for _ in range(repeats):
        wait_for_idle(wait_idle)
        with ForeignLoad() as fl:
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        load.append(round(fl.cores, 2))
    return best, load, result


def bench_set(name, frames, model, stress, args):
    properties = ("energy", "forces", "stress") if stress else ("energy", "forces")
    calc = SINetCalculator(model, dtype=args.dtype, device=args.device)
    seconds, load, (ref_energy, ref_forces) = timed(
        lambda: one_by_one(calc, frames, stress), args.repeats, args.wait_idle
    )
    atoms_total = sum(len(a) for a in frames)
    rows = [
        {
            "set": name,
            "method": "one_by_one",
            "batch_size": 1,
            "seconds": seconds,
            "structures_per_s": len(frames) / seconds,
            "foreign_load_cores": load,
        }
    ]
    for batch_size in args.batch_sizes:
        seconds, load, out = timed(
            lambda: predict(
                calc.model, frames, batch_size=batch_size, properties=properties, dtype=args.dtype, device=args.device
            ),
            args.repeats,
            args.wait_idle,
        )
        rows.append(
            {
                "set": name,
                "method": "predict",
                "batch_size": batch_size,
                "seconds": seconds,
                "structures_per_s": len(frames) / seconds,
                "foreign_load_cores": load,
                "max_energy_diff_eV": float(np.abs(out["energy"] - ref_energy).max()),
                "max_force_diff_eV_per_A": float(max(np.abs(f - g).max() for f, g in zip(out["forces"], ref_forces))),
            }
        )
    for row in rows:
        row.update(structures=len(frames), atoms=atoms_total, speedup=rows[0]["seconds"] / row["seconds"])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="molecules,cu", help="comma-separated: molecules, cu")
    parser.add_argument("--count", type=int, default=512, help="molecules in the molecule set")
    parser.add_argument("--cu-count", type=int, default=64, help="Cu cells in the cu set")
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument("--potential", default="sinet-xtb-md17", help="shipped potential (molecules)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wait-idle", type=float, default=0.0, help="seconds to wait for an idle machine")
    parser.add_argument("--quick", action="store_true", help="tiny sets, one repeat: checks that it runs")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "predict.json"))
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        args.count, args.cu_count, args.repeats, args.batch_sizes = 20, 4, 1, [1, 8]
    torch.set_num_threads(args.threads)

    rows = []
    state = {
        "start": machine_state(),
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "argv": sys.argv,
    }
    for name in args.sets.split(","):
        if name == "molecules":
            rows += bench_set(name, molecule_set(args.count), str(pretrained_path(args.potential)), False, args)
        elif name == "cu":
            rows += bench_set(name, copper_set(args.cu_count), copper_model(), True, args)
        else:
            parser.error(f"unknown set {name!r}; choose from molecules, cu")
    state["end"] = machine_state()
    print(
        f"{'set':10s} {'method':11s} {'batch':>5s} {'s':>8s} {'struct/s':>9s} {'speedup':>7s} "
        f"{'foreign cores':>14s} {'max |dE|':>9s} {'max |dF|':>9s}"
    )
    for r in rows:
        print(
            f"{r['set']:10s} {r['method']:11s} {r['batch_size']:5d} {r['seconds']:8.3f} "
            f"{r['structures_per_s']:9.1f} {r['speedup']:7.2f} {max(r['foreign_load_cores']):14.2f} "
            f"{r.get('max_energy_diff_eV', 0.0):9.1e} {r.get('max_force_diff_eV_per_A', 0.0):9.1e}"
        )
    if not args.quick:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"machine": state, "dtype": args.dtype, "device": args.device, "rows": rows}, f, indent=1)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
