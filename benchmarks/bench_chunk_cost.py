"""Time of one energy + forces call with automatic edge chunks against the whole graph.

Each row: one structure, one model, ``SINetCalculator(edge_chunk_size=auto_chunk_size(model))``
(the chunks ``"auto"`` uses above its threshold) against ``edge_chunk_size=None`` (the whole
graph), eager, float64, alternating calls (``--calls`` of each after one untimed call), the
fastest call of each. What the threshold of ``"auto"`` (:data:`sinet_ase.memory.WHOLE_GRAPH_SHARE`)
is chosen from. Run on an idle machine::

    python benchmarks/bench_chunk_cost.py --threads 1 2
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_md import SINET_CONFIG, ForeignLoad, machine_state  # noqa: E402
from bench_scaling import cu_cell, water_box  # noqa: E402


def systems():
    """(name, atoms, model) for the rows: Cu 864 with ``bench_md``'s L = 2, 64-channel model,
    and 1,029 atoms of water with the shipped potential (both above the 2 GiB floor)."""
    import torch

    from sinet_ase import SINet
    from sinet_ase.pretrained import default_potential, pretrained_path

    torch.manual_seed(0)
    cu_model = SINet(elements=["Cu"], lmax=2, avg_num_neighbors=40.0, **SINET_CONFIG)
    yield "Cu 864, L = 2, 64 channels", cu_cell(6), cu_model
    yield "water 1,029, sinet-xtb-md17", water_box(7), str(pretrained_path(default_potential()))


def time_pair(atoms, model, calls):
    from sinet_ase import SINetCalculator
    from sinet_ase.memory import auto_chunk_size

    whole = SINetCalculator(model, compile=False, edge_chunk_size=None)
    chunked = SINetCalculator(model, compile=False, edge_chunk_size=auto_chunk_size(whole.model))
    times = {"whole": [], "chunks": []}
    for calc in (whole, chunked):  # untimed first calls
        calc.get_forces(atoms)
    for k in range(calls):
        for name, calc in (("whole", whole), ("chunks", chunked)):
            atoms.positions[k % len(atoms), 0] += 1e-4
            start = time.perf_counter()
            calc.get_forces(atoms)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(t) for name, t in times.items()}, chunked.model.backbone.edge_chunk_size


def main():
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON file")
    args = ap.parse_args()
    records = []
    start = machine_state()
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, atoms, model in systems():
            with ForeignLoad() as load:
                ms, chunk = time_pair(atoms, model, args.calls)
            record = {
                "system": name,
                "atoms": len(atoms),
                "threads": threads,
                "whole_ms": round(ms["whole"], 1),
                "chunks_ms": round(ms["chunks"], 1),
                "chunk_edges": chunk,
                "chunks_over_whole": round(ms["chunks"] / ms["whole"], 3),
                "foreign_load_cores": round(load.cores, 3),
            }
            print(json.dumps(record), flush=True)
            records.append(record)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"start": start, "end": machine_state(), "argv": sys.argv, "records": records}, handle, indent=1)


if __name__ == "__main__":
    main()
