#!/usr/bin/env python
"""Generate a GFN2-xTB energy+force dataset for the ten revised-MD17 molecules.

The labels are GFN2-xTB (tblite), NOT DFT: this is a cheap, fully reproducible
stand-in for rMD17 (PBE/def2-SVP) with the same molecules and a similar
sampling protocol (classical MD at 500 K).

Protocol, per molecule (deterministic for a given --seed):

1. 3-D structure from SMILES with RDKit: AddHs, ETKDGv3 (randomSeed = molecule
   seed), MMFF94 optimisation.
2. Relaxation with GFN2-xTB (ASE BFGS, fmax = 0.01 eV/A).
3. Langevin MD with ASE at ``--temperature`` (500 K): timestep 0.5 fs, friction
   0.01 /fs, fixcm=False, initial Maxwell-Boltzmann velocities at that temperature.
   Velocities use ``np.random.default_rng(seed)``, the Langevin noise uses
   ``np.random.default_rng(seed + 1)``. ``--structure-seed`` (default: ``--seed``) seeds
   the conformer of step 1 on its own, so held-out trajectories start from the training
   data's conformers with new velocities and noise.
4. The first ``--equil`` steps (default 2000 = 1 ps) are discarded; then one
   frame is kept every ``--every`` steps until ``--frames`` frames are kept.
5. Every kept frame is re-labelled with a *fresh* TBLite calculator (no SCF
   restart from the previous MD step), at the positions rounded exactly as
   they are stored in the extxyz file (8 decimals), so a single-point
   re-evaluation of a stored frame reproduces its stored energy/forces.

Outputs in ``--outdir`` (default ``training/data/xtb_md17``):

* ``<molecule>.extxyz.xz``: ASE extended XYZ, xz-compressed; energy in eV,
  forces in eV/A; info keys ``molecule``, ``md_step``, ``seed``. Read with
  ``read_frames(path)`` below (decompress to memory, then ``ase.io.read``);
  plain ``ase.io.read(path, index=':')`` gives the same frames but is
  quadratic in the frame count on compressed files (minutes per file).
  ``atoms.get_potential_energy()`` / ``atoms.get_forces()`` give the labels.
* ``manifest.json``: per molecule n_atoms, formula, frames, spacing, seed,
  seconds, mean kinetic temperatures, sha256 of the data file.

Files are written atomically (temporary file + ``os.replace``). A molecule
whose output file already exists is skipped, so an interrupted run can be
resumed by running the same command again.

Usage (one core)::

    OMP_NUM_THREADS=1 python training/make_xtb_md17.py
    OMP_NUM_THREADS=1 python training/make_xtb_md17.py --molecules ethanol --frames 50
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# Keep BLAS/OpenMP inside tblite on one thread unless the caller says otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase  # noqa: E402
import ase.io  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta  # noqa: E402
except ImportError:  # older ASE
    from ase.md.velocitydistribution import (  # noqa: E402
        MaxwellBoltzmannDistribution as thermalize_momenta,
    )
from ase.optimize import BFGS  # noqa: E402

# name -> SMILES (rMD17 molecule set; malonaldehyde in its Z-enol form and
# azobenzene trans, as in MD17)
MOLECULES: dict[str, str] = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "azobenzene": "c1ccc(cc1)/N=N/c1ccccc1",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O/C=C\\C=O",
    "naphthalene": "c1ccc2ccccc2c1",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "salicylic_acid": "OC(=O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=c1cc[nH]c(=O)[nH]1",
}

# Expected Hill formulas (checked at structure build time and in the tests).
FORMULAS: dict[str, str] = {
    "aspirin": "C9H8O4",
    "azobenzene": "C12H10N2",
    "benzene": "C6H6",
    "ethanol": "C2H6O",
    "malonaldehyde": "C3H4O2",
    "naphthalene": "C10H8",
    "paracetamol": "C8H9NO2",
    "salicylic_acid": "C7H6O3",
    "toluene": "C7H8",
    "uracil": "C4H4N2O2",
}

# xTB settings, all explicit (these are also tblite's defaults).
XTB_SETTINGS = dict(
    method="GFN2-xTB",
    accuracy=1.0,
    electronic_temperature=300.0,  # K (Fermi smearing)
    max_iterations=250,
    verbosity=0,
)

TEMPERATURE_K = 500.0
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.01
RELAX_FMAX = 0.01  # eV/A
POS_DECIMALS = 8  # ASE extxyz writes positions with "%16.8f"

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTDIR = REPO_ROOT / "training" / "data" / "xtb_md17"


def make_calc():
    from tblite.ase import TBLite

    return TBLite(**XTB_SETTINGS)


def molecule_seed(base_seed: int, name: str) -> int:
    """Per-molecule seed, independent of which molecules are selected."""
    return base_seed + 10 * list(MOLECULES).index(name)


def build_structure(name: str, seed: int) -> Atoms:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(MOLECULES[name]))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"RDKit embedding failed for {name}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    atoms = Atoms(
        [a.GetSymbol() for a in mol.GetAtoms()],
        positions=mol.GetConformer().GetPositions(),
    )
    formula = atoms.get_chemical_formula(mode="hill")
    if formula != FORMULAS[name]:
        raise RuntimeError(f"{name}: formula {formula} != {FORMULAS[name]}")
    return atoms


def relax(atoms: Atoms) -> int:
    atoms.calc = make_calc()
    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=RELAX_FMAX, steps=2000)
    fmax = np.abs(atoms.get_forces()).max()
    if not np.all(np.linalg.norm(atoms.get_forces(), axis=1) < RELAX_FMAX):
        raise RuntimeError(f"relaxation did not converge (max |F| component {fmax})")
    return opt.nsteps


def stored_positions(positions: np.ndarray) -> np.ndarray:
    """Positions exactly as they come back from the extxyz file."""
    return np.array([[float(f"{x:.{POS_DECIMALS}f}") for x in row] for row in positions])


def label(numbers: np.ndarray, positions: np.ndarray):
    """Energy (eV) and forces (eV/A) from a fresh calculator (no SCF restart)."""
    a = Atoms(numbers=numbers, positions=positions)
    a.calc = make_calc()
    e = a.get_potential_energy()
    f = a.get_forces()
    return float(e), np.array(f)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_xz_atomic(path: Path, frames: list[Atoms]) -> None:
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    data = buf.getvalue().encode()
    tmp = path.with_name(f".{path.name}.partial")
    with lzma.open(tmp, "wb", preset=9 | lzma.PRESET_EXTREME) as fh:
        fh.write(data)
    os.replace(tmp, path)


def read_frames(path, index=":"):
    """Read an ``.extxyz.xz`` file quickly.

    ``ase.io.read(path, index=':')`` works on ``.xz`` files directly, but
    ASE's extxyz reader seeks backwards once per frame and every backward
    seek in an xz stream restarts decompression from the beginning, so it is
    quadratic in the number of frames (minutes for 2000 frames). Decompressing
    into memory first gives the same frames in about a second.
    """
    with lzma.open(path, "rt") as fh:
        text = fh.read()
    return ase.io.read(io.StringIO(text), index=index, format="extxyz")


def load_manifest(outdir: Path) -> dict:
    p = outdir / "manifest.json"
    if p.exists():
        return json.loads(p.read_text())
    return {"molecules": {}}


def update_manifest(outdir: Path, generator: dict, name: str, entry: dict) -> None:
    """Re-read manifest.json, set one molecule's entry, write it atomically.

    Re-reading right before writing keeps entries written meanwhile by another
    process working on other molecules in the same output folder.
    """
    p = outdir / "manifest.json"
    manifest = load_manifest(outdir)
    manifest["generator"] = generator
    manifest["molecules"][name] = entry
    tmp = p.with_name(f".manifest.json.{os.getpid()}.partial")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)
    # also in the log, so an entry can be recovered if another (older) writer
    # overwrote the manifest
    print(f"MANIFEST_ENTRY {json.dumps(entry, sort_keys=True)}", flush=True)


def topology(atoms: Atoms) -> np.ndarray:
    from ase.neighborlist import natural_cutoffs, neighbor_list

    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    m = np.zeros((len(atoms), len(atoms)), dtype=bool)
    m[i, j] = True
    return m


def generate(name: str, args, outdir: Path) -> dict:
    seed = molecule_seed(args.seed, name)
    structure_seed = molecule_seed(args.seed if args.structure_seed is None else args.structure_seed, name)
    t0 = time.perf_counter()

    atoms = build_structure(name, structure_seed)
    nrelax = relax(atoms)
    e_min = atoms.get_potential_energy()
    ref_topo = topology(atoms)
    t_relax = time.perf_counter() - t0
    print(
        f"[{name}] {len(atoms)} atoms, relaxed in {nrelax} BFGS steps ({t_relax:.1f} s), E_min = {e_min:.6f} eV",
        flush=True,
    )

    thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(seed))
    dyn = Langevin(
        atoms,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=args.temperature,
        friction=FRICTION_PER_FS / units.fs,
        fixcm=False,
        rng=np.random.default_rng(seed + 1),
    )

    # kinetic temperature of every production step (after equilibration)
    temps_all: list[float] = []
    temps_eq: list[float] = []

    def record_t():
        (temps_eq if dyn.nsteps <= args.equil else temps_all).append(atoms.get_temperature())

    dyn.attach(record_t, interval=1)

    t_md0 = time.perf_counter()
    dyn.run(args.equil)
    print(
        f"[{name}] equilibrated {args.equil} steps "
        f"({time.perf_counter() - t_md0:.1f} s), "
        f"<T>_eq = {np.mean(temps_eq):.1f} K",
        flush=True,
    )

    numbers = atoms.get_atomic_numbers()
    frames: list[Atoms] = []
    temps_frames: list[float] = []
    n_topo_changed = 0
    t_label = 0.0
    for k in range(args.frames):
        dyn.run(args.every)
        pos = stored_positions(atoms.get_positions())
        tl = time.perf_counter()
        e, f = label(numbers, pos)
        t_label += time.perf_counter() - tl
        fr = Atoms(numbers=numbers, positions=pos)
        fr.info["molecule"] = name
        fr.info["md_step"] = int(dyn.nsteps)
        fr.info["seed"] = int(seed)
        fr.calc = SinglePointCalculator(fr, energy=e, forces=f)
        frames.append(fr)
        temps_frames.append(atoms.get_temperature())
        if not np.array_equal(topology(fr), ref_topo):
            n_topo_changed += 1
        if (k + 1) % max(1, args.frames // 10) == 0 or k + 1 == args.frames:
            el = time.perf_counter() - t0
            print(
                f"[{name}] {k + 1}/{args.frames} frames, md_step {dyn.nsteps}, "
                f"<T> so far {np.mean(temps_all):.1f} K, {el:.0f} s",
                flush=True,
            )

    energies = np.array([fr.get_potential_energy() for fr in frames])
    forces = np.array([fr.get_forces() for fr in frames])
    if not (np.all(np.isfinite(energies)) and np.all(np.isfinite(forces))):
        raise RuntimeError(f"{name}: non-finite labels")

    path = outdir / f"{name}.extxyz.xz"
    write_xz_atomic(path, frames)

    # Self-check: read back and re-evaluate a few frames from scratch.
    back = read_frames(path)
    assert len(back) == args.frames
    worst_e = worst_f = 0.0
    for idx in (0, len(back) // 2, len(back) - 1):
        e, f = label(back[idx].numbers, back[idx].positions)
        worst_e = max(worst_e, abs(e - back[idx].get_potential_energy()))
        worst_f = max(worst_f, np.abs(f - back[idx].get_forces()).max())
    if worst_e > 1e-6 or worst_f > 1e-6:
        raise RuntimeError(f"{name}: read-back check failed: dE={worst_e}, dF={worst_f}")

    seconds = time.perf_counter() - t0
    n_steps = int(dyn.nsteps)
    entry = {
        "molecule": name,
        "smiles": MOLECULES[name],
        "n_atoms": len(numbers),
        "formula": FORMULAS[name],
        "frames": len(frames),
        "spacing_steps": args.every,
        "spacing_fs": args.every * TIMESTEP_FS,
        "equilibration_steps": args.equil,
        "md_steps_total": n_steps,
        "seed": seed,
        "base_seed": args.seed,
        "relax_bfgs_steps": nrelax,
        "relaxed_energy_eV": e_min,
        "mean_T_equilibration_K": float(np.mean(temps_eq)),
        "mean_T_production_K": float(np.mean(temps_all)),
        "mean_T_sampled_frames_K": float(np.mean(temps_frames)),
        "std_T_sampled_frames_K": float(np.std(temps_frames)),
        "frames_with_changed_bond_topology": n_topo_changed,
        "energy_eV_mean": float(energies.mean()),
        "energy_eV_std": float(energies.std()),
        "force_eV_per_A_rms": float(np.sqrt((forces**2).mean())),
        "readback_max_abs_dE_eV": worst_e,
        "readback_max_abs_dF_eV_per_A": worst_f,
        "seconds": round(seconds, 1),
        "seconds_labelling": round(t_label, 1),
        "ms_per_md_step": round(1e3 * (seconds - t_relax - t_label) / n_steps, 2),
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    }
    print(
        f"[{name}] done: {len(frames)} frames, {seconds:.0f} s, "
        f"<T>_prod = {entry['mean_T_production_K']:.1f} K, "
        f"<T>_frames = {entry['mean_T_sampled_frames_K']:.1f} K, "
        f"{entry['bytes'] / 1e6:.2f} MB, topo-changed frames {n_topo_changed}",
        flush=True,
    )
    return entry


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--molecules",
        nargs="+",
        default=list(MOLECULES),
        choices=list(MOLECULES),
        metavar="NAME",
        help=f"subset of {', '.join(MOLECULES)} (default: all)",
    )
    p.add_argument("--frames", type=int, default=2000, help="frames per molecule")
    p.add_argument("--every", type=int, default=20, help="MD steps between kept frames (0.5 fs each)")
    p.add_argument("--equil", type=int, default=2000, help="discarded equilibration steps (0.5 fs each)")
    p.add_argument("--seed", type=int, default=1234, help="base random seed")
    p.add_argument(
        "--structure-seed", type=int, default=None, help="base seed of the starting conformers (default: --seed)"
    )
    p.add_argument("--temperature", type=float, default=TEMPERATURE_K, help="Langevin temperature in K (default 500)")
    p.add_argument("--outdir", type=Path, default=DEFAULT_OUTDIR)
    args = p.parse_args(argv)
    if args.every < 1 or args.frames < 1 or args.equil < 0:
        p.error("--every and --frames must be >= 1, --equil >= 0")

    outdir: Path = args.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    import tblite  # noqa: F401  (fail early if missing)
    from importlib.metadata import version

    generator = {
        "script": "training/make_xtb_md17.py",
        "labels": "GFN2-xTB (tblite) single points, NOT DFT",
        "xtb_settings": XTB_SETTINGS,
        "temperature_K": args.temperature,
        "structure_seed": args.structure_seed,
        "timestep_fs": TIMESTEP_FS,
        "friction_per_fs": FRICTION_PER_FS,
        "thermostat": "ase.md.langevin.Langevin(fixcm=False)",
        "relax": f"ase BFGS fmax={RELAX_FMAX} eV/A after RDKit ETKDGv3+MMFF94",
        "versions": {
            "python": platform.python_version(),
            "ase": ase.__version__,
            "tblite": version("tblite"),
            "rdkit": version("rdkit"),
            "numpy": np.__version__,
        },
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }

    t_all = time.perf_counter()
    for name in args.molecules:
        path = outdir / f"{name}.extxyz.xz"
        if path.exists():
            print(f"[{name}] {path} exists, skipping", flush=True)
            if name not in load_manifest(outdir)["molecules"]:
                frames = read_frames(path)
                update_manifest(
                    outdir,
                    generator,
                    name,
                    {
                        "molecule": name,
                        "n_atoms": len(frames[0]),
                        "formula": frames[0].get_chemical_formula(mode="hill"),
                        "frames": len(frames),
                        "seed": int(frames[0].info["seed"]),
                        "seconds": None,
                        "file": path.name,
                        "bytes": path.stat().st_size,
                        "sha256": sha256(path),
                    },
                )
            continue
        entry = generate(name, args, outdir)
        entry["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        update_manifest(outdir, generator, name, entry)
    print(f"all done in {time.perf_counter() - t_all:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
