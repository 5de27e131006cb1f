"""Scaling of one SINet energy + forces call from ~100 to ~100,000 atoms: time and peak memory.

Run (from the repository root, in the project venv)::

    python benchmarks/bench_scaling.py                          # Cu and water, up to ~100k atoms
    python benchmarks/bench_scaling.py --systems cu --max-atoms 20000 --lmax 2

Systems: fcc Cu, ``bulk('Cu', 'fcc', a=3.61, cubic=True).repeat(n)`` (42 neighbours per
atom within 5 Å), and liquid-density water boxes: one H2O per 29.9 Å^3 (1 g/cm^3) on a
simple cubic lattice, each molecule randomly rotated (seed 0), ~50 neighbours per atom.

Each size runs in a fresh worker process (so its peak resident memory,
``ru_maxrss``, is its own): build the graph, then one untimed call and
``--calls`` timed calls of ``SINetCalculator`` (energy + forces; the atoms move
by 0.01 Å between calls so nothing is cached). Reported: median ms per call,
the part spent building the neighbour list, µs per atom, and peak RSS. Linear
scaling shows as a flat µs per atom.

Model: ``SINet(cutoff=5, lmax=--lmax, channels=--channels, num_layers=2,
num_radial=8, radial_hidden=64, mlp_hidden=64)``, random weights, float32
network, float64 geometry, ``torch.set_num_threads(2)``. ``--edge-chunk`` sets the
calculator's ``edge_chunk_size`` (edges processed per chunk with recomputation
in the backward pass), which bounds memory for large systems; it is applied
only from ``--chunk-from`` atoms on.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_md import cpu_name, machine_state, worker_env  # noqa: E402

WATER_VOLUME_A3 = 29.9  # Å^3 per molecule at 1 g/cm^3


def cu_cell(n):
    from ase.build import bulk

    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)


def water_box(k, seed=0):
    """``k^3`` water molecules on a cubic lattice at 1 g/cm^3, random orientations."""
    import numpy as np
    from ase import Atoms
    from ase.build import molecule
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    a = WATER_VOLUME_A3 ** (1.0 / 3.0)
    h2o = molecule("H2O")
    ref = h2o.positions - h2o.get_center_of_mass()
    grid = np.stack(np.meshgrid(*(np.arange(k),) * 3, indexing="ij"), -1).reshape(-1, 3) * a
    rots = Rotation.random(len(grid), random_state=rng.integers(2**31)).as_matrix()
    pos = grid[:, None, :] + np.einsum("nij,aj->nai", rots, ref) + a / 2
    return Atoms("OH2" * len(grid), positions=pos.reshape(-1, 3), cell=[k * a] * 3, pbc=True)


def sizes(kind, max_atoms):
    if kind == "cu":
        ns = [3, 5, 7, 10, 14, 18, 22, 29]  # 108 ... 97,556 atoms
        return [("cu", n, 4 * n**3) for n in ns if 4 * n**3 <= max_atoms]
    ks = [3, 5, 7, 10, 15, 21, 32]  # 81 ... 98,304 atoms
    return [("water", k, 3 * k**3) for k in ks if 3 * k**3 <= max_atoms]


def run_worker(cfg):
    import numpy as np
    import torch

    from sinet_ase import SINet, SINetCalculator
    from sinet_ase.graph import atoms_to_graph

    torch.set_num_threads(cfg["threads"])
    atoms = cu_cell(cfg["n"]) if cfg["kind"] == "cu" else water_box(cfg["n"])
    elements = ["Cu"] if cfg["kind"] == "cu" else ["H", "O"]
    torch.manual_seed(0)
    model = SINet(
        elements=elements,
        cutoff=5.0,
        lmax=cfg["lmax"],
        channels=cfg["channels"],
        num_layers=2,
        num_radial=8,
        radial_hidden=64,
        mlp_hidden=64,
        avg_num_neighbors=40.0,
    )
    chunk = cfg["edge_chunk"] if len(atoms) >= cfg["chunk_from"] else None
    calc = SINetCalculator(model, dtype=cfg["dtype"], edge_chunk_size=chunk)
    t = time.perf_counter()
    graph = atoms_to_graph(atoms, 5.0)
    nl_s = time.perf_counter() - t
    n_edges = int(graph.edge_index.shape[1])
    del graph
    rng = np.random.default_rng(0)
    atoms.calc = calc
    atoms.get_forces()  # untimed first call
    times = []
    for _ in range(cfg["calls"]):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        t = time.perf_counter()
        forces = atoms.get_forces()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        **cfg,
        "n_atoms": len(atoms),
        "n_edges": n_edges,
        "median_ms": med * 1e3,
        "min_ms": min(times) * 1e3,
        "neighbour_list_ms": nl_s * 1e3,
        "us_per_atom": med * 1e6 / len(atoms),
        "edge_chunk_used": chunk,
        "finite_forces": bool(np.isfinite(forces).all()),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", nargs="*", default=["cu", "water"], choices=["cu", "water"])
    ap.add_argument("--max-atoms", type=int, default=100_000)
    ap.add_argument("--lmax", type=int, default=2)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--edge-chunk", type=int, default=200_000)
    ap.add_argument(
        "--chunk-from",
        type=int,
        default=20_000,
        help="use edge chunks from this many atoms on (smaller systems run unchunked)",
    )
    ap.add_argument("--allocator", default="jemalloc", choices=["glibc", "jemalloc"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", default="/tmp/sinet_bench")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return

    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, f"scaling_l{args.lmax}_c{args.channels}_{args.dtype}.json")
    env = {"cpu": cpu_name(), "nproc": os.cpu_count(), "argv": sys.argv, "start": machine_state()}
    print("env:", json.dumps(env), flush=True)
    results = []
    for kind in args.systems:
        for kind_, n, _ in sizes(kind, args.max_atoms):
            cfg = {
                "kind": kind_,
                "n": n,
                "lmax": args.lmax,
                "channels": args.channels,
                "dtype": args.dtype,
                "calls": args.calls,
                "edge_chunk": args.edge_chunk,
                "chunk_from": args.chunk_from,
                "threads": args.threads,
                "allocator": args.allocator,
            }
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
            try:
                p = subprocess.run(
                    cmd,
                    env=worker_env(args.allocator, args.threads),
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                )
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
                r = (
                    json.loads(lines[-1][7:])
                    if lines
                    else {**cfg, "error": f"rc {p.returncode}: " + " | ".join(p.stderr.strip().splitlines()[-3:])}
                )
            except subprocess.TimeoutExpired:
                r = {**cfg, "error": f"timed out after {args.timeout} s"}
            r["load_after"] = machine_state()
            results.append(r)
            print(json.dumps(r), flush=True)
            with open(out_path, "w") as f:
                json.dump({"env": env, "results": results}, f, indent=1)
            if "error" in r:
                break  # larger sizes of this system would fail the same way
    print("\n| system | atoms | edges | ms / call | neighbour list ms | µs / atom | peak RSS GiB | chunked |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['kind']} n={r['n']} | | | error: {r['error'][:60]} | | | | |")
            continue
        print(
            f"| {r['kind']} | {r['n_atoms']:,} | {r['n_edges']:,} | {r['median_ms']:.0f} | "
            f"{r['neighbour_list_ms']:.0f} | {r['us_per_atom']:.0f} | {r['peak_rss_gib']:.2f} | "
            f"{'yes' if r['edge_chunk_used'] else 'no'} |"
        )
    print("wrote", out_path)


if __name__ == "__main__":
    main()
