"""The MD driver behind ``sinet-md``: ASE dynamics with reporting.

Ensembles (``--ensemble``), all ASE integrators on a SINet calculator:

* ``nve``: velocity Verlet;
* ``langevin``: NVT Langevin (``fixcm=False``: ASE's default centre-of-mass fix
  over-heats small molecules), friction ``--friction``;
* ``bussi``: NVT stochastic velocity rescaling (Bussi, Donadio and Parrinello,
  J. Chem. Phys. 126, 014101 (2007); :class:`ase.md.bussi.Bussi`), time constant
  ``--thermostat-time``; it samples the canonical ensemble without damping the dynamics;
* ``npt``: isotropic Martyna-Tobias-Klein barostat with Nose-Hoover chains
  (J. Chem. Phys. 101, 4177 (1994); :class:`ase.md.nose_hoover_chain.IsotropicMTKNPT`),
  the volume fluctuates at fixed cell shape; ``npt-cell`` lets the whole cell fluctuate
  (:class:`~ase.md.nose_hoover_chain.MTKNPT`). The external pressure ``--pressure`` is in
  GPa (1 bar = 1e-4 GPa); both need a cell periodic in all three directions, whose
  stress the calculator returns together with the forces
  (``SINetCalculator(compute_stress=True)``: one model call per step).

Every ``interval`` steps it prints step, time, temperature and the potential, kinetic and
total energies (plus volume and pressure for a periodic cell), writes the same line to
a log file beside the trajectory (``<trajectory>.log``, a ``#`` header, readable with
``numpy.loadtxt``) and appends a frame to the trajectory; at the end it reports the
total-energy drift (NVE) and the speed. The temperature counts the degrees of freedom the
run moves (:func:`degrees_of_freedom`: 3N - 6 for a molecule, whose momentum and angular
momentum stay zero; ASE's ``get_temperature`` counts 3N); the initial velocities and the
Bussi thermostat use the same count. (ASE's MTK thermostat counts 3N, so under ``npt`` the
logged temperature settles 3N/(3N - 3) above ``--temperature``: 1.6 % for 64 atoms.)

Ctrl-C (SIGINT) stops the run cleanly: the step in progress finishes, its frame is
written and the trajectory closed, so every frame reads back; :class:`MDInterrupted`
carries the summary up to there (``sinet-md`` exits with code 130). A second Ctrl-C
aborts at once.

A :class:`StabilityMonitor` watches the run every ``check_interval`` steps and
stops it (:class:`MDInstabilityError`) when the dynamics has left the regime
the potential describes: the temperature runs away, the NVE total energy
drifts by more than a threshold per atom, or an atom that started with
neighbours has none left within the model's cutoff (the molecule falls
apart). Without it a too-large time step produces thousands of kelvin or a
dissociated molecule while the run reports success. The trajectory written
so far, plus the frame that failed the check, stays on disk.
"""

import os
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from ase import units
from ase.io import Trajectory, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list
from tqdm import tqdm

from .calculator import SINetCalculator
from .errors import OutOfDomainError
from . import background_compile
from .fastpath import (
    MD_AUTO_COMPILE_STEPS,
    MD_COLD_COMPILE_STEPS,
    AutoCompile,
    CompileFallbackWarning,
    compile_problem,
    compiled_network,
)


class MDInstabilityError(RuntimeError):
    """The dynamics blew up (temperature runaway, energy drift, dissociation)."""


class MDInterrupted(Exception):
    """The run was stopped with Ctrl-C; ``summary`` describes it up to the last step."""

    def __init__(self, summary: str, step: int):
        super().__init__(f"interrupted (Ctrl-C) at step {step}")
        self.summary = summary
        self.step = step


#: ``--ensemble`` choices: name -> one line for ``sinet-md --help``
ENSEMBLES = {
    "nve": "velocity Verlet",
    "langevin": "NVT, Langevin thermostat (--friction)",
    "bussi": "NVT, Bussi stochastic velocity rescaling (--thermostat-time)",
    "npt": "NPT, isotropic MTK barostat + Nose-Hoover chains (--pressure, --barostat-time; periodic cells only)",
    "npt-cell": "NPT like npt, the whole cell (shape too) fluctuates",
}
#: ensembles with a barostat: they need a cell periodic in all three directions
NPT_ENSEMBLES = ("npt", "npt-cell")


class _StopOnSigint:
    """While active, the first SIGINT only sets :attr:`requested` (the run stops after the
    step in progress, between two steps, never in the middle of a trajectory write); a second
    one raises ``KeyboardInterrupt`` at once. Python allows signal handlers only in the
    main thread; elsewhere this does nothing and Ctrl-C keeps Python's behaviour."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("Ctrl-C: stopping after this step and closing the trajectory (Ctrl-C again aborts at once)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _StopRequested(Exception):
    """Raised between two steps after a Ctrl-C (an ASE observer cannot end ``run`` otherwise)."""


class StabilityMonitor:
    """Checks that an MD run stays physical; :meth:`check` raises :class:`MDInstabilityError`.

    Args:
        atoms: the simulated structure (its state at construction is the reference).
        cutoff: an atom that had a neighbour within this distance (Å) at the start and
            has none now has left the bonded structure (default: the model's cutoff,
            beyond which the potential sees the atom as isolated); ``inf`` switches this off.
        max_temperature: K; a higher instantaneous temperature stops the run.
        max_drift: eV/atom; a larger change of the total energy stops the run (NVE only:
            pass ``None`` for a thermostat, which exchanges energy by design).
        e_start: the reference total energy (default: the current one).
        n_dof: degrees of freedom of the temperature (:func:`degrees_of_freedom`, as the
            ``sinet-md`` log counts them); default ASE's ``3 N``.
    """

    def __init__(self, atoms, cutoff: float, max_temperature: float, max_drift=None, e_start=None, n_dof=None):
        self.atoms = atoms
        self.n_dof = 3 * len(atoms) if n_dof is None else int(n_dof)
        self.cutoff = float(cutoff)
        self.max_temperature = float(max_temperature)
        self.max_drift = None if max_drift is None else float(max_drift)
        self.e_start = atoms.get_total_energy() if e_start is None and max_drift is not None else e_start
        self.bonded = self._neighbour_counts() > 0 if np.isfinite(self.cutoff) else None

    def _neighbour_counts(self) -> np.ndarray:
        i = neighbor_list("i", self.atoms, self.cutoff)
        return np.bincount(i, minlength=len(self.atoms))

    def problem(self):
        """A sentence describing what went wrong, or ``None`` while the run is stable."""
        atoms = self.atoms
        if not np.all(np.isfinite(atoms.positions)) or not np.all(np.isfinite(atoms.get_velocities())):
            return "positions or velocities are no longer finite numbers"
        temperature = kinetic_temperature(atoms, self.n_dof)
        if not temperature <= self.max_temperature:
            return (
                f"the temperature reached {temperature:.0f} K, above the limit of "
                f"{self.max_temperature:.0f} K (--max-temperature)"
            )
        if self.max_drift is not None:
            drift = (atoms.get_total_energy() - self.e_start) / len(atoms)
            if not abs(drift) <= self.max_drift:
                return (
                    f"the total energy drifted by {drift:+.3g} eV/atom, beyond the limit of "
                    f"{self.max_drift:g} eV/atom (--max-drift)"
                )
        lost = np.flatnonzero(self.bonded & (self._neighbour_counts() == 0)) if self.bonded is not None else []
        if len(lost):
            shown = ", ".join(str(k) for k in lost[:5]) + (", ..." if len(lost) > 5 else "")
            return (
                f"{len(lost)} atom(s) (index {shown}) lost every neighbour within "
                f"{self.cutoff:g} Å (--max-neighbour-distance): the structure fell apart"
            )
        return None

    def check(self, step=None) -> None:
        """Raise :class:`MDInstabilityError` when :meth:`problem` finds something."""
        problem = self.problem()
        if problem is not None:
            where = "" if step is None else f" at step {step}"
            raise MDInstabilityError(
                f"the MD became unstable{where}: {problem}. Use a smaller --timestep, a lower "
                "--temperature, or a potential trained on such configurations"
            )


#: default of ``--max-drift``: eV/atom of NVE total-energy change (a stable run drifts ~1e-5)
DEFAULT_MAX_DRIFT = 0.05


def default_max_temperature(temperature: float) -> float:
    """Default of ``--max-temperature``: 5 times the requested temperature plus 1000 K."""
    return 5.0 * temperature + 1000.0


def compile_mode(choice: str, steps: int):
    """``sinet-md --compile`` -> the calculator's ``compile``: ``off`` eager, ``on`` compiled
    from the first step, ``auto`` (default) compiled from the first step for runs of at least
    :data:`~sinet_ase.fastpath.MD_AUTO_COMPILE_STEPS` steps (long enough to pay back the
    compilation; eager where the machine cannot compile, with a note), else eager."""
    if choice == "off":
        return False
    if choice == "on":
        return True
    if choice != "auto":
        raise ValueError(f"--compile must be auto, on or off, got {choice!r}")
    return AutoCompile(after_calls=0) if steps >= MD_AUTO_COMPILE_STEPS else False


def _model_file(args) -> str:
    if args.model:
        return str(args.model)
    from .pretrained import default_potential, pretrained_path

    return str(pretrained_path(args.potential or default_potential()))


def defer_first_compilation(atoms, args, network) -> None:
    """``--compile auto`` where this network was never compiled on this machine (no saved
    artefact, :mod:`sinet_ase.fastpath`): a run of fewer than
    :data:`~sinet_ase.fastpath.MD_COLD_COMPILE_STEPS` steps is faster eager than with a first
    compilation, so it runs eagerly and a low-priority background process compiles and saves
    the network for later runs (:mod:`sinet_ase.background_compile`). Longer runs, committees
    and machines where networks are not saved compile in the run as before."""
    if args.steps >= MD_COLD_COMPILE_STEPS or atoms.calc.committee:
        return
    artefact = network.artefact_file(atoms.calc.device.type)
    if artefact is None or os.path.exists(artefact):
        return
    pid = background_compile.start(_model_file(args), args.dtype, str(atoms.calc.device), atoms, artefact)
    later = (
        f"a low-priority background process (pid {pid}) compiles it for later runs once this run ends"
        if pid
        else "--compile on compiles it in the run"
    )
    network.run_eagerly(
        f"no compiled network saved on this machine yet, and a run of {args.steps} steps is "
        f"faster eager than with a first compilation; {later}"
    )


def _calculator(args) -> SINetCalculator:
    options = dict(
        device=args.device,
        dtype=args.dtype,
        compile=compile_mode(getattr(args, "compile", "auto"), args.steps),
        # a barostat asks for the forces, then the stress of the same positions: one call
        compute_stress=args.ensemble in NPT_ENSEMBLES,
    )
    if args.model:
        return SINetCalculator(args.model, **options)
    from .pretrained import default_potential

    name = args.potential or default_potential()
    return SINetCalculator.from_pretrained(name, **options)


def _append_extxyz(path: Path, atoms) -> None:
    """Append one extxyz frame whole or not at all: the frame is formatted in memory, and
    if the write fails (a full disk) the file is cut back to its previous end, so the
    frames already written still read back with ``ase.io.read(path, ":")``."""
    import io

    text = io.StringIO()
    write(text, atoms, format="extxyz")
    data = text.getvalue().encode()
    with open(path, "ab") as handle:
        end = handle.tell()
        try:
            handle.write(data)
            handle.flush()
        except OSError as err:
            handle.truncate(end)
            if err.filename is None:  # a failed write does not name its file: say which
                raise OSError(err.errno, err.strerror, str(path)) from err
            raise


def check_ensemble(atoms, args) -> None:
    """A clear error for an ensemble the structure or the settings cannot run."""
    if args.ensemble in NPT_ENSEMBLES:
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            raise ValueError(
                f"--ensemble {args.ensemble} changes the cell to hold the pressure: it needs a "
                f"structure periodic in all three directions with a cell (this one has pbc "
                f"{atoms.pbc.tolist()}); use nve, langevin or bussi for a molecule, or give a "
                "periodic structure file (extxyz with Lattice and pbc)"
            )
    if args.ensemble in ("bussi",) + NPT_ENSEMBLES and not args.temperature > 0:
        raise ValueError(
            f"--ensemble {args.ensemble} needs a --temperature above 0 K "
            "(its thermostat rescales the velocities towards it)"
        )


def _thermostat_time(args) -> float:
    """fs: ``--thermostat-time``, by default 100 time steps (ASE's advice for MTK)."""
    value = getattr(args, "thermostat_time", None)
    return 100.0 * args.timestep if value is None else value


def _barostat_time(args) -> float:
    """fs: ``--barostat-time``, by default 1000 time steps (ASE's advice for MTK)."""
    value = getattr(args, "barostat_time", None)
    return 1000.0 * args.timestep if value is None else value


def _ase_integrator(module: str, name: str, ensemble: str):
    """An integrator class of recent ASE versions, or a clear error naming the upgrade."""
    import importlib

    import ase

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(
            f"--ensemble {ensemble} needs {module}.{name}, which ASE {ase.__version__} "
            "lacks: pip install -U ase (3.29 has it)"
        ) from None


def degrees_of_freedom(atoms, ensemble: str) -> int:
    """The kinetic degrees of freedom that a run of ``ensemble`` moves: the n_dof of its
    temperature ``T = 2 E_kin / (n_dof k_B)`` and of its Bussi thermostat.

    :func:`run_md` zeroes the centre-of-mass momentum and, for a structure with no periodic
    direction, the angular momentum. Forces that sum to zero (any translation-invariant
    potential) keep the momentum at zero, and so do the velocity rescaling of Bussi and the
    Nose-Hoover chains of MTK; the rotation-invariant forces of an isolated structure keep its
    angular momentum at zero. The kinetic energy then lives in 3N - 3 degrees of freedom, or
    3N - 6 (3N - 5 for a linear molecule) without periodic directions, not ASE's 3N
    (``atoms.get_temperature``): a thermostat that targets 3N/2 k_B T heats the moving degrees
    of freedom by 3N / n_dof (29 % for ethanol). Langevin's per-atom friction and noise
    (``fixcm=False``) move all 3N, and so does anything under ASE constraints, whose count
    ASE already lowers.
    """
    n_dof = atoms.get_number_of_degrees_of_freedom()
    if ensemble == "langevin" or atoms.constraints:
        return n_dof
    n_dof -= 3
    if not atoms.pbc.any():
        moments = atoms.get_moments_of_inertia()
        n_dof -= int(np.count_nonzero(moments > 1e-6 * moments.max())) if moments.max() > 0 else 0
    return max(n_dof, 1)


def kinetic_temperature(atoms, n_dof: int) -> float:
    """K: ``2 E_kin / (n_dof k_B)`` (:func:`degrees_of_freedom`)."""
    return 2.0 * atoms.get_kinetic_energy() / (n_dof * units.kB)


def make_dynamics(atoms, args, rng):
    """The ASE integrator for ``args.ensemble`` (velocities already set)."""
    dt = args.timestep * units.fs
    if args.ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if args.ensemble == "langevin":
        return Langevin(
            atoms, dt, temperature_K=args.temperature, friction=args.friction / units.fs, fixcm=False, rng=rng
        )
    if args.ensemble == "bussi":
        Bussi = _ase_integrator("ase.md.bussi", "Bussi", args.ensemble)
        dyn = Bussi(atoms, dt, temperature_K=args.temperature, taut=_thermostat_time(args) * units.fs, rng=rng)
        # ASE's Bussi counts 3N degrees of freedom; the run moves fewer (degrees_of_freedom):
        # rescale towards n_dof/2 k_B T, or the moving ones end up at 3N/n_dof times T
        dyn.ndof = degrees_of_freedom(atoms, args.ensemble)
        dyn.target_kinetic_energy = 0.5 * dyn.temp * dyn.ndof
        return dyn
    if args.ensemble in NPT_ENSEMBLES:
        kind = _ase_integrator(
            "ase.md.nose_hoover_chain", "IsotropicMTKNPT" if args.ensemble == "npt" else "MTKNPT", args.ensemble
        )
        return kind(
            atoms,
            dt,
            temperature_K=args.temperature,
            pressure_au=args.pressure * units.GPa,
            tdamp=_thermostat_time(args) * units.fs,
            pdamp=_barostat_time(args) * units.fs,
        )
    raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {args.ensemble!r}")


def log_path(args) -> Path:
    """The log file: ``--log``, or the trajectory's name with ``.log``."""
    given = getattr(args, "log", None)
    return Path(given) if given else Path(args.trajectory).with_suffix(".log")


def run_md(atoms, args) -> str:
    """Run the dynamics described by the parsed ``sinet-md`` arguments; returns the summary text.

    Raises :class:`MDInstabilityError` when a stability check fails and
    :class:`MDInterrupted` (with the summary so far) after a Ctrl-C."""
    check_ensemble(atoms, args)
    started_up = time.perf_counter()
    atoms.calc = _calculator(args)
    periodic = bool(atoms.pbc.all()) and atoms.cell.rank == 3
    network = compiled_network(atoms.calc.model)
    compiles = network is not None and network.after_calls == 0 and compile_problem(atoms.calc.device.type) is None
    if compiles and getattr(args, "compile", "auto") == "auto":
        defer_first_compilation(atoms, args, network)
    if compiles and network.fallback_reason is None:
        tqdm.write(
            "compiling the network for this run (the first time takes a while; later runs "
            "reuse the cache; --compile off runs eagerly)"
        )
    rng = np.random.default_rng(args.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():  # a periodic structure has no rotation to remove
        ZeroRotation(atoms)
    n_dof = degrees_of_freedom(atoms, args.ensemble)
    if atoms.get_kinetic_energy() > 0:  # start at the temperature of the moving degrees of freedom
        atoms.set_momenta(atoms.get_momenta() * np.sqrt(args.temperature / kinetic_temperature(atoms, n_dof)))
    dyn = make_dynamics(atoms, args, rng)

    path = Path(args.trajectory)
    extxyz = path.suffix in (".xyz", ".extxyz")
    if extxyz and path.exists():
        path.unlink()  # the user asked for this output file; ASE's Trajectory("w") truncates likewise
    log_file = log_path(args)
    if log_file.resolve() == path.resolve():
        raise ValueError(f"--log {log_file} is the trajectory file; give another name")
    traj = None if extxyz else Trajectory(str(path), "w", atoms)
    log = None
    frames = [0]

    def save():
        if extxyz:
            _append_extxyz(path, atoms)
        else:
            traj.write()
        frames[0] += 1

    with warnings.catch_warnings():  # the summary says why the network ran eagerly, in one line
        warnings.simplefilter("ignore", CompileFallbackWarning)
        e_start = atoms.get_total_energy()
    start_up = time.perf_counter() - started_up
    n_atoms = len(atoms)
    temperatures = []
    header = f"{'step':>7} {'time/ps':>8} {'T/K':>8} {'E_pot/eV':>13} {'E_kin/eV':>10} {'E_tot/eV':>13}"
    if periodic:
        header += f" {'V/Å^3':>11} {'P/GPa':>9}"
    max_temperature = getattr(args, "max_temperature", None)
    if max_temperature is None:
        max_temperature = default_max_temperature(args.temperature)
    monitor = StabilityMonitor(
        atoms,
        cutoff=getattr(args, "max_neighbour_distance", None) or float(atoms.calc.model.cutoff),
        max_temperature=max_temperature,
        max_drift=getattr(args, "max_drift", DEFAULT_MAX_DRIFT) if args.ensemble == "nve" else None,
        e_start=e_start,
        n_dof=n_dof,
    )
    dyn.attach(lambda: monitor.check(dyn.nsteps), interval=getattr(args, "check_interval", 10))
    stop = _StopOnSigint()

    def stop_if_asked():
        if stop.requested:
            raise _StopRequested

    dyn.attach(stop_if_asked, interval=1)
    bar = tqdm(total=args.steps, disable=args.no_progress, unit="step", leave=False)

    def report():
        temperatures.append(kinetic_temperature(atoms, n_dof))
        e_pot, e_kin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        line = (
            f"{dyn.nsteps:7d} {dyn.nsteps * args.timestep / 1000:8.3f} {temperatures[-1]:8.1f} "
            f"{e_pot:13.5f} {e_kin:10.5f} {e_pot + e_kin:13.5f}"
        )
        if periodic:  # the instantaneous pressure, kinetic part included (as the barostat sees it)
            pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3
            line += f" {atoms.get_volume():11.3f} {pressure / units.GPa:9.4f}"
        tqdm.write(line)
        log.write(line + "\n")
        log.flush()  # whole lines on disk as the run goes (a crash or Ctrl-C keeps them)
        save()

    started = time.perf_counter()
    interrupted = False
    try:
        log = log_file.open("w")
        log.write("#" + header[1:] + "\n")
        with stop:
            tqdm.write(header)
            report()
            while dyn.nsteps < args.steps:
                before = dyn.nsteps
                try:
                    dyn.run(min(args.interval, args.steps - dyn.nsteps))
                except _StopRequested:
                    interrupted = True
                bar.update(dyn.nsteps - before)
                if interrupted:
                    if dyn.nsteps > before:
                        report()  # the last whole step
                    break
                report()
    except (MDInstabilityError, OutOfDomainError) as err:
        save()  # the frame that failed the check, for inspection
        if isinstance(err, OutOfDomainError):  # the calculator's check, at any step
            err = f"the MD became unstable at step {dyn.nsteps}: it reached a {err}"
        raise MDInstabilityError(f"{err}. The trajectory up to step {dyn.nsteps} is in {path}") from None
    finally:
        bar.close()
        if traj is not None:
            traj.close()
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - started

    steps = dyn.nsteps
    ms_per_step = 1000 * elapsed / max(steps, 1)
    lines = [
        f"{steps} steps of {args.timestep} fs ({args.ensemble}) on {n_atoms} atoms in {elapsed:.1f} s: "
        f"{ms_per_step:.2f} ms/step, {steps / elapsed:.1f} steps/s, "
        f"{steps * args.timestep * 1e-6 / elapsed * 86400:.3f} ns/day",
        f"start-up (model, first force call{', compilation' if network and network.active else ''}): "
        f"{start_up:.1f} s; " + (network.describe() if network is not None else "network eager"),
    ]
    drift = atoms.get_total_energy() - e_start
    if args.ensemble == "nve":
        ps = steps * args.timestep / 1000
        lines.append(
            f"NVE energy drift: {drift:+.3e} eV total, {drift / n_atoms:+.3e} eV/atom, "
            f"{drift / n_atoms / max(ps, 1e-12):+.3e} eV/atom/ps"
        )
    lines.append(
        f"mean temperature {np.mean(temperatures):.1f} K ({n_dof} degrees of freedom); trajectory: {path} "
        f"({frames[0]} frames; view: ase gui {path}); log: {log_file}"
    )
    if interrupted:
        raise MDInterrupted("\n".join(lines), steps)
    return "\n".join(lines)
