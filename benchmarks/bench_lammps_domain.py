"""What bounds pair_style sinet on two processes, without LAMMPS: the work split and the machine.

Run (from the repository root, on an idle machine; the package is the one
``bench_lammps.py`` exports into its ``--out`` folder)::

    python benchmarks/bench_lammps_domain.py /tmp/sinet_bench/cu_sinet_l2_float32_t1.pt2

The lower z-half of fcc Cu ``n^3`` (``--size``, default 12: 6,912 atoms, positions rattled
by 0.02 Å, seed 1; the half of the atoms lowest in z) as ``pair_style sinet`` gives it to the model: the half's atoms, the other
atoms within one cutoff (one node each), the edges into the half's atoms; the halo exchange
is replaced by zeros (same work, no communication). One thread, the package run in Python
(``sinet_ase.deploy.load_exported``), median of ``--reps`` calls after one warm-up:

* ``work split``: the whole structure's call over the domain's call (2 would be a perfect
  split; the domain's ghost nodes and its share of the edges set it);
* ``two at once``: the domain's call in two processes at the same time against one alone
  (no communication: what the two processes of a 2-core machine cost each other through
  the memory system they share).

Output: a table and ``--out`` (JSON).
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lammps import cu_crystal  # noqa: E402
from bench_md import ForeignLoad, cpu_name, git_commit  # noqa: E402


def inputs(size: int, cutoff: float):
    """The padded inputs of the whole structure and of its lower z-half, and their sizes."""
    import numpy as np
    import torch

    from sinet_ase.deploy import domain_inputs, pad_graph
    from sinet_ase.graph import atoms_to_graph

    atoms = cu_crystal(size)
    atoms.rattle(0.02, seed=1)
    graph = atoms_to_graph(atoms, cutoff, ["Cu"])
    receiver, sender = graph.edge_index
    vectors = graph.pos[sender] - graph.pos[receiver] + graph.shifts @ graph.cell[0]
    n = len(atoms)
    species = torch.zeros(n, dtype=torch.long)
    whole = pad_graph(species, torch.ones(n, dtype=torch.float64), graph.edge_index, vectors, cutoff)
    local = np.zeros(n, dtype=bool)  # the half of the atoms lowest in z, as LAMMPS splits the box
    local[np.argsort(atoms.positions[:, 2], kind="stable")[: n // 2]] = True
    domain, atoms_of_node, kept = domain_inputs(species, graph.edge_index, vectors, torch.from_numpy(local), cutoff)
    sizes = {"atoms": n, "edges": int(vectors.shape[0]), "domain_local": int(local.sum())}
    sizes.update(domain_ghost_nodes=int(atoms_of_node.shape[0] - local.sum()), domain_edges=int(kept.sum()))
    return whole, domain, sizes


def time_calls(package: str, size: int, which: str, reps: int) -> float:
    """Median ms of ``which`` ("whole" or "domain") calls, in this process."""
    import torch

    from sinet_ase.deploy import load_exported
    from sinet_ase.ops import halo

    class Zeros(halo.Exchange):
        def fill(self, rows, num_nodes):
            return torch.cat([rows, rows.new_zeros((num_nodes - rows.shape[0],) + tuple(rows.shape[1:]))])

        def collect(self, grad, num_rows):
            return grad[:num_rows].clone()

    torch.set_num_threads(1)
    runner, metadata = load_exported(package)
    whole, domain, _ = inputs(size, float(metadata["cutoff"]))
    args = whole if which == "whole" else domain
    with contextlib.nullcontext() if which == "whole" else halo.exchange(Zeros()):
        runner(*args)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            runner(*args)
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def in_processes(args, which: str, count: int):
    """``time_calls`` in ``count`` worker processes started together: their medians."""
    command = [
        sys.executable,
        __file__,
        args.package,
        "--size",
        str(args.size),
        "--reps",
        str(args.reps),
        "--worker",
        which,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(count)]
    return [float(w.communicate()[0].strip().splitlines()[-1]) for w in workers]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("package", help="a package of sinet_ase.deploy.export_model (bench_lammps.py's)")
    parser.add_argument("--size", type=int, default=12, help="n of the n^3 conventional fcc cells")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--out", default="/tmp/sinet_bench/lammps_domain.json")
    parser.add_argument("--worker", choices=("whole", "domain"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(time_calls(args.package, args.size, args.worker, args.reps))
        return
    from sinet_ase.deploy import load_exported

    _, metadata = load_exported(args.package)
    _, _, sizes = inputs(args.size, float(metadata["cutoff"]))
    with ForeignLoad() as load:
        result = {
            "whole_ms": in_processes(args, "whole", 1)[0],
            "domain_alone_ms": in_processes(args, "domain", 1)[0],
            "domain_two_at_once_ms": in_processes(args, "domain", 2),
            "domain_alone_again_ms": in_processes(args, "domain", 1)[0],
        }
    alone = (result["domain_alone_ms"] + result["domain_alone_again_ms"]) / 2
    result["work_split"] = result["whole_ms"] / alone
    result["two_at_once_over_alone"] = statistics.mean(result["domain_two_at_once_ms"]) / alone
    result.update(
        sizes=sizes,
        dtype=metadata["dtype"],
        package=args.package,
        cpu=cpu_name(),
        commit=git_commit(),
        command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        foreign_load_cores=round(load.cores, 2),
        ld_preload=os.environ.get("LD_PRELOAD", ""),
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    for key, value in result.items():
        print(f"{key}: {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
