"""Console commands: ``sinet-train`` (train a potential), ``sinet-md`` (run MD with one) and
``sinet-eval`` (its errors on labelled data files)."""

import argparse
import sys

from .errors import ConfigError


def train_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sinet-train",
        description="Train a SINet model from a YAML config: an energy+force potential "
                    "(default) or, with 'task: qm9', a QM9 property (training/qm9_*.yaml).",
        epilog="Overrides: dotted keys after the config, e.g. training.epochs=5 run_dir=runs/x",
    )
    parser.add_argument("config", help="YAML config (see training/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument("--resume", action="store_true",
                        help="continue from run_dir/checkpoint.pt exactly where it stopped")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--committee", type=int, default=None, metavar="N",
                        help="train N models with seeds seed..seed+N-1 into run_dir/member_k "
                             "(a committee for SINetCalculator's uncertainty)")
    args = parser.parse_args(argv)

    from .data.qm9 import QM9CacheError
    from .train import load_config, train
    from .train.tasks import describe_best

    try:
        config = load_config(args.config, args.overrides)
        if args.committee is not None:
            return _train_committee(config, args)
        summary = train(config, resume=args.resume, quiet=args.quiet)
    except (ConfigError, FileNotFoundError, QM9CacheError) as err:
        print(f"sinet-train: error: {err}", file=sys.stderr)
        return 2
    best = summary.get("best", {})
    print(f"done: {summary.get('epochs_done')} epochs; best epoch {best.get('epoch')} "
          f"({describe_best(summary)}); model: {config.run_dir}/best_model.pt")
    return 0


def _train_committee(config, args) -> int:
    from .train.committee import committee_glob, member_configs, train_committee
    from .train.tasks import describe_best

    summaries = train_committee(config, args.committee, resume=args.resume, quiet=args.quiet)
    for member, summary in zip(member_configs(config, args.committee), summaries):
        best = summary.get("best", {})
        print(f"{member.run_dir}: {summary.get('epochs_done')} epochs; best epoch "
              f"{best.get('epoch')} ({describe_best(summary)})")
    if config.task == "energy":
        print(f"committee of {args.committee}: SINetCalculator(\"{committee_glob(config)}\")")
    return 0


def _load_structure(spec: str):
    """A shipped molecule name, an ``ase.build.molecule`` name, or a file ``ase.io.read`` reads."""
    import os

    from ase.build import molecule
    from ase.collections import g2
    from ase.io import read

    from .pretrained import shipped_structure, shipped_structure_names

    if spec in shipped_structure_names():
        return shipped_structure(spec)
    if os.path.exists(spec):
        return read(spec)
    if spec in g2.names:
        return molecule(spec)
    raise ValueError(
        f"unknown structure {spec!r}: give a file, one of the shipped molecules "
        f"({', '.join(shipped_structure_names()) or 'none'}) or an ase.build.molecule name"
    )


def md_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sinet-md",
        description="Molecular dynamics with a SINet potential: progress bar, temperature and "
                    "energies every interval, a trajectory for `ase gui`, energy drift and speed.",
    )
    parser.add_argument("structure", help="shipped molecule (e.g. aspirin), ase.build name, or a file")
    parser.add_argument("--potential", default=None, help="shipped potential name (default: the first)")
    parser.add_argument("--model", default=None, help="model file instead of a shipped potential")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (initial for NVE)")
    parser.add_argument("--ensemble", choices=["nve", "langevin"], default="nve")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--interval", type=int, default=100, help="report and save every N steps")
    parser.add_argument("--trajectory", default="sinet-md.traj", help=".traj or .extxyz")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from .md import run_md

    try:
        atoms = _load_structure(args.structure)
        report = run_md(atoms, args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"sinet-md: error: {err}", file=sys.stderr)
        return 2
    print(report)
    return 0


def eval_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sinet-eval",
        description="Errors of a SINet potential on labelled data files: energy (meV/atom and "
                    "meV), force (meV/Å) and stress (meV/Å³) MAE and RMSE per file and per "
                    "config_type; predictions to extxyz for parity plots.",
    )
    parser.add_argument("model", help="model file (best_model.pt of a sinet-train run)")
    parser.add_argument("data", nargs="+", help="labelled extxyz (or other ase.io) files")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch")
    parser.add_argument("--output", default=None,
                        help="extxyz of all frames with SINet_energy/SINet_forces/SINet_stress "
                             "beside the reference labels")
    parser.add_argument("--json", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--energy-key", default=None, help="energy label (default: energy)")
    parser.add_argument("--forces-key", default=None,
                        help="forces label (default: forces); when given, every frame needs it")
    parser.add_argument("--stress-key", default=None,
                        help="stress label (default: stress); when given, every frame needs it")
    parser.add_argument("--virials-key", default=None,
                        help="virials label (eV) read where a frame has no stress (default: virials)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import json

    import torch

    from .errors import ModelFileError, SINetInputError
    from .evaluate import evaluate_files, format_table, write_predictions
    from .io import load_model
    from .labels import LabelKeys

    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    defaults = LabelKeys()
    keys = LabelKeys(energy=args.energy_key or defaults.energy, forces=args.forces_key or defaults.forces,
                     stress=args.stress_key or defaults.stress,
                     virials=args.virials_key or defaults.virials)
    try:
        model = load_model(args.model).to(device=args.device,
                                          dtype=getattr(torch, args.dtype))
        result, frames, preds = evaluate_files(
            model, args.data, keys, args.batch_size, args.device,
            require_forces=args.forces_key is not None, require_stress=args.stress_key is not None)
    except (ConfigError, ModelFileError, SINetInputError, FileNotFoundError) as err:
        print(f"sinet-eval: error: {err}", file=sys.stderr)
        return 2
    result = {"model": str(args.model), "dtype": args.dtype, **result}
    print(format_table(result))
    if args.output:
        write_predictions(frames, preds, args.output)
        print(f"predictions: {args.output}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
        print(f"metrics: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
