"""Peak memory of one energy + forces call of a shipped potential against the atom count.

Run (from the repository root, in the project venv)::

    python benchmarks/bench_memory.py                         # 1k, 10k, 100k atoms, float64
    python benchmarks/bench_memory.py --sizes 7 15 --chunks auto none 2000 --dtype float32

System: liquid-density water boxes (``bench_scaling.water_box``: one H2O per 29.9 Å^3,
randomly rotated on a cubic lattice, about 54 neighbours per atom within 5 Å), ``k^3``
molecules for each ``--sizes k`` (7, 15, 33: 1,029, 10,125 and 107,811 atoms). Each point
runs in a fresh worker process with one thread (``torch.set_num_threads(1)``, OMP and MKL
likewise), so its peak resident memory (``ru_maxrss``) is its own: load
``SINetCalculator(--model, dtype, edge_chunk_size=<chunk>)``, build the box, then one
``get_forces()``. Reported per point: atoms, edges, the chunk size in use, the calculator's
estimate (:func:`sinet_ase.memory.estimate_call_bytes`), the resident memory before the call
and the peak, and wall and CPU seconds of the call. A chunk setting whose estimate exceeds
the memory available is refused before the call
(:class:`~sinet_ase.memory.InsufficientMemoryError`); the row then shows the message.

Memory numbers, unlike timings, do not depend on the machine's load; the seconds do (one
thread, so CPU seconds are the less noisy ones). ``--allocator jemalloc`` preloads jemalloc
as the other benchmarks do; the default is the C library's malloc, which users get.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_md import machine_state, worker_env  # noqa: E402


def run_worker(cfg):
    import numpy as np
    import torch

    from bench_scaling import water_box
    from sinet_ase import SINetCalculator
    from sinet_ase.graph import atoms_to_graph
    from sinet_ase.memory import InsufficientMemoryError, estimate_call_bytes

    torch.set_num_threads(1)
    chunk = cfg["chunk"] if cfg["chunk"] in ("auto", None) else int(cfg["chunk"])
    calc = SINetCalculator(cfg["model"], dtype=cfg["dtype"], edge_chunk_size=chunk)
    atoms = water_box(cfg["k"])
    record = {
        **cfg,
        "n_atoms": len(atoms),
        "rss_before_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    atoms.calc = calc
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        forces = atoms.get_forces()
        record.update(
            seconds=time.perf_counter() - wall,
            cpu_seconds=time.process_time() - cpu,
            peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            energy_per_atom=atoms.get_potential_energy() / len(atoms),
            finite_forces=bool(np.isfinite(forces).all()),
        )
    except InsufficientMemoryError as err:
        record.update(refused=str(err), seconds=time.perf_counter() - wall)
    # counted after the call, so that this graph's memory is not in the peak
    num_edges = int(atoms_to_graph(atoms, calc.model.cutoff).edge_index.shape[1])
    used = calc.model.backbone.chunk_size_for(num_edges)  # None: the whole graph at once
    record.update(
        n_edges=num_edges,
        edge_chunk_size=used,
        chunked=used is not None,
        estimate_gib=estimate_call_bytes(calc.model, len(atoms), num_edges, used) / 2**30,
    )
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sinet-xtb-md17", help="shipped potential or model file")
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[7, 15, 33], help="water boxes of k^3 molecules (3 k^3 atoms)"
    )
    ap.add_argument(
        "--chunks", nargs="+", default=["auto"], help="edge_chunk_size settings: auto, none or a number of edges"
    )
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--allocator", default="glibc", choices=["glibc", "jemalloc"])
    ap.add_argument("--timeout", type=float, default=7200.0)
    ap.add_argument("--out", default="/tmp/sinet_bench")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return

    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, f"memory_{args.model}_{args.dtype}.json")
    env = {"argv": sys.argv, "start": machine_state(), "allocator": args.allocator}
    results = []
    for k in args.sizes:
        for chunk in args.chunks:
            cfg = {"model": args.model, "k": k, "dtype": args.dtype, "chunk": None if chunk == "none" else chunk}
            cmd = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--worker", json.dumps(cfg)]
            try:
                p = subprocess.run(
                    cmd, env=worker_env(args.allocator, 1), capture_output=True, text=True, timeout=args.timeout
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

    print(f"\n{args.model}, {args.dtype}, one thread, {args.allocator} malloc\n")
    print("| atoms | edges | edge_chunk_size | estimate GiB | RSS before GiB | peak RSS GiB | s (CPU s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        head = f"| {r.get('n_atoms', 3 * r['k'] ** 3):,} | {r.get('n_edges', 0):,} | {r['chunk']}"
        if "error" in r:
            print(f"{head} | | | error: {r['error'][:80]} | |")
        elif "refused" in r:
            print(
                f"{head} | {r['estimate_gib']:.2f} | {r['rss_before_gib']:.2f} | refused in "
                f"{r['seconds']:.1f} s: {r['refused'][:90]}... | |"
            )
        else:
            used = f" ({r['edge_chunk_size']:,})" if r["chunked"] else " (whole graph)"
            print(
                f"{head}{used} | {r['estimate_gib']:.2f} | {r['rss_before_gib']:.2f} | "
                f"{r['peak_rss_gib']:.2f} | {r['seconds']:.0f} ({r['cpu_seconds']:.0f}) |"
            )
    print("wrote", out_path)


if __name__ == "__main__":
    main()
