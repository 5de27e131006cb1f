"""Committee uncertainty on xTB malonaldehyde: does the committee's force spread rank the true error?

    OMP_NUM_THREADS=1 python benchmarks/committee_uncertainty.py            # everything (~3 CPU min)
    OMP_NUM_THREADS=1 python benchmarks/committee_uncertainty.py --skip-training   # re-evaluate

Steps (run from the repository root, one thread):

1. **Open-enol frames** (out of distribution): malonaldehyde's training data is the
   H-bonded Z-enol (``O/C=C\\C=O``, the proton between the two oxygens). Two conformers it
   never visits are built and labelled with GFN2-xTB (tblite, the settings of
   ``training/make_xtb_md17.py``): the Z-enol with its O-H turned 180° away from the
   carbonyl (no hydrogen bond), and the E-enol (``O/C=C/C=O``). Each is relaxed with xTB,
   then ``--enol-frames`` frames are taken every 10 fs from a 500 K Langevin xTB run.
   Written to ``--enol`` (the committed ``benchmarks/results/malonaldehyde_open_enol.extxyz``
   is reused when present: delete it to relabel; that needs the ``xtb`` extra).
2. **Committee**: ``sinet-train --committee 4`` on ``training/data/xtb_md17/malonaldehyde``
   from scratch, a small SINet (16 channels) per member, ``--minutes`` CPU minutes each
   (``cosine_cpu``). Member ``k`` has seed ``k``: its initial weights, batch order and its
   950 training frames (``valid_size: 50``, ``test_size: 1000`` split the 2,000 frames
   differently for each seed) differ.
3. **Evaluation** with ``SINetCalculator(<glob of the members>)``: per atom, the spread
   ``|forces_std|`` (row norm: the RMS deviation of the members' force vectors from their
   mean) against the true error ``|F_mean - F_xTB|`` on held-out malonaldehyde frames at
   500 K and 700 K (``training/data/xtb_md17_heldout/test_{500K,700K}``, separate
   trajectories), the open-enol frames, and ethanol frames at 500 K (another molecule of
   the same elements: far out of distribution). Spearman rank correlation (scipy) per set
   and pooled, per atom and per frame (frame: max over atoms), and a scatter plot. The
   shipped ``sinet-xtb-md17`` (trained on all ten molecules) is scored on the same frames.

Writes ``<out>/committee_uncertainty.json`` and the figure ``--figure``.
"""

import argparse
import io
import json
import lzma
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FILE = "training/data/xtb_md17/malonaldehyde.extxyz.xz"
HELDOUT = "training/data/xtb_md17_heldout"

#: the committee members' config (small: each member gets a few CPU minutes)
CONFIG = """\
# written by benchmarks/committee_uncertainty.py
run_dir: {run_dir}
seed: 0
data:
  train: [{train}]
  valid_size: 50
  test_size: 1000
model: {{cutoff: 5.0, lmax: 2, channels: 16, num_layers: 2, num_radial: 8,
         radial_hidden: 16, mlp_hidden: 32}}
training:
  epochs: 100000
  max_minutes: {minutes}
  scheduler: cosine_cpu
  num_threads: 1
  batch_size: 8
  valid_batch_size: 50
  lr: 0.01
  warmup_epochs: 1
  min_lr: 0.00005
  ema_decay: 0.99
  energy_weight: 1.0
  forces_weight: 100.0
  patience: 1000
  dtype: float32
"""


def read_xz(path, index=":"):
    """Frames of an ``.extxyz.xz`` file (decompressed first: ASE's seeks in xz are slow)."""
    import ase.io

    with lzma.open(path, "rt") as fh:
        return ase.io.read(io.StringIO(fh.read()), index=index, format="extxyz")


# --- 1. open-enol frames -------------------------------------------------------------------
def _xtb():
    sys.path.insert(0, str(ROOT / "training"))
    from make_xtb_md17 import make_calc  # the data's xTB settings

    return make_calc


def _rdkit_enol(smiles: str, seed: int):
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    return Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


def _hydroxyl(atoms):
    """Indices (H, O, C, C') of the enol's H-O-C=C' dihedral."""
    from ase.neighborlist import natural_cutoffs, NeighborList

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    nl.update(atoms)
    sym = atoms.get_chemical_symbols()
    for o in (i for i, s in enumerate(sym) if s == "O"):
        nb = nl.get_neighbors(o)[0]
        hs = [j for j in nb if sym[j] == "H"]
        if hs:
            c = [j for j in nb if sym[j] == "C"][0]
            c2 = [j for j in nl.get_neighbors(c)[0] if sym[j] == "C"][0]
            return hs[0], o, c, c2
    raise RuntimeError("no O-H in the structure")


def _relax(atoms, make_calc):
    from ase.optimize import BFGS

    atoms.calc = make_calc()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    return atoms


def make_open_enol(path: Path, frames_per_conformer: int, seed: int = 0):
    """Relax the two open enols with xTB, run 500 K Langevin xTB MD and keep every 20th step."""
    import ase.io
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    make_calc = _xtb()
    z_open = _rdkit_enol("O/C=C\\C=O", seed)
    h, o, c, c2 = _hydroxyl(z_open)
    # turn the O-H away from the carbonyl: the H-O-C=C dihedral to 180° (moves only H)
    z_open.set_dihedral(h, o, c, c2, 180.0, indices=[h])
    conformers = {"Z-enol, O-H turned out": z_open, "E-enol": _rdkit_enol("O/C=C/C=O", seed)}
    frames, rng = [], np.random.default_rng(seed)
    for name, atoms in conformers.items():
        atoms = _relax(atoms, make_calc)
        dihedral = atoms.get_dihedral(*_hydroxyl(atoms))
        MaxwellBoltzmannDistribution(atoms, temperature_K=500.0, rng=rng)
        dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500.0, friction=0.01 / units.fs, rng=rng, logfile=None)
        dyn.run(200)  # 100 fs from the minimum: let the kinetic energy spread
        for _ in range(frames_per_conformer):
            dyn.run(20)
            frame = atoms.copy()
            frame.calc = None
            label = make_calc()
            frame.calc = label
            energy, forces = frame.get_potential_energy(), frame.get_forces()
            frame.calc = None
            frame.info.update(energy=float(energy), conformer=name, relaxed_HOCC_dihedral=round(float(dihedral), 1))
            frame.arrays["forces"] = np.array(forces)
            frames.append(frame)
    tmp = path.with_name(path.name + ".partial")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, path)
    return frames


# --- 2. committee --------------------------------------------------------------------------
def train_committee(out: Path, members: int, minutes: float) -> str:
    config = out / "committee.yaml"
    run_dir = out / "committee"
    config.write_text(CONFIG.format(run_dir=run_dir, train=TRAIN_FILE, minutes=minutes))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sinet_ase.cli import train_main; sys.exit(train_main())",
            str(config),
            "--committee",
            str(members),
            "--quiet",
            *(["--resume"] if (run_dir / "member_0" / "checkpoint.pt").exists() else []),
        ],
        check=True,
        env=env,
        cwd=ROOT,
    )
    return str(run_dir / "member_*" / "best_model.pt")


# --- 3. evaluation -------------------------------------------------------------------------
def score(calc, frames, committee: bool):
    """Per frame, the per-atom true force error |F - F_ref| and, for a committee, the spread
    |forces_std| (eV/Å); and all force component errors (eV/Å)."""
    errors, spreads, components = [], [], []
    for frame in frames:
        ref = frame.arrays["forces"] if "forces" in frame.arrays else frame.get_forces()
        atoms = frame.copy()
        atoms.calc = calc
        forces = atoms.get_forces()
        errors.append(np.linalg.norm(forces - ref, axis=1))
        components.append((forces - ref).ravel())
        if committee:
            spreads.append(np.linalg.norm(calc.results["forces_std"], axis=1))
    return errors, spreads, np.concatenate(components)


def _ref_forces(frames):
    """Keep the reference forces as an array (the xz test files hold them on a calculator)."""
    for f in frames:
        if "forces" not in f.arrays:
            f.arrays["forces"] = f.get_forces().copy()
    return frames


def evaluate(committee_glob: str, enol_path: Path, n_per_set: int, figure: Path) -> dict:
    import ase.io
    from scipy.stats import spearmanr

    from sinet_ase import SINetCalculator

    sets = {
        "malonaldehyde 500 K (held out)": read_xz(f"{HELDOUT}/test_500K/malonaldehyde.extxyz.xz"),
        "malonaldehyde 700 K (held out)": read_xz(f"{HELDOUT}/test_700K/malonaldehyde.extxyz.xz"),
        "open enols (never seen)": ase.io.read(enol_path, ":"),
        "ethanol 500 K (other molecule)": read_xz(f"{HELDOUT}/test_500K/ethanol.extxyz.xz"),
    }
    for name, frames in sets.items():  # an evenly spaced subset of each set
        step = max(1, len(frames) // n_per_set)
        sets[name] = _ref_forces(frames[::step][:n_per_set])
    committee = SINetCalculator(committee_glob, compile=False)  # short run: eager
    shipped = SINetCalculator("sinet-xtb-md17", compile=False)
    result, points = {"sets": {}}, {}
    for name, frames in sets.items():
        errors, spreads, _ = score(committee, frames, committee=True)
        shipped_errors, _, shipped_components = score(shipped, frames, committee=False)
        err, spr = np.concatenate(errors), np.concatenate(spreads)
        ferr = np.array([e.max() for e in errors])
        fspr = np.array([s.max() for s in spreads])
        points[name] = (err, spr)
        result["sets"][name] = {
            "frames": len(frames),
            "atoms": int(err.size),
            "committee_force_error_mean_meV_per_A": 1000 * float(err.mean()),
            "committee_spread_mean_meV_per_A": 1000 * float(spr.mean()),
            "spearman_atoms": float(spearmanr(spr, err)[0]),
            "spearman_frames_max": float(spearmanr(fspr, ferr)[0]) if len(frames) > 2 else None,
            "shipped_force_error_mean_meV_per_A": 1000 * float(np.concatenate(shipped_errors).mean()),
            # the per-component MAE, as the model cards report it
            "shipped_force_mae_meV_per_A": 1000 * float(np.abs(shipped_components).mean()),
        }
    err = np.concatenate([p[0] for p in points.values()])
    spr = np.concatenate([p[1] for p in points.values()])
    result["pooled"] = {"atoms": int(err.size), "spearman_atoms": float(spearmanr(spr, err)[0])}
    plot(points, result, figure)
    return result


def plot(points, result, figure: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for (name, (err, spr)), marker in zip(points.items(), "o^sD"):
        rho = result["sets"][name]["spearman_atoms"]
        ax.scatter(1000 * spr, 1000 * err, s=8, alpha=0.5, marker=marker, label=f"{name}: ρ = {rho:.2f}")
    lo = 1000 * min(min(p[1].min() for p in points.values()), min(p[0].min() for p in points.values()))
    hi = 1000 * max(max(p[1].max() for p in points.values()), max(p[0].max() for p in points.values()))
    ax.plot([max(lo, 1e-1), hi], [max(lo, 1e-1), hi], "k--", lw=0.8, label="error = spread")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("committee force spread |σ_F| per atom (meV/Å)")
    ax.set_ylabel("true force error |F − F_xTB| per atom (meV/Å)")
    ax.set_title(
        f"4-member committee, malonaldehyde (xTB); pooled ρ = {result['pooled']['spearman_atoms']:.2f}", fontsize=10
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo_committee"))
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=0.5, help="CPU minutes per member")
    parser.add_argument("--enol-frames", type=int, default=20, help="frames per open conformer")
    parser.add_argument("--frames", type=int, default=50, help="frames per held-out set")
    parser.add_argument(
        "--enol",
        type=Path,
        default=ROOT / "benchmarks/results/malonaldehyde_open_enol.extxyz",
        help="open-enol frames (made and labelled with xTB when missing)",
    )
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs/results/committee_uncertainty.png")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    args.out.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    enol = args.enol
    if not enol.exists():
        make_open_enol(enol, args.enol_frames)
    cpu_enol = time.process_time() - cpu0
    if args.skip_training:
        pattern = str(args.out / "committee" / "member_*" / "best_model.pt")
    else:
        pattern = train_committee(args.out, args.members, args.minutes)
    cpu1 = time.process_time()
    result = evaluate(pattern, enol, args.frames, args.figure)
    result.update(
        command=" ".join(["python", "benchmarks/committee_uncertainty.py", *(argv or sys.argv[1:])]),
        members=args.members,
        minutes_per_member=args.minutes,
        cpu_seconds_enol_labels=cpu_enol,
        cpu_seconds_evaluation=time.process_time() - cpu1,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine={
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "threads": 1,
        },
    )
    summaries = sorted((args.out / "committee").glob("member_*/summary.json"))
    result["members_summary"] = [json.loads(p.read_text()) for p in summaries]
    (args.out / "committee_uncertainty.json").write_text(json.dumps(result, indent=1))
    for name, s in result["sets"].items():
        print(
            f"{name:34s} {s['frames']:4d} frames  committee error {s['committee_force_error_mean_meV_per_A']:7.1f}"
            f"  spread {s['committee_spread_mean_meV_per_A']:7.1f} meV/Å  rho atoms "
            f"{s['spearman_atoms']:.2f} frames {s['spearman_frames_max']:.2f}  shipped MAE "
            f"{s['shipped_force_mae_meV_per_A']:.1f} meV/Å"
        )
    print(f"pooled rho (atoms) {result['pooled']['spearman_atoms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
