"""One thread or two: where intra-op parallelism starts to pay for a SINetCalculator call.

    python benchmarks/bench_threads.py                       # default sizes, L = 1 and 2, f32 and f64
    python benchmarks/bench_threads.py --compile --lmax 2 --dtypes float32
    python benchmarks/bench_threads.py --out benchmarks/results/threads.json

For each structure (ethanol, Cu icosahedra of 13 to 147 atoms, periodic fcc Cu cells
of 32 to 500 atoms; r_max 5 Å) it builds
the MD benchmark's SINet (random weights, seed 0, 64 channels, 2 layers, 8 radial
functions, ``bench_md.py``) and times ``atoms.get_forces()``
(energy + forces, neighbour list included) after a small random displacement of the atoms,
with ``torch.set_num_threads`` alternating between 1 and 2 call by call, so that a change
in machine load hits both settings alike. Prints the median per setting, the ratio and
the edge count. Run it on an idle machine: with another process on the second core,
two threads wait on each other at every operator and lose at every size.
"""

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np
import torch
from ase.build import bulk, molecule
from ase.cluster import Icosahedron

from sinet_ase import SINet, SINetCalculator

SYSTEMS = {
    "ethanol_9": lambda: molecule("CH3CH2OH"),
    "cu_ico_13": lambda: Icosahedron("Cu", 2, latticeconstant=3.61),
    "cu_ico_55": lambda: Icosahedron("Cu", 3, latticeconstant=3.61),
    "cu_ico_147": lambda: Icosahedron("Cu", 4, latticeconstant=3.61),
    "cu_fcc_32": lambda: bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2),
    "cu_fcc_108": lambda: bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3),
    "cu_fcc_256": lambda: bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4),
    "cu_fcc_500": lambda: bulk("Cu", "fcc", a=3.61, cubic=True).repeat(5),
}


def time_system(name, lmax, dtype, compile_, calls, seed=0):
    atoms = SYSTEMS[name]()
    elements = ["H", "C", "N", "O"] if name.startswith("ethanol") else ["Cu"]
    torch.manual_seed(0)
    model = SINet(
        elements,
        cutoff=5.0,
        lmax=lmax,
        channels=64,
        num_layers=2,
        num_radial=8,
        radial_hidden=64,
        mlp_hidden=64,
        envelope_p=6,
    )
    calc = SINetCalculator(model, dtype=dtype, compile=compile_)
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    base = atoms.positions.copy()

    def call(threads):
        torch.set_num_threads(threads)
        atoms.positions = base + rng.normal(0.0, 0.01, base.shape)
        t0 = time.perf_counter()
        atoms.get_forces()
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up (and compilation) at both settings
        call(1), call(2)
    times = {1: [], 2: []}
    for _ in range(calls):
        for threads in (1, 2):
            times[threads].append(call(threads))
    edges = int(atoms_edges(atoms, calc))
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    return {
        "system": name,
        "atoms": len(atoms),
        "edges": edges,
        "lmax": lmax,
        "dtype": dtype,
        "compile": compile_,
        "ms_1_thread": ms[1],
        "ms_2_threads": ms[2],
        "two_over_one": ms[2] / ms[1],
    }


def atoms_edges(atoms, calc):
    from sinet_ase.graph import atoms_to_graph

    return atoms_to_graph(atoms, calc.model.cutoff, calc.model.elements).edge_index.shape[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--lmax", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--compile", action="store_true", help="compiled network (compile=True)")
    ap.add_argument("--calls", type=int, default=20, help="timed calls per thread setting")
    ap.add_argument("--out", default=None, help="write the rows and the machine state as JSON")
    args = ap.parse_args()
    rows = []
    print(
        f"{'system':12s} {'atoms':>6s} {'edges':>7s} {'L':>2s} {'dtype':8s} "
        f"{'1 thread':>9s} {'2 threads':>9s} {'2/1':>5s}  (ms per energy + forces call)"
    )
    for name in args.systems:
        for lmax in args.lmax:
            for dtype in args.dtypes:
                row = time_system(name, lmax, dtype, args.compile, args.calls)
                rows.append(row)
                print(
                    f"{name:12s} {row['atoms']:6d} {row['edges']:7d} {lmax:2d} {dtype:8s} "
                    f"{row['ms_1_thread']:9.2f} {row['ms_2_threads']:9.2f} {row['two_over_one']:5.2f}",
                    flush=True,
                )
    if args.out:
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_after": os.getloadavg(),
            "args": vars(args),
        }
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
