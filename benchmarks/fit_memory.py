"""Measure the peak memory of energy + forces calls on small periodic boxes and fit the
per-atom and per-pair bytes that :mod:`sinet_ase.memory` assumes.

Run (from the repository root, in the project venv)::

    OMP_NUM_THREADS=1 python benchmarks/fit_memory.py                # float64, default sizes
    OMP_NUM_THREADS=1 python benchmarks/fit_memory.py --points 8:1 12:1 10:2 --dtype float32

Each point ``k:s`` is a water box of ``k^3`` molecules (``bench_scaling.water_box``) squeezed
to ``s`` times liquid density (so that pairs per atom vary, ``s``: about 54 s neighbours per
atom within 5 Å; the structure is unphysical, which memory does not care about), evaluated
by ``SINetCalculator(--model, dtype, edge_chunk_size="auto", out_of_domain="ignore")`` in a
fresh worker process with one thread. The worker resets the kernel's high-water mark
(``/proc/self/clear_refs`` 5) after building the box, so ``VmHWM - VmRSS`` is the call's own
peak: neighbour list, graph, network, gradients. It prints one JSON line per point and a
least-squares fit ``peak = a N + b E + c`` (N atoms, E directed pairs within the cutoff)
beside :func:`sinet_ase.memory.estimate_call_bytes` for each point. Memory numbers do not
depend on the machine's load (timings do, and are not reported).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_WORKER = """
import json, sys
import numpy as np
import torch
sys.path.insert(0, {bench!r})
from bench_scaling import water_box
from sinet_ase import SINetCalculator
from sinet_ase.graph import atoms_to_graph
from sinet_ase.memory import estimate_call_bytes, periodic_edge_estimate

torch.set_num_threads(1)
cfg = json.loads(sys.argv[1])
calc = SINetCalculator(cfg["model"], dtype=cfg["dtype"], out_of_domain="ignore")
atoms = water_box(cfg["k"])
scale = cfg["density"] ** (-1.0 / 3.0)
atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)

def status(key):
    with open("/proc/self/status") as handle:
        return int(next(l for l in handle if l.startswith(key + ":")).split()[1]) * 1024

def reset():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return status("VmRSS")

before = reset()
graph = atoms_to_graph(atoms, calc.model.cutoff, calc.model.elements)
graph_peak = status("VmHWM") - before
edges = int(graph.edge_index.shape[1])
del graph
atoms.calc = calc
before = reset()
forces = atoms.get_forces()
call_peak = status("VmHWM") - before
size = calc.model.backbone.chunk_size_for(edges)
print("RESULT " + json.dumps({{**cfg, "atoms": len(atoms), "edges": edges, "chunk": size,
      "density_estimate": periodic_edge_estimate(len(atoms), atoms.cell.array, calc.model.cutoff),
      "graph_peak": graph_peak, "call_peak": call_peak, "finite": bool(np.isfinite(forces).all()),
      "estimate": estimate_call_bytes(calc.model, len(atoms), edges, size)}}), flush=True)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sinet-xtb-md17")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument(
        "--points",
        nargs="+",
        default=["8:1", "12:1", "16:1", "20:1", "8:2", "12:2"],
        help="k:density pairs (k^3 water molecules at density times liquid water's)",
    )
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    for variable in ("LD_PRELOAD", "MALLOC_CONF"):  # the C library's malloc, which users get
        env.pop(variable, None)
    rows = []
    for point in args.points:
        k, density = point.split(":")
        cfg = {"model": args.model, "dtype": args.dtype, "k": int(k), "density": float(density)}
        try:
            out = subprocess.run(
                [sys.executable, "-W", "ignore", "-c", _WORKER.format(bench=HERE), json.dumps(cfg)],
                capture_output=True,
                text=True,
                timeout=args.timeout,
                env=env,
                cwd=ROOT,
            )
        except subprocess.TimeoutExpired:
            print(json.dumps({**cfg, "error": "timeout"}), flush=True)
            continue
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            print(json.dumps({**cfg, "error": out.stderr[-500:]}), flush=True)
            continue
        rows.append(json.loads(lines[-1][7:]))
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) < 3:
        return
    import numpy as np

    design = np.array([[r["atoms"], r["edges"], 1.0] for r in rows])
    for key in ("call_peak", "graph_peak"):
        coef, *_ = np.linalg.lstsq(design, np.array([r[key] for r in rows], dtype=float), rcond=None)
        print(f"{key}: {coef[0]:.0f} B/atom + {coef[1]:.1f} B/pair + {coef[2] / 2**20:.0f} MiB")
    print("| atoms | pairs | chunk | graph peak MiB | call peak MiB | estimate MiB | peak / estimate |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['atoms']:,} | {r['edges']:,} | {r['chunk']} | {r['graph_peak'] / 2**20:.0f} | "
            f"{r['call_peak'] / 2**20:.0f} | {r['estimate'] / 2**20:.0f} | "
            f"{r['call_peak'] / r['estimate']:.2f} |"
        )


if __name__ == "__main__":
    main()
