"""Interleaved A/B of the ways to run the network, one energy + forces call on a fixed graph.

Run (from the repository root, in the project venv)::

    python benchmarks/ab_fastpath.py                       # ethanol and aspirin, float64, 1 thread
    python benchmarks/ab_fastpath.py --molecules aspirin --dtype float32 --threads 2
    python benchmarks/ab_fastpath.py --molecules cu108 cu864 --dtype float32 --rounds 15 --calls 1

Variants, each a ``SINet.forward(graph)`` (forces by autograd, as the calculator calls it) of
the shipped potential (fcc Cu: ``bench_md.py``'s ``sinet-l1t1``, random weights) with another
network in ``model._compiled_network``:

* ``eager``: no compilation;
* ``fwd+bwd``: ``SINet.enable_compile()``, the network's forward compiled, its backward
  compiled by AOTAutograd and run by the autograd engine (``compile=True`` before the fast path);
* ``joint``: the fast path (``sinet_ase.fastpath``), one graph for energies and edge-vector
  gradient, with ``cpp_wrapper`` off;
* ``joint+cpp``: the fast path as the calculator runs it (``DEVICE_OPTIONS``: C++ wrapper).

All variants are built first (compilations untimed), then called in turn, ``--rounds`` rounds
of ``--calls`` calls each, so that a change of machine load hits every variant alike; the
table gives the median per call of thread CPU time (less sensitive to other processes than
wall time) and of wall time, and the largest force difference from eager. Only ratios
within one run compare.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from bench_md import ForeignLoad, machine_state  # noqa: E402


def structure(name):
    """A shipped molecule, or ``cu<N>``: fcc Cu of N = 4 n^3 atoms (``bench_md.py``'s cells)."""
    from ase.build import bulk

    from sinet_ase.pretrained import shipped_structure

    if name.startswith("cu"):
        n = round((int(name[2:]) / 4) ** (1 / 3))
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)
    else:
        atoms = shipped_structure(name)
    atoms.rattle(0.01, seed=1)
    return atoms


def build(variant, dtype, potential, system):
    """The shipped potential for molecules; for Cu, ``bench_md.py``'s ``sinet-l1t1`` (L = 1,
    64 channels, one layer, random weights)."""
    import torch

    from sinet_ase import SINet, SINetCalculator, fastpath

    if system.startswith("cu"):
        torch.manual_seed(0)
        potential = SINet(
            ["Cu"],
            cutoff=5.0,
            lmax=1,
            channels=64,
            num_layers=1,
            num_radial=8,
            radial_hidden=64,
            mlp_hidden=64,
            avg_num_neighbors=42.0,
        )
    model = SINetCalculator(potential, dtype=dtype, compile=False).model
    if variant == "fwd+bwd":
        model.enable_compile()
    elif variant == "joint":
        fastpath.install(model, True, options={"cpp_wrapper": False})
    elif variant == "joint+cpp":
        fastpath.install(model, True)
    return model


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--molecules",
        nargs="*",
        default=["ethanol", "aspirin"],
        help="shipped molecules, or cu108, cu864, ... (fcc Cu, random L = 1 model)",
    )
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--variants", nargs="*", default=["eager", "fwd+bwd", "joint", "joint+cpp"])
    ap.add_argument("--potential", default="sinet-xtb-md17")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--calls", type=int, default=10)
    args = ap.parse_args()

    import torch

    from sinet_ase.graph import atoms_to_graph

    torch.set_num_threads(args.threads)
    print("load:", machine_state(), flush=True)
    for molecule in args.molecules:
        atoms = structure(molecule)
        runs = {}
        for variant in args.variants:
            model = build(variant, args.dtype, args.potential, molecule)
            graph = atoms_to_graph(atoms, model.cutoff, model.elements)
            start = time.perf_counter()
            forces = model(graph)["forces"]  # compiles
            runs[variant] = (model, graph, forces, [], [])
            print(f"{molecule} {variant}: first call {time.perf_counter() - start:.1f} s", flush=True)
        reference = runs[args.variants[0]][2]
        with ForeignLoad() as load:
            for _ in range(args.rounds):
                for variant, (model, graph, _, cpu, wall) in runs.items():
                    t, c = time.perf_counter(), time.thread_time()
                    for _ in range(args.calls):
                        model(graph)
                    cpu.append((time.thread_time() - c) / args.calls * 1e3)
                    wall.append((time.perf_counter() - t) / args.calls * 1e3)
        base = statistics.median(runs[args.variants[0]][3])
        print(
            f"\n{molecule} ({len(atoms)} atoms, {graph.edge_index.shape[1]} edges), {args.dtype}, "
            f"{args.threads} thread(s), foreign load {load.cores:.2f} cores:\n"
        )
        print(
            f"| variant | thread CPU ms / call | wall ms / call | {args.variants[0]} / variant (CPU) "
            "| max force difference |"
        )
        print("|---|---|---|---|---|")
        for variant, (model, graph, forces, cpu, wall) in runs.items():
            cpu_ms, wall_ms = statistics.median(cpu), statistics.median(wall)
            diff = float((forces - reference).abs().max())
            print(f"| {variant} | {cpu_ms:.3f} | {wall_ms:.3f} | {base / cpu_ms:.2f}x | {diff:.1e} |")
        print(flush=True)


if __name__ == "__main__":
    main()
