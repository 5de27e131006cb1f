"""Evaluate a trained potential and ship it: model file, test slice, model card.

    python training/publish_potential.py runs/xtb_md17_stage2 --name sinet-xtb-md17 \
        --extra-test 700K=training/data/xtb_md17_heldout/test_700K

Reads the run's config and best model; measures, per molecule, the test energy MAE
(meV/atom; also with each molecule's mean error removed, which shows whether an error is a
constant offset) and force MAE (meV/Å) on every test frame, the NVE energy drift and the
MD speed (velocity Verlet, 0.5 fs, float64 calculator, from the shipped starting geometry
at 300 K). The test frames are the run's ``data.test`` files (one per molecule, separate
trajectories) or, for a run without test files, its ``split.json`` test indices;
``--extra-test LABEL=DIR`` adds ``DIR/<molecule>.extxyz.xz`` (e.g. a 700 K trajectory) as a
second column. Then writes

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
from sinet_ase.potential.data import read_structures
from sinet_ase.io import read_model_file
from sinet_ase.pretrained import shipped_structure, shipped_structure_names

ROOT = Path(__file__).resolve().parents[1]


def molecule_name(path: str) -> str:
    return Path(path).name.split(".")[0]


def test_errors(model, frames, batch_size=50):
    """Energy MAE per atom (meV/atom) and force MAE (meV/Å) of ``model`` (float64) on ``frames``.

    Also returns the energy MAE per atom after the mean per-atom error is removed (the part
    of the error that is not a constant offset)."""
    e_err, f_err, n_f = [], 0.0, 0
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        batch = batch_graphs([atoms_to_graph(a, model.cutoff, model.elements, with_labels=True) for a in chunk])
        out = model(batch)
        n_atoms = torch.bincount(batch.batch).double()
        e_err.append(((out["energy"] - batch.energy) / n_atoms).detach().numpy())
        f_err += float((out["forces"] - batch.forces).abs().sum())
        n_f += batch.forces.numel()
    e_err = np.concatenate(e_err)
    return (1000 * float(np.abs(e_err).mean()), 1000 * f_err / n_f, 1000 * float(np.abs(e_err - e_err.mean()).mean()))


def test_sets(config, run, folder=None):
    """``{molecule: frames}`` of the test data: ``folder/<molecule>.extxyz.xz`` for the run's
    training molecules when given, else the run's test files, else its split."""
    if folder is not None:
        return {
            molecule_name(p): read_structures(Path(folder) / f"{molecule_name(p)}.extxyz.xz")
            for p in config["data"]["train"]
        }
    if config["data"].get("test"):
        return {molecule_name(p): read_structures(p) for p in config["data"]["test"]}
    split = json.loads((run / "split.json").read_text())
    sets = {}
    for path, idx in split.items():
        frames = read_structures(path)
        sets[molecule_name(path)] = [frames[i] for i in idx["test"]]
    return sets


def nve_run(model_path, name, steps, seed=0):
    atoms = shipped_structure(name)
    # eager, so that the time per step does not include a compilation part-way through the run
    atoms.calc = SINetCalculator(model_path, compile=False)
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
    return {
        "drift_eV": float(atoms.get_total_energy() - e0),
        "max_deviation_eV": float(np.abs(energies - e0).max()),
        "ms_per_step": 1000 * elapsed / steps,
        "n_atoms": len(atoms),
        "steps": steps,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", required=True)
    parser.add_argument("--slice", type=int, default=20, help="test frames per molecule to commit")
    parser.add_argument("--nve-steps", type=int, default=1000)
    parser.add_argument(
        "--test",
        default=None,
        metavar="DIR",
        help="test set per molecule, DIR/<molecule>.extxyz.xz (default: the run's data.test files, else its split)",
    )
    parser.add_argument(
        "--extra-test",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another test set per molecule: DIR/<molecule>.extxyz.xz",
    )
    parser.add_argument("--note", default="", help="a paragraph for the card (how it was trained)")
    args = parser.parse_args()

    run = Path(args.run_dir)
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    history = (run / "metrics.csv").read_text().splitlines()
    model = load_model(run / "best_model.pt").double()

    results, slice_frames = {}, []
    for name, test in test_sets(config, run, args.test).items():
        e_mae, f_mae, e_free = test_errors(model, test)
        results[name] = {
            "test_frames": len(test),
            "e_mae_mev_atom": e_mae,
            "f_mae_mev_a": f_mae,
            "e_mae_offset_free_mev_atom": e_free,
        }
        part = test[: args.slice]
        for a in part:
            a.info["molecule"] = name
        slice_frames += part
        print(
            f"{name:16s} test {len(test)} frames: E MAE {e_mae:.2f} meV/atom "
            f"(offset-free {e_free:.2f}), F MAE {f_mae:.1f} meV/Å",
            flush=True,
        )
    extra = {}
    for spec in args.extra_test:
        label, _, folder = spec.partition("=")
        extra[label] = {}
        for name in results:
            frames = read_structures(Path(folder) / f"{name}.extxyz.xz")
            e_mae, f_mae, e_free = test_errors(model, frames)
            extra[label][name] = {
                "test_frames": len(frames),
                "e_mae_mev_atom": e_mae,
                "f_mae_mev_a": f_mae,
                "e_mae_offset_free_mev_atom": e_free,
            }
            print(
                f"{name:16s} {label} {len(frames)} frames: E MAE {e_mae:.2f} meV/atom "
                f"(offset-free {e_free:.2f}), F MAE {f_mae:.1f} meV/Å",
                flush=True,
            )
    slice_e, slice_f, _ = test_errors(model, slice_frames)

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
        "extra_tests": extra,
        "note": args.note,
        "test_dir": args.test,
        "model_config": {
            k: v
            for k, v in read_model_file(run / "best_model.pt")["config"].items()
            if k
            in ("cutoff", "lmax", "channels", "num_layers", "num_radial", "radial_hidden", "mlp_hidden", "backbone")
        },
        "train_cpu_seconds": summary.get("train_cpu_seconds"),
        "test_slice": {
            "file": f"{args.name}_test_slice.extxyz",
            "frames_per_molecule": args.slice,
            "e_mae_mev_atom": slice_e,
            "f_mae_mev_a": slice_f,
        },
    }
    best = load_model(run / "best_model.pt")
    # the training data's statistics stay with the model: the calculator checks structures against them
    domain = {k: best.metadata[k] for k in ("training_domain",) if k in best.metadata}
    save_model(best, model_path, metadata={"card": json.dumps(card), **domain})
    write(out_dir / f"{args.name}_test_slice.extxyz", slice_frames)

    nve = {}
    for name in [m for m in results if m in shipped_structure_names()]:
        nve[name] = nve_run(model_path, name, args.nve_steps)
        print(
            f"{name:16s} NVE {args.nve_steps} steps: drift {nve[name]['drift_eV']:+.2e} eV, "
            f"{nve[name]['ms_per_step']:.1f} ms/step",
            flush=True,
        )
    card["nve_300K_0.5fs"] = nve
    (out_dir / f"{args.name}.json").write_text(json.dumps(card, indent=1))
    for png in ("learning_curve.png", "force_parity.png"):
        if (run / png).exists():
            shutil.copy(run / png, card_dir / f"{args.name}_{png}")
    (card_dir / f"{args.name}.md").write_text(render_card(card))
    print(f"shipped {model_path} and potentials/{args.name}.md")


def render_card(card) -> str:
    t = card["training_config"]
    extra = card.get("extra_tests") or {}
    nve = card["nve_300K_0.5fs"]
    head = (
        "| molecule | test frames | E MAE (meV/atom) | E MAE offset-free | F MAE (meV/Å) | "
        + "".join(f"{label} E MAE | {label} F MAE | " for label in extra)
        + "NVE drift, 1,000 steps of 0.5 fs (eV) | MD ms/step (float64, eager, 1 thread) |"
    )
    rule = "|" + "---|" * (head.count("|") - 1)
    rows = []
    for name, r in sorted(card["per_molecule_test"].items()):
        cells = [
            name,
            str(r["test_frames"]),
            f"{r['e_mae_mev_atom']:.2f}",
            f"{r.get('e_mae_offset_free_mev_atom', float('nan')):.2f}",
            f"{r['f_mae_mev_a']:.1f}",
        ]
        for label in extra:
            x = extra[label][name]
            cells += [f"{x['e_mae_mev_atom']:.2f}", f"{x['f_mae_mev_a']:.1f}"]
        cells += [
            f"{nve.get(name, {}).get('drift_eV', float('nan')):+.2e}",
            f"{nve.get(name, {}).get('ms_per_step', float('nan')):.1f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    hw = card["hardware"]
    hardware = (
        f"{hw.get('cpu_count')}-core {hw.get('cpu')} CPU, {hw.get('threads')} torch threads, device {hw.get('device')}"
        if isinstance(hw, dict)
        else str(hw)
    )
    cpu = card.get("train_cpu_seconds")
    spent = f"{cpu / 60:.0f} CPU minutes" if cpu else f"{(card['train_seconds'] or 0) / 3600:.2f} h"
    d = t["data"]
    if d.get("test") or card.get("test_dir"):
        data = (
            "Data: each molecule's training trajectory (all its frames, `training/data/xtb_md17/`); "
            "validation and test frames come from separate trajectories of the same conformers "
            "with new seeds (`training/data/xtb_md17_heldout/`), never from the training one."
        )
    else:
        data = (
            f"Data: per molecule 2,000 frames split by seed {t['seed']}: {d['valid_size']} validation, "
            f"{d['test_size']} test, the rest for training."
        )
    model = card.get("model_config") or t["model"]
    model_text = ", ".join(f"{k}={v}" for k, v in model.items())
    return f"""# {card["name"]}

A SINet potential for the ten molecules of the revised MD17 set, trained on
**GFN2-xTB labels (not DFT)** generated by `training/make_xtb_md17.py`
(Langevin MD at 500 K, see `training/data/xtb_md17/README.md`).

- {data}
- Model: `SINet({model_text})`, trained in {t["training"]["dtype"]}.
- Training: {card["epochs_done"]} epochs (best {card["best_epoch"]}), {spent} on {hardware};
  AdamW lr {t["training"]["lr"]}, batch {t["training"]["batch_size"]}, {t["training"]["scheduler"]} schedule,
  loss weights energy/atom {t["training"]["energy_weight"]}, forces {t["training"]["forces_weight"]}
  (after a fraction {t["training"].get("stage2_start")} of the schedule energy/atom
  {t["training"].get("stage2_energy_weight")}), EMA {t["training"]["ema_decay"]}.
{("- " + card["note"]) if card.get("note") else ""}
- Produced {card["date"]} by `python training/publish_potential.py {t["run_dir"]} --name {card["name"]}{"".join(" --extra-test " + k + "=..." for k in extra)}`.

{head}
{rule}
{chr(10).join(rows)}

"E MAE offset-free" removes each molecule's mean energy error: the part of the error that is
not a constant shift. NVE: velocity Verlet from the shipped xTB-relaxed geometry with 300 K
Maxwell-Boltzmann velocities, float64 calculator, eager (`compile=False`); speed measured in
that run, one torch thread, no allocator preload (`benchmarks/bench_md.py` times the compiled
path).

Committed test slice (`sinet_ase/potentials/{card["test_slice"]["file"]}`, first
{card["test_slice"]["frames_per_molecule"]} test frames per molecule): E MAE
{card["test_slice"]["e_mae_mev_atom"]:.2f} meV/atom, F MAE {card["test_slice"]["f_mae_mev_a"]:.1f} meV/Å
(the test suite recomputes this).

![learning curve]({card["name"]}_learning_curve.png)
![force parity]({card["name"]}_force_parity.png)
"""


if __name__ == "__main__":
    main()
