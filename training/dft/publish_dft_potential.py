"""Score a potential trained on a shared DFT benchmark and ship it with its model card.

    python training/dft/publish_dft_potential.py runs/rmd17_ethanol --name sinet-rmd17-ethanol \\
        --start ethanol --md-json results/md_dft.json

Reads the run's config, summary and best model and measures, in float64:

- test errors on the run's test files (the benchmark's own test set), read with the run's
  label keys: energy MAE and RMSE per structure (meV) and per atom (meV/atom),
  force-component MAE and RMSE (meV/Å), stress MAE and RMSE (GPa) where the data has stress,
  and the same per config type;
- NVE stability: velocity Verlet, 0.5 fs, ``--nve-ps`` ps (default 10) from the start
  structure with 300 K Maxwell-Boltzmann velocities; the total-energy drift (end minus
  start) and the largest deviation, per atom.

MD speed is not timed here (a timing needs an idle machine and the peers in the same run):
``--md-json`` takes the records of ``benchmarks/bench_md.py --models file-PATH ...`` and
copies the ones of this model into the card.

Writes ``sinet_ase/potentials/<name>.pt`` (card in its metadata), ``<name>.json`` (the
card's numbers), ``<name>_test_slice.extxyz`` (the first ``--slice`` test frames, which the
test suite re-scores) and the model card ``potentials/<name>.md``.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read, write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from sinet_ase import SINetCalculator, load_model, save_model
from ase.calculators.singlepoint import SinglePointCalculator

from sinet_ase.evaluate import evaluate_files
from sinet_ase.labels import LabelKeys, get_energy, get_forces, get_stress
from sinet_ase.pretrained import shipped_structure, shipped_structure_names

ROOT = Path(__file__).resolve().parents[2]


def label_keys(data):
    """The run's label keys (its config's ``data`` section)."""
    defaults = LabelKeys()
    return LabelKeys(
        energy=data.get("energy_key", defaults.energy),
        forces=data.get("forces_key", defaults.forces),
        stress=data.get("stress_key", defaults.stress),
        virials=data.get("virials_key", defaults.virials),
        stress_convention=data.get("stress_convention", defaults.stress_convention),
        config_type=data.get("config_type_key", defaults.config_type),
    )


def test_metrics(model, paths, keys=LabelKeys(), require_stress=False):
    """Errors on the test files (:func:`sinet_ase.evaluate.evaluate_files`, float64 model):
    energy per structure (meV) and per atom (meV/atom), force components (meV/Å), stress
    (GPa) where present; over all files and per config type."""
    result, frames, _ = evaluate_files(model, paths, keys, require_forces=True, require_stress=require_stress)
    types = {}
    for per_file in result["files"].values():
        types.update(per_file["config_types"])
    return result["all"], types, frames


def with_ase_labels(frames, keys):
    """Copies whose labels are ASE calculator results (energy, forces, stress in ASE's
    convention), so the committed test slice reads back with the default keys."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        stress = get_stress(atoms, keys)
        copy.info = {k: v for k, v in atoms.info.items() if k in (keys.config_type, "config_type")}
        if keys.config_type in atoms.info:
            copy.info["config_type"] = atoms.info[keys.config_type]
        copy.calc = SinglePointCalculator(
            copy,
            energy=get_energy(atoms, keys),
            forces=get_forces(atoms, keys),
            **({} if stress is None else {"stress": stress}),
        )
        out.append(copy)
    return out


def add_shipped_structure(name, spec):
    """Append frame ``INDEX`` of ``FILE`` (``spec = "FILE@INDEX"``), without labels, to the
    shipped start structures under ``name`` (nothing happens if ``name`` ships already)."""
    if name in shipped_structure_names():
        return
    path, index = spec.rsplit("@", 1)
    atoms = read(path, index=int(index))
    atoms.calc, atoms.info = None, {"name": name}
    if not atoms.pbc.any():
        atoms.pbc, atoms.cell = False, None
    structures = ROOT / "sinet_ase" / "potentials" / "structures.extxyz"
    write(structures, read(structures, index=":") + [atoms])


def nve_drift(model_path, atoms, picoseconds, seed=0):
    """Total-energy drift and largest deviation (eV/atom) of float64 velocity Verlet at 0.5 fs."""
    atoms = atoms.copy()
    atoms.calc = SINetCalculator(model_path)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    steps = int(round(picoseconds * 2000))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    e0 = atoms.get_total_energy()
    energies, temperatures = [], []

    def record():
        energies.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    dyn.attach(record, interval=20)
    started = time.perf_counter()
    dyn.run(steps)
    n = len(atoms)
    energies = np.array(energies)
    return {
        "ps": picoseconds,
        "steps": steps,
        "timestep_fs": 0.5,
        "n_atoms": n,
        "drift_ev_atom": float((energies[-1] - e0) / n),
        "max_deviation_ev_atom": float(np.abs(energies - e0).max() / n),
        "mean_temperature_K": float(np.mean(temperatures)),
        "wall_seconds": time.perf_counter() - started,
    }


def md_speed(records, model_path):
    """``{dtype[-compiled]: ms per step}`` of this model in ``bench_md.py`` records."""
    speed = {}
    for r in records:
        config = r.get("config", {})
        if "error" in r or Path(config.get("file", "")).resolve() != Path(model_path).resolve():
            continue
        key = r["dtype"] + ("-compiled" if r.get("compiled") else "")
        speed[key] = {
            "ms_per_step": r["median_ms"],
            "system": r["system"],
            "allocator": r["allocator"],
            "date": r.get("load_before", {}).get("date"),
        }
    return speed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--start", required=True, help="start structure for sinet-md and the NVE run: a shipped structure name"
    )
    parser.add_argument(
        "--start-from",
        default=None,
        metavar="FILE@INDEX",
        help="first add frame INDEX of FILE to the shipped structures as --start",
    )
    parser.add_argument("--title", default="", help="one line: what the potential is")
    parser.add_argument("--reference", default="", help="published numbers to print beside ours")
    parser.add_argument("--slice", type=int, default=20, help="test frames to commit")
    parser.add_argument("--nve-ps", type=float, default=10.0)
    parser.add_argument("--md-json", default=None, help="bench_md.py results with this model")
    parser.add_argument("--note", default="", help="a line about how the run went, for the card")
    parser.add_argument(
        "--domain",
        default="conformations of this molecule near the temperature "
        "of its training data; not other molecules, not bond breaking",
        help="where the potential is valid, for the card",
    )
    args = parser.parse_args()

    run = Path(args.run_dir)
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    model = load_model(run / "best_model.pt").double()
    keys = label_keys(config["data"])
    require_stress = bool(config["data"].get("require_stress"))
    metrics, types, test = test_metrics(model, config["data"]["test"], keys, require_stress)
    print(json.dumps(metrics, indent=1), flush=True)

    if args.start_from:
        add_shipped_structure(args.start, args.start_from)
    start = shipped_structure(args.start)
    nve = nve_drift(run / "best_model.pt", start, args.nve_ps)
    print(json.dumps(nve, indent=1), flush=True)

    out_dir, card_dir = ROOT / "sinet_ase" / "potentials", ROOT / "potentials"
    model_path = out_dir / f"{args.name}.pt"
    slice_frames = with_ase_labels(test[: args.slice], keys)
    write(out_dir / f"{args.name}_test_slice.extxyz", slice_frames)
    slice_metrics, _, _ = test_metrics(
        model, [out_dir / f"{args.name}_test_slice.extxyz"], require_stress=require_stress
    )
    card = {
        "name": args.name,
        "title": args.title,
        "start_structure": args.start,
        "training_config": config,
        "epochs_done": summary.get("epochs_done"),
        "best_epoch": summary.get("best", {}).get("epoch"),
        "train_seconds": summary.get("train_seconds"),
        "train_cpu_seconds": summary.get("train_cpu_seconds"),
        "hardware": summary.get("hardware"),
        "note": args.note,
        "elements": model.elements,
        "test": metrics,
        "test_config_types": types,
        "domain": args.domain,
        "periodic": bool(start.pbc.any()),
        "test_slice": {"file": f"{args.name}_test_slice.extxyz", **slice_metrics},
        "nve_300K": nve,
        "reference": args.reference,
        "md_speed": md_speed(json.loads(Path(args.md_json).read_text())["results"], run / "best_model.pt")
        if args.md_json
        else {},
    }
    best = load_model(run / "best_model.pt")
    # the architecture as built (a fine-tuning run's config names only ``init_from``)
    card["architecture"] = {k: best.config[k] for k in ARCHITECTURE_KEYS if k in best.config}
    # the training data's statistics stay with the model: the calculator checks structures against them
    domain = {k: best.metadata[k] for k in ("training_domain",) if k in best.metadata}
    save_model(best, model_path, metadata={"card": json.dumps(card), **domain})
    (out_dir / f"{args.name}.json").write_text(json.dumps(card, indent=1))
    for png in ("learning_curve.png", "force_parity.png"):
        if (run / png).exists():
            shutil.copy(run / png, card_dir / f"{args.name}_{png}")
    (card_dir / f"{args.name}.md").write_text(render_card(card))
    print(f"shipped {model_path} and potentials/{args.name}.md")


#: the model keys a card names (the backbone's hyperparameters)
ARCHITECTURE_KEYS = (
    "cutoff",
    "lmax",
    "channels",
    "num_layers",
    "num_radial",
    "radial_hidden",
    "mlp_hidden",
    "backbone",
)

#: 1 meV/Å^3 in GPa
MEV_A3_GPA = 1e-3 / units.GPa


def error_row(name, m) -> str:
    """One Markdown table row of :func:`sinet_ase.evaluate.metrics` (stress in GPa)."""
    stress = (
        "n/a"
        if m.get("stress_mae_mev_a3") is None
        else f"{m['stress_mae_mev_a3'] * MEV_A3_GPA:.3f} / {m['stress_rmse_mev_a3'] * MEV_A3_GPA:.3f}"
    )
    return (
        f"| {name} | {m['n_structures']} | {m['energy_mae_mev']:.2f} / {m['energy_rmse_mev']:.2f} "
        f"| {m['energy_mae_mev_atom']:.3f} / {m['energy_rmse_mev_atom']:.3f} "
        f"| {m['forces_mae_mev_a']:.2f} / {m['forces_rmse_mev_a']:.2f} | {stress} |"
    )


def render_card(card) -> str:
    t, m, nve = card["training_config"], card["test"], card["nve_300K"]
    types = card.get("test_config_types") or {}
    rows = "\n".join(
        [error_row("all", m)] + ([error_row(k, v) for k, v in sorted(types.items())] if len(types) > 1 else [])
    )
    single_molecule = not card.get("periodic")
    e0_text = (
        "a least-squares fit to the training energies (one molecule fixes only their sum), so "
        "energies are meaningful as energies of this molecule's conformations, not of "
        "isolated atoms"
        if single_molecule
        else "a least-squares fit to the training energies (one element: a constant per atom), "
        "so energies compare between structures of this element, not with isolated atoms"
    )
    hw = card["hardware"] or {}
    speed = (
        "\n".join(
            f"| {k} | {v['system']} | {v['ms_per_step']:.2f} | {v['allocator']} | {v['date']} |"
            for k, v in sorted(card["md_speed"].items())
        )
        or "| not measured | | | | |"
    )
    init = t["model"].get("init_from")
    init_text = f", trained on from `{init}`" if init else ""
    stage2_text = ", one loss stage"
    if t["training"].get("stage2_start") is not None:
        ramp = t["training"].get("stage2_ramp") or 0.0
        stage2_text = (
            f", after a fraction {t['training']['stage2_start']} of the schedule energy/atom "
            f"{t['training'].get('stage2_energy_weight')}" + (f" (reached over a further {ramp})" if ramp else "")
        )
    return f"""# {card["name"]}

{card["title"]}

- Data: {", ".join(t["data"]["train"])} (training; {t["data"]["valid_size"]} frames of it held out
  for validation, seed {t["seed"]}); tested on {", ".join(t["data"]["test"])}, a separate file.
  The data's source, license and level of theory are in `../shared/data/README.md` and the
  license file beside each data set.
- Model: `SINet({", ".join(f"{k}={v}" for k, v in card.get("architecture", t["model"]).items())})`{init_text}, elements
  {", ".join(card["elements"])}; trained in {t["training"]["dtype"]}. Per-element energies:
  {e0_text}.
- Training: {card["epochs_done"]} epochs (best {card["best_epoch"]}),
  {(card.get("train_cpu_seconds") or 0) / 60:.0f} CPU minutes ({(card["train_seconds"] or 0) / 60:.0f} min wall
  on {hw.get("cpu_count")} cores shared with other jobs, {hw.get("threads")} torch thread);
  AdamW lr {t["training"]["lr"]}, batch {t["training"]["batch_size"]}, {t["training"]["scheduler"]}
  schedule down to {t["training"]["min_lr"]}, loss weights energy/atom
  {t["training"]["energy_weight"]}, forces {t["training"]["forces_weight"]}, stress
  {t["training"].get("stress_weight", 0.0)}{stage2_text}; EMA
  {t["training"]["ema_decay"]}.
{("- " + card["note"]) if card.get("note") else ""}
- Reproduce: `sinet-train {t["run_dir"].replace("runs/", "training/dft/")}.yaml` (the recipe), then
  `python training/dft/publish_dft_potential.py {t["run_dir"]} --name {card["name"]} --start {card["start_structure"]}`.

## Test errors ({m["n_structures"]} frames, float64), MAE / RMSE

| frames | n | energy (meV) | energy (meV/atom) | forces (meV/Å) | stress (GPa) |
|---|---|---|---|---|---|
{rows}

Published (same data and protocol): {card["reference"] or "see ../shared/data/README.md"}.

The first {card["test_slice"]["n_structures"]} test frames ship as `sinet_ase/potentials/{card["test_slice"]["file"]}`
(force MAE {card["test_slice"]["forces_mae_mev_a"]:.2f} meV/Å on them); the test suite re-scores them.

## Stability and speed

NVE, velocity Verlet at 0.5 fs, {nve["ps"]} ps ({nve["steps"]} steps) from `{card["start_structure"]}`
with 300 K velocities, float64: drift {nve["drift_ev_atom"]:+.2e} eV/atom, largest deviation
{nve["max_deviation_ev_atom"]:.2e} eV/atom, mean temperature {nve["mean_temperature_K"]:.0f} K.

| MD step | system | ms/step | allocator | date |
|---|---|---|---|---|
{speed}

Domain: {card.get("domain") or "see the training data"}.

![learning curve]({card["name"]}_learning_curve.png)
![force parity]({card["name"]}_force_parity.png)
"""


if __name__ == "__main__":
    main()
