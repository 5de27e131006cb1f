"""Throughput of batched ``sinet_ase.predict`` against one ``SINetCalculator`` call per structure.

Run on an idle machine (from the repository root, in the project venv)::

    python benchmarks/bench_predict.py                              # xTB test frames, float32 and float64
    python benchmarks/bench_predict.py --quick                      # seconds: checks that it runs
    python benchmarks/bench_predict.py --sets xtb,molecules,cu --batch-sizes 1,8,32,128
    python benchmarks/bench_predict.py --device cuda

What is timed (wall clock, ``time.perf_counter``, best of ``--repeats`` passes over
the whole set after one untimed warm-up pass), for each dtype of ``--dtypes``:

* ``one_by_one``: a fresh ``atoms.copy()`` per structure with one shared
  ``SINetCalculator`` (so no result is served from the cache),
  ``atoms.get_potential_energy(); atoms.get_forces()`` (stress first for the periodic
  set): what a user's loop over frames does;
* ``predict(batch_size=B)`` for each ``B`` of ``--batch-sizes``, the same properties, given
  the calculator's model (already cast and frozen, so neither side times model loading).

Both include the neighbour lists and the graph building, so the figures (frames/s and
atoms/s) are the end-to-end throughput a user sees. The network runs eagerly unless
``--compile auto|on`` (the calculator's ``compile``; a compiled network also serves
``predict``). The two results are compared (maximum absolute energy and force difference)
so that a fast but wrong path cannot pass.

Sets:

* ``xtb`` (default): ``--frames`` frames of the held-out xTB test data
  (``training/data/xtb_md17_heldout/test_500K/*.extxyz.xz``: ten MD17 molecules, 9-24
  atoms, 300 frames each at 500 K), taken in turn from each molecule so that a batch mixes
  molecules, evaluated with the shipped potential ``--potential`` (``sinet-xtb-md17``);
* ``molecules``: the ten molecules shipped with the package
  (``sinet_ase/potentials/structures.extxyz``; 9-21 atoms) rattled by 0.05 Å,
  ``--count`` frames in all, with ``--potential``;
* ``cu``: fcc Cu cells of 32 atoms (``bulk('Cu', 'fcc', a=3.61, cubic=True) * (2, 2, 2)``),
  rattled and strained, with a random-weight SINet (cutoff 5 Å, lmax 2, 64 channels,
  2 layers, ``torch.manual_seed(0)``), with stress.

The machine (CPU, threads, allocator, load average, torch version) is recorded, and with
each figure the load (``foreign_load_cores``: cores that other processes used while it was
measured); figures taken while it exceeds about 0.25 cores are not comparable.
``--wait-idle S`` waits up to S seconds for an idle machine before each measurement.
Results go to ``--out`` (JSON, written atomically; ``--quick`` writes to a temporary
folder unless ``--out`` is given) and a table on stdout.
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.io import read  # noqa: E402

from bench_md import ForeignLoad, allocator_name, cpu_name, machine_state, wait_for_idle  # noqa: E402
from sinet_ase import SINet, SINetCalculator, predict  # noqa: E402
from sinet_ase.files import atomic_write_text  # noqa: E402
from sinet_ase.pretrained import pretrained_path, shipped_structure, shipped_structure_names  # noqa: E402

XTB_TEST = os.path.join(ROOT, "training", "data", "xtb_md17_heldout", "test_500K")
SETS = ("xtb", "molecules", "cu")
#: keys of every result row (predict rows add the differences to the one-by-one results)
ROW_KEYS = (
    "set",
    "dtype",
    "method",
    "batch_size",
    "seconds",
    "frames_per_s",
    "atoms_per_s",
    "speedup",
    "frames",
    "atoms",
    "foreign_load_cores",
)


def xtb_set(count, folder=XTB_TEST):
    """``count`` frames of the held-out xTB test files, one molecule after the other in turn."""
    files = sorted(glob.glob(os.path.join(folder, "*.extxyz.xz")))
    if not files:
        raise SystemExit(f"no *.extxyz.xz files in {folder}: the held-out xTB data ships with the repository")
    per_file = [read(path, f":{-(-count // len(files))}") for path in files]  # as many as needed
    frames = []
    for k in range(max(len(f) for f in per_file)):
        for molecule_frames in per_file:
            if k < len(molecule_frames) and len(frames) < count:
                atoms = molecule_frames[k].copy()  # without the stored xTB labels
                frames.append(atoms)
    if len(frames) < count:
        raise SystemExit(f"--frames {count}: the xTB test data hold {len(frames)} frames")
    return frames


def molecule_set(count, seed=0):
    rng = np.random.default_rng(seed)
    names = shipped_structure_names()
    frames = []
    for k in range(count):
        atoms = shipped_structure(names[k % len(names)])
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def copper_set(count, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(scale=0.01, size=(3, 3))), scale_atoms=True)
        frames.append(atoms)
    return frames


def copper_model():
    torch.manual_seed(0)
    return SINet(elements=["Cu"], cutoff=5.0, lmax=2, channels=64, num_layers=2)


def one_by_one(calc, frames, stress):
    energy, forces = [], []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        if stress:  # first, so that one model call serves stress, energy and forces
            atoms.get_stress()
        energy.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    return np.array(energy), forces


def timed(fn, repeats, wait_idle):
    fn()  # warm-up: first-call allocations, lazy imports
    best, load = float("inf"), []
    for _ in range(repeats):
        wait_for_idle(wait_idle)
        with ForeignLoad() as fl:
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        load.append(round(fl.cores, 2))
    return best, load, result


def bench_set(name, frames, model, stress, dtype, args):
    properties = ("energy", "forces", "stress") if stress else ("energy", "forces")
    calc = SINetCalculator(model, dtype=dtype, device=args.device, compile=args.compile)
    seconds, load, (ref_energy, ref_forces) = timed(
        lambda: one_by_one(calc, frames, stress), args.repeats, args.wait_idle
    )
    rows = [dict(method="one_by_one", batch_size=1, seconds=seconds, foreign_load_cores=load)]
    for batch_size in args.batch_sizes:
        seconds, load, out = timed(
            lambda: predict(
                calc.model, frames, batch_size=batch_size, properties=properties, dtype=dtype, device=args.device
            ),
            args.repeats,
            args.wait_idle,
        )
        rows.append(
            dict(
                method="predict",
                batch_size=batch_size,
                seconds=seconds,
                foreign_load_cores=load,
                max_energy_diff_eV=float(np.abs(out["energy"] - ref_energy).max()),
                max_force_diff_eV_per_A=float(max(np.abs(f - g).max() for f, g in zip(out["forces"], ref_forces))),
            )
        )
    atoms_total = sum(len(a) for a in frames)
    for row in rows:
        row.update(
            set=name,
            dtype=dtype,
            frames=len(frames),
            atoms=atoms_total,
            frames_per_s=len(frames) / row["seconds"],
            atoms_per_s=atoms_total / row["seconds"],
            speedup=rows[0]["seconds"] / row["seconds"],
        )
    return rows


def print_table(rows):
    print(
        f"{'set':10s} {'dtype':8s} {'method':11s} {'batch':>5s} {'s':>8s} {'frames/s':>9s} {'atoms/s':>9s} "
        f"{'speedup':>7s} {'foreign cores':>14s} {'max |dE|':>9s} {'max |dF|':>9s}"
    )
    for r in rows:
        print(
            f"{r['set']:10s} {r['dtype']:8s} {r['method']:11s} {r['batch_size']:5d} {r['seconds']:8.3f} "
            f"{r['frames_per_s']:9.1f} {r['atoms_per_s']:9.0f} {r['speedup']:7.2f} "
            f"{max(r['foreign_load_cores']):14.2f} "
            f"{r.get('max_energy_diff_eV', 0.0):9.1e} {r.get('max_force_diff_eV_per_A', 0.0):9.1e}"
        )


def _list(text, kind, what):
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{what} must be a comma-separated list, got {text!r}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="xtb", help=f"comma-separated: {', '.join(SETS)} (default: xtb)")
    parser.add_argument("--frames", type=int, default=600, help="frames of the xtb set (default: 600)")
    parser.add_argument("--count", type=int, default=512, help="molecules in the molecule set (default: 512)")
    parser.add_argument("--cu-count", type=int, default=64, help="Cu cells in the cu set (default: 64)")
    parser.add_argument("--batch-sizes", default="1,8,32", help="predict's batch sizes (default: 1,8,32)")
    parser.add_argument("--potential", default="sinet-xtb-md17", help="shipped potential (xtb, molecules)")
    parser.add_argument("--dtypes", default="float32,float64", help="comma-separated (default: float32,float64)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", choices=["off", "auto", "on"], default="off", help="the calculator's compile")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, the best counts (default: 3)")
    parser.add_argument("--wait-idle", type=float, default=0.0, help="seconds to wait for an idle machine")
    parser.add_argument("--quick", action="store_true", help="tiny sets, one repeat: checks that it runs")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/predict.json)")
    args = parser.parse_args(argv)
    args.batch_sizes = _list(args.batch_sizes, int, "--batch-sizes")
    dtypes = _list(args.dtypes, str, "--dtypes")
    sets = _list(args.sets, str, "--sets")
    for name in sets:
        if name not in SETS:
            parser.error(f"unknown set {name!r}; choose from {', '.join(SETS)}")
    for dtype in dtypes:
        if dtype not in ("float32", "float64"):
            parser.error(f"--dtypes takes float32 and float64, got {dtype!r}")
    args.compile = {"off": False, "on": True}.get(args.compile, args.compile)
    if args.quick:
        args.frames, args.count, args.cu_count, args.repeats = min(args.frames, 16), 20, 4, 1
        args.batch_sizes = [b for b in args.batch_sizes if b <= 8] or [1]
    if args.out is None:
        folder = os.path.join(tempfile.gettempdir(), "sinet_bench") if args.quick else os.path.join(HERE, "results")
        args.out = os.path.join(folder, "predict_quick.json" if args.quick else "predict.json")
    torch.set_num_threads(args.threads)

    state = {
        "start": machine_state(),
        "cpu": cpu_name(),
        "threads": args.threads,
        "allocator": allocator_name(),
        "torch": torch.__version__,
        "argv": sys.argv if argv is None else ["bench_predict.py", *argv],
    }
    rows = []
    for name in sets:
        if name == "xtb":
            frames, model, stress = xtb_set(args.frames), str(pretrained_path(args.potential)), False
        elif name == "molecules":
            frames, model, stress = molecule_set(args.count), str(pretrained_path(args.potential)), False
        else:
            frames, model, stress = copper_set(args.cu_count), copper_model(), True
        for dtype in dtypes:
            rows += bench_set(name, frames, model, stress, dtype, args)
    state["end"] = machine_state()
    print_table(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    result = {
        "machine": state,
        "device": args.device,
        "compile": args.compile,
        "potential": args.potential,
        "quick": args.quick,
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
