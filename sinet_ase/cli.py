"""Console commands: ``sinet-train`` (train a potential), ``sinet-md`` (run MD with one),
``sinet-eval`` (its errors on labelled data files) and ``sinet-ipi`` (serve it to i-PI)."""

import argparse
import sys

from .errors import ConfigError, ModelFileError


def _describe_os_error(err: OSError) -> str:
    """One line for an OS error: what failed, on which file; a full disk said plainly."""
    import errno

    from .files import DiskFullError

    if isinstance(err, DiskFullError):
        return str(err.strerror)
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"the disk is full{where}; free some space and run again"
    return f"{err.strerror or err}{where}"


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
    args = parser.parse_intermixed_args(argv)  # --quiet / --resume also after the overrides

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
    except FloatingPointError as err:  # a NaN loss: the run stopped before damaging the weights
        print(f"sinet-train: error: {err}", file=sys.stderr)
        return 3
    except ModelFileError as err:  # an unreadable checkpoint on --resume
        print(f"sinet-train: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permission denied, ...
        print(f"sinet-train: error: {_describe_os_error(err)}", file=sys.stderr)
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


def _number(kind, minimum, inclusive, what):
    """An argparse type: ``kind`` (int or float) that must be > (or >=) ``minimum``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number")
        if value != value or (value < minimum if inclusive else value <= minimum):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    parse.__name__ = what
    return parse


_POSITIVE_INT = _number(int, 0, False, "a positive whole number")
_POSITIVE = _number(float, 0.0, False, "a positive number")
_NON_NEGATIVE = _number(float, 0.0, True, "zero or a positive number")
#: trajectory formats sinet-md writes (.traj: ASE's binary trajectory; the others extxyz text)
TRAJECTORY_SUFFIXES = (".traj", ".extxyz", ".xyz")


def _trajectory_path(text):
    from pathlib import Path

    if Path(text).suffix.lower() not in TRAJECTORY_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the trajectory is written as ASE .traj or extxyz; give a file name "
            f"ending in {', '.join(TRAJECTORY_SUFFIXES)} (convert afterwards with ase convert)")
    return text


def _check_device(device: str) -> None:
    """Refuse a device torch cannot use, before the model is built, with a one-line reason."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N): {err}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine "
                             "(no GPU, or torch was built without CUDA); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")


def _card_start_structure(args) -> str:
    """The start structure a shipped potential's card names (``sinet-md --potential NAME``)."""
    from .pretrained import default_potential, potential_card

    start = None if args.model else potential_card(args.potential or default_potential()).get(
        "start_structure")
    if start is None:
        raise ValueError("give a structure: a shipped molecule (e.g. aspirin), an "
                         "ase.build.molecule name or a file")
    return start


def md_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sinet-md",
        description="Molecular dynamics with a SINet potential: progress bar, temperature and "
                    "energies every interval, a trajectory for `ase gui`, energy drift and speed.",
    )
    parser.add_argument("structure", nargs="?", default=None,
                        help="shipped molecule (e.g. aspirin), ase.build name, or a file; "
                             "default: the start structure named by the --potential's card")
    parser.add_argument("--potential", default=None,
                        help="shipped potential name (default: sinet-xtb-md17; list_pretrained())")
    parser.add_argument("--model", default=None, help="model file instead of a shipped potential")
    parser.add_argument("--steps", type=_POSITIVE_INT, default=2000)
    parser.add_argument("--timestep", type=_POSITIVE, default=0.5, help="fs")
    parser.add_argument("--temperature", type=_NON_NEGATIVE, default=300.0, help="K (initial for NVE)")
    parser.add_argument("--ensemble", choices=["nve", "langevin"], default="nve")
    parser.add_argument("--friction", type=_NON_NEGATIVE, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--interval", type=_POSITIVE_INT, default=100, help="report and save every N steps")
    parser.add_argument("--trajectory", type=_trajectory_path, default="sinet-md.traj",
                        help=".traj, .extxyz or .xyz")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile the network: auto (default) for runs of 1000 steps "
                             "or more where a C++ compiler exists, on, or off (eager)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    stability = parser.add_argument_group(
        "stability checks", "every --check-interval steps; a failed check stops the run with exit "
                            "code 3 and keeps the trajectory so far (pass inf to switch one off)")
    stability.add_argument("--max-temperature", type=_POSITIVE, default=None,
                           help="K (default: 5 x --temperature + 1000 K)")
    stability.add_argument("--max-drift", type=_POSITIVE, default=0.05,
                           help="NVE total-energy change, eV/atom (default 0.05)")
    stability.add_argument("--max-neighbour-distance", type=_POSITIVE, default=None,
                           help="an atom with no neighbour this close (Å) that had one at the "
                                "start stops the run (default: the model's cutoff)")
    stability.add_argument("--check-interval", type=_POSITIVE_INT, default=10, help="steps")
    args = parser.parse_args(argv)

    from .md import MDInstabilityError, run_md

    try:
        _check_device(args.device)
        atoms = _load_structure(args.structure or _card_start_structure(args))
        report = run_md(atoms, args)
    except MDInstabilityError as err:
        print(f"sinet-md: error: {err}", file=sys.stderr)
        return 3
    except FloatingPointError as err:
        print(f"sinet-md: error: {err} (try a smaller --timestep)", file=sys.stderr)
        return 3
    except (ValueError, KeyError, FileNotFoundError) as err:
        # a KeyError's str() quotes its message
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sinet-md: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permission denied, ... while reading or writing
        print(f"sinet-md: error: {_describe_os_error(err)}", file=sys.stderr)
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
    parser.add_argument("model", help="model file (best_model.pt of a sinet-train run) or the name "
                                      "of a shipped potential (sinet-xtb-md17, ...)")
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
    parser.add_argument("--stress-convention", choices=["ase", "vasp_kbar"], default="ase",
                        help="how stress labels are written: ASE's eV/Å^3 (default) or VASP's raw "
                             "kB, compression positive, xx yy zz xy yz zx (mlearn's virial_stress_raw)")
    parser.add_argument("--config-type-key", default="config_type",
                        help="info key that groups structures in the table (default: config_type)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import json

    import torch

    from .errors import ModelFileError, SINetInputError
    from .evaluate import evaluate_files, format_table, write_predictions
    from .inference import resolve_model
    from .labels import LabelKeys

    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    defaults = LabelKeys()
    keys = LabelKeys(energy=args.energy_key or defaults.energy, forces=args.forces_key or defaults.forces,
                     stress=args.stress_key or defaults.stress,
                     virials=args.virials_key or defaults.virials,
                     stress_convention=args.stress_convention, config_type=args.config_type_key)
    try:
        model = resolve_model(args.model).to(device=args.device,  # a file wins over a shipped name
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


def ipi_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sinet-ipi",
        description="Serve a SINet potential to an i-PI server (i-PI's socket protocol): "
                    "energy, forces and, for structures periodic in all three directions, "
                    "the virial (zero otherwise). Start i-pi, then this client.",
        epilog="Example: i-pi input.xml & sinet-ipi sinet-rmd17-ethanol init.xyz --unix sinet "
               "(i-PI's <ffsocket mode='unix'><address>sinet</address>). docs/integrations.md",
    )
    parser.add_argument("model", help="model file, shipped potential name (sinet-train's "
                                      "best_model.pt, or e.g. sinet-rmd17-ethanol) or committee glob")
    parser.add_argument("structure", help="i-PI's initial structure (file, shipped molecule or "
                                          "ase.build.molecule name): elements, order and pbc")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="i-PI's UNIX socket <address> "
                                                      "(the socket file is /tmp/ipi_NAME)")
    where.add_argument("--port", type=_POSITIVE_INT, help="i-PI's TCP <port> (mode='inet')")
    parser.add_argument("--host", default="localhost", help="i-PI's host with --port")
    parser.add_argument("--wait", type=_NON_NEGATIVE, default=60.0,
                        help="seconds to keep trying while i-PI is not listening yet")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network (faster steps, slow first call)")
    args = parser.parse_args(argv)

    from .calculator import SINetCalculator
    from .integrations.ipi import run_client

    try:
        _check_device(args.device)
        atoms = _load_structure(args.structure)
        calc = SINetCalculator(args.model, device=args.device, dtype=args.dtype,
                               compile=args.compile)
        if not atoms.pbc.all():
            print("sinet-ipi: the structure is not periodic in all three directions: sending a "
                  "zero virial (no constant-pressure runs)", file=sys.stderr)
        steps = run_client(calc, atoms, unixsocket=args.unix, host=args.host, port=args.port,
                           wait=args.wait)
    except (ConnectionError, ValueError, KeyError, FileNotFoundError) as err:
        print(f"sinet-ipi: error: {err}", file=sys.stderr)
        return 2
    print(f"sinet-ipi: i-PI closed the connection after {steps} force evaluations")
    return 0
