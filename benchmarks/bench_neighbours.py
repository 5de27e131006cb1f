"""Neighbour lists: matscipy (what ``sinet_ase.graph`` uses) against vesin.

Issue #6 asks to compare matscipy with vesin on this machine and keep the faster
behind one interface. For each system this times, in one process, one thread:

* ``sinet_ase[matscipy]`` / ``sinet_ase[vesin]``:
  :func:`sinet_ase.graph.neighbour_list` as the calculator calls it, with
  ``backend="matscipy"`` or ``"vesin"`` (a scipy k-d tree for open molecules
  either way; int64 output);
* ``matscipy``: ``matscipy.neighbours.neighbour_list("ijS", ...)`` alone;
* ``vesin``: ``vesin.NeighborList(cutoff, full_list=True).compute(..., "ijS")`` alone.

and checks that both backends return the same set of ``(i, j, S)`` pairs (the
benchmark stops if not). Median of ``--reps`` calls after one untimed call.
Systems: fcc Cu cells (rattled by 0.05 Å) and water boxes at 1 g/cm^3 from 108
to ~100,000 atoms, and ethanol in vacuum, cutoff 5 Å.

    python benchmarks/bench_neighbours.py --out benchmarks/results
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from bench_md import ForeignLoad, cpu_name, machine_state  # noqa: E402
from bench_scaling import cu_cell, water_box  # noqa: E402


def systems(max_atoms):
    from ase.build import molecule

    eth = molecule("CH3CH2OH")
    eth.center(vacuum=6.0)
    eth.pbc = False
    out = [("ethanol", eth)]
    rng = np.random.default_rng(0)
    for n in (3, 6, 12, 18, 29):  # 108, 864, 6,912, 23,328, 97,556 atoms
        if 4 * n**3 <= max_atoms:
            cu = cu_cell(n)
            cu.positions += rng.normal(scale=0.05, size=cu.positions.shape)
            out.append((f"cu_{len(cu)}", cu))
    for k in (3, 7, 15, 32):  # 81, 1,029, 10,125, 98,304 atoms
        if 3 * k**3 <= max_atoms:
            out.append((f"water_{3 * k**3}", water_box(k)))
    return out


def lister_sinet(backend):
    def make(atoms, cutoff):
        from sinet_ase.graph import neighbour_list

        return lambda: neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, backend=backend)

    return make


def lister_matscipy(atoms, cutoff):
    from matscipy.neighbours import neighbour_list

    if not atoms.pbc.any():
        return None  # matscipy needs a cell; the project uses a k-d tree here
    pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    return lambda: neighbour_list("ijS", positions=pos, cell=cell, pbc=pbc, cutoff=cutoff)


def lister_vesin(atoms, cutoff):
    from vesin import NeighborList

    if not atoms.pbc.any():
        return None  # the project uses a k-d tree here
    nl = NeighborList(cutoff=cutoff, full_list=True)
    pos, cell = atoms.positions, atoms.cell.array
    return lambda: nl.compute(points=pos, box=cell, periodic=True, quantities="ijS")


LISTERS = {
    "sinet_ase[matscipy]": lister_sinet("matscipy"),
    "sinet_ase[vesin]": lister_sinet("vesin"),
    "matscipy": lister_matscipy,
    "vesin": lister_vesin,
}


def pair_keys(i, j, S):
    """One sortable row per pair, to compare two lists as sets."""
    keys = np.concatenate([np.asarray(i)[:, None], np.asarray(j)[:, None], np.asarray(S)], axis=1)
    return keys[np.lexsort(keys.T[::-1])]


def time_call(fn, reps):
    fn()  # untimed: first-call allocations
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--max-atoms", type=int, default=100_000)
    ap.add_argument("--out", default=None, help="folder for neighbours.json")
    args = ap.parse_args()

    import matscipy
    import vesin

    rows = []
    print(
        f"{cpu_name()}, matscipy {matscipy.__version__}, vesin {vesin.__version__}, "
        f"cutoff {args.cutoff} Å, median of {args.reps} calls (ms)"
    )
    names = list(LISTERS)
    print("| system | atoms | pairs | " + " | ".join(names) + " | matscipy / vesin (sinet_ase) | foreign load |")
    print("|---|---|---|" + "---|" * len(names) + "---|---|")
    for name, atoms in systems(args.max_atoms):
        reference = pair_keys(*LISTERS["sinet_ase[matscipy]"](atoms, args.cutoff)())
        other = pair_keys(*LISTERS["sinet_ase[vesin]"](atoms, args.cutoff)())
        if reference.shape != other.shape or not np.array_equal(reference, other):
            raise SystemExit(
                f"{name}: the vesin and matscipy backends give different pairs ({len(other)} vs {len(reference)})"
            )
        row = {"system": name, "atoms": len(atoms), "pairs": len(reference)}
        reps = max(3, args.reps if len(atoms) < 20_000 else args.reps // 2)
        with ForeignLoad() as load:
            for kind, make in LISTERS.items():
                fn = make(atoms, args.cutoff)
                row[kind] = None if fn is None else round(time_call(fn, reps), 3)
        row["foreign_load_cores"] = round(load.cores, 2)
        rows.append(row)
        fmt = lambda v: "-" if v is None else f"{v:,.2f}"
        ratio = row["sinet_ase[matscipy]"] / row["sinet_ase[vesin]"]
        print(
            f"| {name} | {len(atoms):,} | {len(reference):,} | "
            + " | ".join(fmt(row[k]) for k in names)
            + f" | {ratio:.2f}x | {row['foreign_load_cores']} |",
            flush=True,
        )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "neighbours.json")
        with open(path, "w") as f:
            json.dump(
                {
                    "machine": cpu_name(),
                    "state": machine_state(),
                    "cutoff": args.cutoff,
                    "matscipy": matscipy.__version__,
                    "vesin": vesin.__version__,
                    "rows": rows,
                },
                f,
                indent=1,
            )
        print("wrote", path)


if __name__ == "__main__":
    main()
