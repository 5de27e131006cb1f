"""Evaluate a trained potential and ship it: model file, test slice, model card.

    python training/publish_potential.py runs/xtb_md17 --name sinet-xtb-md17

Reads the run's config, split and best model; measures, per molecule, the
test energy MAE (meV/atom) and force MAE (meV/Å) on every test frame, the NVE
energy drift and the MD speed (velocity Verlet, 0.5 fs, float64 calculator,
from the shipped starting geometry at 300 K); then writes

- ``sinet_ase/potentials/<name>.pt``           the model (card numbers in its metadata)
- ``sinet_ase/potentials/<name>.json``         the card's numbers
- ``sinet_ase/potentials/<name>_test_slice.extxyz``  the first test frames of each molecule
- ``potentials/<name>.md``                     the model card, plus its plots.
"""

import argparse
import json
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.io import write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from sinet_ase import SINetCalculator, atoms_to_graph, batch_graphs, load_model, save_model
from sinet_ase.data.atomic import read_structures
from sinet_ase.pretrained import shipped_structure, shipped_structure_names

ROOT = Path(__file__).resolve().parents[1]


def molecule_name(path: str) -> str:
    return Path(path).name.split(".")[0]


def test_errors(model, frames, batch_size=50):
    """Energy MAE per atom (meV/atom) and force MAE (meV/Å) of ``model`` (float64) on ``frames``."""
    e_err, f_err, n_f = [], 0.0, 0
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        batch = batch_graphs([atoms_to_graph(a, model.cutoff, model.elements, with_labels=True)
                              for a in chunk])
        out = model(batch)
        n_atoms = torch.bincount(batch.batch).double()
        e_err.append(((out["energy"] - batch.energy).abs() / n_atoms).detach().numpy())
        f_err += float((out["forces"] - batch.forces).abs().sum())
        n_f += batch.forces.numel()
    return 1000 * float(np.concatenate(e_err).mean()), 1000 * f_err / n_f


def nve_run(model_path, name, steps, seed=0):
    atoms = shipped_structure(name)
    atoms.calc = SINetCalculator(model_path)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    e0 = atoms.get_total_energy()
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=10)
    start = time.perf_counter()
    dyn.run(steps)
    elapsed = time.perf_counter() - start
    energies = np.array(energies)
    return {"drift_eV": float(atoms.get_total_energy() - e0),
            "max_deviation_eV": float(np.abs(energies - e0).max()),
            "ms_per_step": 1000 * elapsed / steps, "n_atoms": len(atoms), "steps": steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", required=True)
    parser.add_argument("--slice", type=int, default=20, help="test frames per molecule to commit")
    parser.add_argument("--nve-steps", type=int, default=1000)
    args = parser.parse_args()

    run = Path(args.run_dir)
    config = json.loads((run / "config.json").read_text())
    split = json.loads((run / "split.json").read_text())
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    history = (run / "metrics.csv").read_text().splitlines()
    model = load_model(run / "best_model.pt").double()

    results, slice_frames = {}, []
    for path, idx in split.items():
        name = molecule_name(path)
        frames = read_structures(path)
        test = [frames[i] for i in idx["test"]]
        e_mae, f_mae = test_errors(model, test)
        results[name] = {"test_frames": len(test), "e_mae_mev_atom": e_mae, "f_mae_mev_a": f_mae}
        part = test[: args.slice]
        for a in part:
            a.info["molecule"] = name
        slice_frames += part
        print(f"{name:16s} test {len(test)} frames: E MAE {e_mae:.2f} meV/atom, F MAE {f_mae:.1f} meV/Å",
              flush=True)
    slice_e, slice_f = test_errors(model, slice_frames)

    out_dir = ROOT / "sinet_ase" / "potentials"
    card_dir = ROOT / "potentials"
    out_dir.mkdir(exist_ok=True)
    card_dir.mkdir(exist_ok=True)
    model_path = out_dir / f"{args.name}.pt"
    card = {
        "name": args.name,
        "date": date.today().isoformat(),
        "labels": "GFN2-xTB (tblite), not DFT",
        "training_config": config,
        "epochs_done": len(history) - 1,
        "best_epoch": summary.get("best", {}).get("epoch"),
        "train_seconds": summary.get("train_seconds"),
        "hardware": summary.get("hardware", "not recorded"),
        "per_molecule_test": results,
        "test_slice": {"file": f"{args.name}_test_slice.extxyz", "frames_per_molecule": args.slice,
                       "e_mae_mev_atom": slice_e, "f_mae_mev_a": slice_f},
    }
    best = load_model(run / "best_model.pt")
    # the training data's statistics stay with the model: the calculator checks structures against them
    domain = {k: best.metadata[k] for k in ("training_domain",) if k in best.metadata}
    save_model(best, model_path, metadata={"card": json.dumps(card), **domain})
    write(out_dir / f"{args.name}_test_slice.extxyz", slice_frames)

    nve = {}
    for name in shipped_structure_names():
        nve[name] = nve_run(model_path, name, args.nve_steps)
        print(f"{name:16s} NVE {args.nve_steps} steps: drift {nve[name]['drift_eV']:+.2e} eV, "
              f"{nve[name]['ms_per_step']:.1f} ms/step", flush=True)
    card["nve_300K_0.5fs"] = nve
    (out_dir / f"{args.name}.json").write_text(json.dumps(card, indent=1))
    for png in ("learning_curve.png", "force_parity.png"):
        if (run / png).exists():
            shutil.copy(run / png, card_dir / f"{args.name}_{png}")
    (card_dir / f"{args.name}.md").write_text(render_card(card))
    print(f"shipped {model_path} and potentials/{args.name}.md")


def render_card(card) -> str:
    t = card["training_config"]
    rows = "\n".join(
        f"| {name} | {r['test_frames']} | {r['e_mae_mev_atom']:.2f} | {r['f_mae_mev_a']:.1f} | "
        f"{card['nve_300K_0.5fs'].get(name, {}).get('drift_eV', float('nan')):+.2e} | "
        f"{card['nve_300K_0.5fs'].get(name, {}).get('ms_per_step', float('nan')):.1f} |"
        for name, r in sorted(card["per_molecule_test"].items()))
    hours = (card["train_seconds"] or 0) / 3600
    hw = card["hardware"]
    hardware = (f"{hw.get('cpu_count')}-core {hw.get('cpu')} CPU, {hw.get('threads')} torch threads, "
                f"device {hw.get('device')}" if isinstance(hw, dict) else str(hw))
    return f"""# {card['name']}

A SINet potential for the ten molecules of the revised MD17 set, trained on
**GFN2-xTB labels (not DFT)** generated by `training/make_xtb_md17.py`
(Langevin MD at 500 K, see `training/data/xtb_md17/README.md`).

- Data: per molecule 2,000 frames split by seed {t['seed']}: {t['data']['valid_size']} validation,
  {t['data']['test_size']} test, the rest for training; test frames never seen in training.
- Model: `SINet({', '.join(f'{k}={v}' for k, v in t['model'].items())})`, trained in {t['training']['dtype']}.
- Training: {card['epochs_done']} epochs (best {card['best_epoch']}), {hours:.2f} h on {hardware};
  AdamW lr {t['training']['lr']}, batch {t['training']['batch_size']}, cosine schedule,
  loss weights energy/atom {t['training']['energy_weight']}, forces {t['training']['forces_weight']}, EMA {t['training']['ema_decay']}.
- Produced {card['date']} by `python training/publish_potential.py {t['run_dir']} --name {card['name']}`.

| molecule | test frames | E MAE (meV/atom) | F MAE (meV/Å) | NVE drift, 1,000 steps of 0.5 fs (eV) | MD ms/step (float64) |
|---|---|---|---|---|---|
{rows}

NVE: velocity Verlet from the shipped xTB-relaxed geometry with 300 K Maxwell-Boltzmann
velocities, float64 calculator; speed measured in that run on this machine (shared CPU).

Committed test slice (`sinet_ase/potentials/{card['test_slice']['file']}`, first
{card['test_slice']['frames_per_molecule']} test frames per molecule): E MAE
{card['test_slice']['e_mae_mev_atom']:.2f} meV/atom, F MAE {card['test_slice']['f_mae_mev_a']:.1f} meV/Å
(the test suite recomputes this).

![learning curve]({card['name']}_learning_curve.png)
![force parity]({card['name']}_force_parity.png)
"""


if __name__ == "__main__":
    main()
