"""One energy + forces call of SINet on an fcc Cu cell: the A/B of two code versions.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
    MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true" \
        PYTHONPATH=/path/to/worktree/of/the/old/commit python benchmarks/ab_energy_forces.py --label old
        python benchmarks/ab_energy_forces.py --label new

Builds ``SINet(["Cu"], lmax, channels=64, num_layers, cutoff=5)`` (``--num-layers``, default 2) with seed 0 (the same
weights in both versions when the parameters are the same), a rattled fcc Cu cell of
``4 n^3`` atoms, its graph once, and times ``model(graph)`` (energy and forces by autograd,
no ASE, no neighbour list) after three untimed calls (``--compile``: through
``SINet.enable_compile()``, the first of them compiling). Prints the median and the energy
and first force, so that the two versions can be checked to compute the same thing. Run
the two versions alternately, several rounds, so that a change in machine load hits both.
"""

import argparse
import time

import numpy as np
import torch
from ase.build import bulk

from sinet_ase import SINet
from sinet_ase.graph import atoms_to_graph


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lmax", type=int, default=1)
    ap.add_argument("--num-layers", type=int, default=2, help="Scalar Interaction layers after the embedding")
    ap.add_argument("--cells", type=int, default=6, help="n: the cell is n x n x n cubic fcc cells (4 n^3 atoms)")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--compile", action="store_true", help="SINet.enable_compile() (inductor) before timing")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="after timing, print the torch profiler's ROWS costliest operators of one call "
        "(self CPU time, by input shapes)",
    )
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SINet(["Cu"], lmax=args.lmax, channels=64, num_layers=args.num_layers, cutoff=5.0)
    model = model.to(getattr(torch, args.dtype)).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((args.cells,) * 3)
    atoms.rattle(0.05, seed=1)
    graph = atoms_to_graph(atoms, 5.0, ["Cu"])
    if args.compile:
        model.enable_compile()
    for _ in range(3):
        out = model(graph)
    times = []
    for _ in range(args.calls):
        start = time.perf_counter()
        out = model(graph)
        times.append(time.perf_counter() - start)
    mode = "compiled" if args.compile else "eager"
    print(
        f"{args.label} {mode} L={args.lmax} T={args.num_layers} {args.dtype} atoms={len(atoms)} edges={graph.edge_index.shape[1]} "
        f"median {np.median(times) * 1e3:.1f} ms  energy {out['energy'].item():.6f}  "
        f"force[0] {np.round(out['forces'][0].tolist(), 8).tolist()}",
        flush=True,
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            model(graph)
        print(
            prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total",
                row_limit=args.profile,
                max_name_column_width=40,
                max_shapes_column_width=70,
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
