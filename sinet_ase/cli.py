"""Console commands: ``sinet-train`` (train a potential, a QM9 target or the N-body model),
``sinet-md`` (run MD with a potential), ``sinet-eval`` (a potential's errors on labelled data
files, an N-body model's test MSE on an ``.npz`` split) and ``sinet-ipi`` (serve a potential
to i-PI)."""

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


def train_parser() -> argparse.ArgumentParser:
    """The ``sinet-train`` command line; its epilog lists the config sections and keys."""
    from .train.template import config_sections_help

    parser = argparse.ArgumentParser(
        prog="sinet-train",
        formatter_class=_TrainHelpFormatter,
        description="Train a SINet model from a YAML config: an energy+force potential "
        "(default), with 'task: qm9' a QM9 property (training/qm9_*.yaml), with "
        "'task: nbody' the charged N-body model (training/nbody*.yaml).",
        epilog=config_sections_help() + "\n\nOverrides: dotted keys after the config, e.g. "
        "training.epochs=5 run_dir=runs/x. Start a config with sinet-train --print-config "
        "> my.yaml. docs/training.md",
    )
    parser.add_argument("config", nargs="?", default=None, help="YAML config (see training/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print a commented config of a potential with every key at its "
        "default (data.train: [train.extxyz]) and exit",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from run_dir/checkpoint.pt exactly where it stopped"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--committee",
        type=int,
        default=None,
        metavar="N",
        help="train N models with seeds seed..seed+N-1 into run_dir/member_k "
        "(a committee for SINetCalculator's uncertainty)",
    )
    return parser


class _TrainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's one line per config section."""


def train_main(argv=None) -> int:
    parser = train_parser()
    args = parser.parse_intermixed_args(argv)  # --quiet / --resume also after the overrides
    if args.print_config:
        from .train.template import default_config_yaml

        print(default_config_yaml(), end="")
        return 0
    if args.config is None:
        parser.error("give a config file (sinet-train --print-config > my.yaml writes one)")

    from .qm9.cache import QM9CacheError
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
    print(
        f"done: {summary.get('epochs_done')} epochs; best epoch {best.get('epoch')} "
        f"({describe_best(summary)}); model: {config.run_dir}/best_model.pt"
    )
    return 0


def _train_committee(config, args) -> int:
    from .train.committee import committee_glob, member_configs, train_committee
    from .train.tasks import describe_best

    summaries = train_committee(config, args.committee, resume=args.resume, quiet=args.quiet)
    for member, summary in zip(member_configs(config, args.committee), summaries):
        best = summary.get("best", {})
        print(
            f"{member.run_dir}: {summary.get('epochs_done')} epochs; best epoch "
            f"{best.get('epoch')} ({describe_best(summary)})"
        )
    if config.task == "energy":
        print(f'committee of {args.committee}: SINetCalculator("{committee_glob(config)}")')
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


def _FINITE(text):
    """An argparse type: a finite float (``--pressure`` may be negative: tension)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


_FINITE.__name__ = "a finite number"
#: trajectory formats sinet-md writes (.traj: ASE's binary trajectory; the others extxyz text)
TRAJECTORY_SUFFIXES = (".traj", ".extxyz", ".xyz")


def _trajectory_path(text):
    from pathlib import Path

    if Path(text).suffix.lower() not in TRAJECTORY_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the trajectory is written as ASE .traj or extxyz; give a file name "
            f"ending in {', '.join(TRAJECTORY_SUFFIXES)} (convert afterwards with ase convert)"
        )
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
            raise ValueError(
                f"--device {device}: CUDA is not available on this machine "
                "(no GPU, or torch was built without CUDA); use --device cpu"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _card_start_structure(args) -> str:
    """The start structure a shipped potential's card names (``sinet-md --potential NAME``)."""
    from .pretrained import default_potential, potential_card

    start = None if args.model else potential_card(args.potential or default_potential()).get("start_structure")
    if start is None:
        raise ValueError("give a structure: a shipped molecule (e.g. aspirin), an ase.build.molecule name or a file")
    return start


def list_potentials() -> str:
    """``sinet-md --list``: each shipped potential, its elements, whether it is for periodic
    cells, and the start structure ``sinet-md --potential NAME`` runs without a structure."""
    from .pretrained import default_potential, list_pretrained, potential_card

    names = list_pretrained()
    if not names:
        return "no shipped potential in this installation; pass --model FILE"
    default = default_potential()
    rows = [("name", "elements", "periodic", "start structure", "")]
    for name in names:
        card = potential_card(name)
        elements = card.get("elements")
        periodic = card.get("periodic")
        rows.append(
            (
                name,
                " ".join(elements) if elements else "-",
                {True: "yes", False: "no"}.get(periodic, "-"),
                card.get("start_structure") or "- (give one)",
                "(default)" if name == default else "",
            )
        )
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows]
    lines.append(
        "run one: sinet-md --potential NAME [structure]; shipped molecules: " + ", ".join(_shipped_molecules())
    )
    return "\n".join(line.rstrip() for line in lines)


def _shipped_molecules():
    from .pretrained import shipped_structure_names

    return shipped_structure_names() or ["none"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with ``(default: ...)`` after every option that has a default worth
    showing (not for a flag, and not for ``None``, whose help says what happens instead)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def md_parser() -> argparse.ArgumentParser:
    """The ``sinet-md`` command line (every option has help; defaults are shown)."""
    from .fastpath import MD_AUTO_COMPILE_STEPS, MD_COLD_COMPILE_STEPS
    from .md import DEFAULT_MAX_DRIFT, ENSEMBLES

    parser = argparse.ArgumentParser(
        prog="sinet-md",
        formatter_class=HelpFormatter,
        description="Molecular dynamics with a SINet potential: progress bar, temperature and "
        "energies every interval, a trajectory for `ase gui` with a log file beside "
        "it, energy drift and speed. Ctrl-C stops cleanly (exit code 130) and keeps "
        "every frame written so far.",
        epilog="Examples: sinet-md aspirin --potential sinet-rmd17-aspirin; sinet-md --potential "
        "sinet-mlearn-si --ensemble npt --pressure 0.0001; sinet-md cell.extxyz --model "
        "best_model.pt. Ensembles: " + "; ".join(f"{k}: {v}" for k, v in ENSEMBLES.items()) + ". docs/md.md",
    )
    parser.add_argument(
        "structure",
        nargs="?",
        default=None,
        help="shipped molecule (e.g. aspirin), ase.build.molecule name, or a file "
        "ase.io.read reads (its last frame; extxyz with Lattice and pbc for a "
        "periodic cell); default: the start structure of the --potential "
        "(sinet-md --list)",
    )
    parser.add_argument(
        "--structure",
        dest="structure_option",
        default=None,
        metavar="STRUCTURE",
        help="the same as the positional structure",
    )
    parser.add_argument(
        "--potential",
        default=None,
        help="shipped potential name (default: sinet-xtb-md17); 'list' lists them, as --list does",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the shipped potentials with their elements and start structures, and exit",
    )
    parser.add_argument(
        "--model", default=None, help="model file (sinet-train's best_model.pt) instead of a shipped potential"
    )
    parser.add_argument("--steps", type=_POSITIVE_INT, default=2000, help="MD steps")
    parser.add_argument("--timestep", type=_POSITIVE, default=0.5, help="fs")
    parser.add_argument(
        "--temperature",
        type=_NON_NEGATIVE,
        default=300.0,
        help="K: initial Maxwell-Boltzmann velocities, and the thermostat's target",
    )
    parser.add_argument("--ensemble", choices=list(ENSEMBLES), default="nve", help="integrator (listed below)")
    parser.add_argument("--friction", type=_NON_NEGATIVE, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument(
        "--thermostat-time",
        type=_POSITIVE,
        default=None,
        help="fs: Bussi's time constant and the Nose-Hoover chains' damping time of npt (default: 100 x --timestep)",
    )
    parser.add_argument(
        "--pressure", type=_FINITE, default=1e-4, help="external pressure of npt / npt-cell, GPa (1e-4 GPa = 1 bar)"
    )
    parser.add_argument(
        "--barostat-time",
        type=_POSITIVE,
        default=None,
        help="fs: the MTK barostat's damping time (default: 1000 x --timestep)",
    )
    parser.add_argument(
        "--interval", type=_POSITIVE_INT, default=100, help="report, log and save a frame every N steps"
    )
    parser.add_argument(
        "--trajectory", type=_trajectory_path, default="sinet-md.traj", help=".traj (ASE) or .extxyz / .xyz"
    )
    parser.add_argument(
        "--log",
        default=None,
        help="log file: step, time, T, E_pot, E_kin, E_tot (and volume, pressure "
        "for a periodic cell) every --interval steps (default: the "
        "trajectory's name with .log)",
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="precision of the model")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help=f"torch.compile the network: auto for runs of {MD_AUTO_COMPILE_STEPS} steps "
        f"or more where a C++ compiler exists (the first time on a machine from {MD_COLD_COMPILE_STEPS} "
        "steps; shorter runs go eagerly and compile in the background for later runs), on, or off (eager)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initial velocities and the thermostat")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    stability = parser.add_argument_group(
        "stability checks",
        "every --check-interval steps; a failed check stops the run with exit "
        "code 3 and keeps the trajectory so far (pass inf to switch one off)",
    )
    stability.add_argument(
        "--max-temperature", type=_POSITIVE, default=None, help="K (default: 5 x --temperature + 1000 K)"
    )
    stability.add_argument(
        "--max-drift", type=_POSITIVE, default=DEFAULT_MAX_DRIFT, help="NVE total-energy change, eV/atom"
    )
    stability.add_argument(
        "--max-neighbour-distance",
        type=_POSITIVE,
        default=None,
        help="an atom with no neighbour this close (Å) that had one at the "
        "start stops the run (default: the model's cutoff)",
    )
    stability.add_argument("--check-interval", type=_POSITIVE_INT, default=10, help="steps")
    return parser


def md_main(argv=None) -> int:
    parser = md_parser()
    args = parser.parse_args(argv)
    if args.structure is not None and args.structure_option is not None:
        parser.error("give the structure once: as the positional argument or as --structure")
    args.structure = args.structure or args.structure_option
    if args.list or args.potential == "list":
        print(list_potentials())
        return 0

    from .md import MDInstabilityError, MDInterrupted, run_md

    try:
        _check_device(args.device)
        atoms = _load_structure(args.structure or _card_start_structure(args))
        report = run_md(atoms, args)
    except MDInterrupted as stopped:
        print(stopped.summary)
        print(f"sinet-md: {stopped}; every frame written so far reads back", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before the run started (loading, compiling) or a second Ctrl-C
        print("sinet-md: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
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
        "config_type; predictions to extxyz for parity plots. Given an N-body model "
        "file (task: nbody), its test MSE on an .npz split and the x + v baseline.",
        epilog="N-body: sinet-eval RUN/best_model.pt ~/.cache/sinet_ase/nbody/test.npz [--time]; "
        "A.pt,B.pt,... scores the ensemble (mean of the predicted positions).",
    )
    parser.add_argument(
        "model",
        help="model file (best_model.pt of a sinet-train run) or the name "
        "of a shipped potential (sinet-xtb-md17, ...); N-body model "
        "files joined by commas form an ensemble",
    )
    parser.add_argument(
        "data",
        nargs="+",
        help="labelled extxyz (or other ase.io) files; for an N-body model one .npz with x, v, q, target",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="structures per batch (default 16; N-body systems: 100)"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="extxyz of all frames with SINet_energy/SINet_forces/SINet_stress beside the reference labels",
    )
    parser.add_argument("--json", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--energy-key", default=None, help="energy label (default: energy)")
    parser.add_argument(
        "--forces-key", default=None, help="forces label (default: forces); when given, every frame needs it"
    )
    parser.add_argument(
        "--stress-key", default=None, help="stress label (default: stress); when given, every frame needs it"
    )
    parser.add_argument(
        "--virials-key", default=None, help="virials label (eV) read where a frame has no stress (default: virials)"
    )
    parser.add_argument(
        "--stress-convention",
        choices=["ase", "vasp_kbar"],
        default="ase",
        help="how stress labels are written: ASE's eV/Å^3 (default) or VASP's raw "
        "kB, compression positive, xx yy zz xy yz zx (mlearn's virial_stress_raw)",
    )
    parser.add_argument(
        "--config-type-key",
        default="config_type",
        help="info key that groups structures in the table (default: config_type)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=None,
        help="potentials: float64 (default); N-body models run in the dtype they were trained in",
    )
    parser.add_argument("--device", default="cpu")
    nbody = parser.add_argument_group("N-body model files")
    nbody.add_argument("--time", action="store_true", help="also time inference per batch (one model; on --device)")
    args = parser.parse_args(argv)

    from pathlib import Path

    from .nbody.evaluate import is_nbody_model_file

    first = args.model.split(",")[0]
    if Path(first).is_file() and is_nbody_model_file(first):
        if len(args.data) != 1:
            parser.error("an N-body model is scored on one .npz split")
        if args.dtype is not None:
            parser.error("--dtype: an N-body model runs in the dtype it was trained in")
        if args.time and "," in args.model:
            parser.error("--time times one model: give a single model file")
        if args.batch_size is not None and args.batch_size < 1:
            parser.error("--batch-size must be >= 1")
        from .nbody.evaluate import run

        return run(
            args.model,
            args.data[0],
            batch_size=args.batch_size or 100,
            time=args.time,
            device=args.device,
            json_path=args.json,
        )
    if args.time:
        parser.error("--time applies to N-body model files")
    args.batch_size = 16 if args.batch_size is None else args.batch_size
    args.dtype = args.dtype or "float64"

    import json

    import torch

    from .errors import ModelFileError, SINetInputError
    from .evaluate import evaluate_files, format_table, write_predictions
    from .inference import resolve_model
    from .labels import LabelKeys

    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    defaults = LabelKeys()
    keys = LabelKeys(
        energy=args.energy_key or defaults.energy,
        forces=args.forces_key or defaults.forces,
        stress=args.stress_key or defaults.stress,
        virials=args.virials_key or defaults.virials,
        stress_convention=args.stress_convention,
        config_type=args.config_type_key,
    )
    try:
        model = resolve_model(args.model).to(
            device=args.device,  # a file wins over a shipped name
            dtype=getattr(torch, args.dtype),
        )
        result, frames, preds = evaluate_files(
            model,
            args.data,
            keys,
            args.batch_size,
            args.device,
            require_forces=args.forces_key is not None,
            require_stress=args.stress_key is not None,
        )
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


def ipi_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sinet-ipi",
        description="Serve a SINet potential to an i-PI server (i-PI's socket protocol): "
        "energy, forces and, for structures periodic in all three directions, "
        "the virial (zero otherwise). Start i-pi, then this client.",
        epilog="Example: i-pi input.xml & sinet-ipi sinet-rmd17-ethanol init.xyz --unix sinet "
        "(i-PI's <ffsocket mode='unix'><address>sinet</address>). docs/integrations.md",
    )
    parser.add_argument(
        "model",
        help="model file, shipped potential name (sinet-train's "
        "best_model.pt, or e.g. sinet-rmd17-ethanol) or committee glob",
    )
    parser.add_argument(
        "structure",
        help="i-PI's initial structure (file, shipped molecule or ase.build.molecule name): elements, order and pbc",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="i-PI's UNIX socket <address> (the socket file is /tmp/ipi_NAME)")
    where.add_argument("--port", type=_POSITIVE_INT, help="i-PI's TCP <port> (mode='inet')")
    parser.add_argument("--host", default="localhost", help="i-PI's host with --port")
    parser.add_argument(
        "--wait", type=_NON_NEGATIVE, default=60.0, help="seconds to keep trying while i-PI is not listening yet"
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the network (faster steps, slow first call)"
    )
    args = parser.parse_args(argv)

    from .calculator import SINetCalculator
    from .integrations.ipi import run_client

    try:
        _check_device(args.device)
        atoms = _load_structure(args.structure)
        calc = SINetCalculator(args.model, device=args.device, dtype=args.dtype, compile=args.compile)
        if not atoms.pbc.all():
            print(
                "sinet-ipi: the structure is not periodic in all three directions: sending a "
                "zero virial (no constant-pressure runs)",
                file=sys.stderr,
            )
        steps = run_client(calc, atoms, unixsocket=args.unix, host=args.host, port=args.port, wait=args.wait)
    except (ConnectionError, ValueError, KeyError, FileNotFoundError) as err:
        print(f"sinet-ipi: error: {err}", file=sys.stderr)
        return 2
    print(f"sinet-ipi: i-PI closed the connection after {steps} force evaluations")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
