"""The MD driver behind ``sinet-md``: ASE dynamics with reporting.

Velocity Verlet (NVE) or Langevin (NVT, ``fixcm=False``: ASE's default
centre-of-mass fix over-heats small molecules) on a SINet calculator. Every
``interval`` steps it prints the temperature and the potential, kinetic and
total energies, and appends a frame to the trajectory; at the end it reports
the total-energy drift (NVE) and the speed.
"""

import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import Trajectory, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from tqdm import tqdm

from .calculator import SINetCalculator


def _calculator(args) -> SINetCalculator:
    if args.model:
        return SINetCalculator(args.model, device=args.device, dtype=args.dtype)
    from .pretrained import list_pretrained

    names = list_pretrained()
    name = args.potential or (names[0] if names else None)
    if name is None:
        raise KeyError("no shipped potential in this installation; pass --model FILE")
    return SINetCalculator.from_pretrained(name, device=args.device, dtype=args.dtype)


def run_md(atoms, args) -> str:
    """Run the dynamics described by the parsed ``sinet-md`` arguments; returns the summary text."""
    atoms.calc = _calculator(args)
    rng = np.random.default_rng(args.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dt = args.timestep * units.fs
    if args.ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        dyn = Langevin(atoms, dt, temperature_K=args.temperature, friction=args.friction / units.fs,
                       fixcm=False, rng=rng)

    path = Path(args.trajectory)
    extxyz = path.suffix in (".xyz", ".extxyz")
    if extxyz and path.exists():
        path.unlink()  # the user asked for this output file; ASE's Trajectory("w") truncates likewise
    traj = None if extxyz else Trajectory(str(path), "w", atoms)

    def save():
        if extxyz:
            write(str(path), atoms, append=True)
        else:
            traj.write()

    e_start = atoms.get_total_energy()
    n_atoms = len(atoms)
    temperatures = []
    header = f"{'step':>7} {'time/ps':>8} {'T/K':>8} {'E_pot/eV':>13} {'E_kin/eV':>10} {'E_tot/eV':>13}"
    bar = tqdm(total=args.steps, disable=args.no_progress, unit="step", leave=False)

    def report():
        temperatures.append(atoms.get_temperature())
        e_pot, e_kin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        line = (f"{dyn.nsteps:7d} {dyn.nsteps * args.timestep / 1000:8.3f} {temperatures[-1]:8.1f} "
                f"{e_pot:13.5f} {e_kin:10.5f} {e_pot + e_kin:13.5f}")
        tqdm.write(line)
        save()

    tqdm.write(header)
    report()
    started = time.perf_counter()
    done = 0
    while done < args.steps:
        chunk = min(args.interval, args.steps - done)
        dyn.run(chunk)
        done += chunk
        bar.update(chunk)
        report()
    elapsed = time.perf_counter() - started
    bar.close()
    if traj is not None:
        traj.close()

    ms_per_step = 1000 * elapsed / max(args.steps, 1)
    lines = [f"{args.steps} steps of {args.timestep} fs ({args.ensemble}) on {n_atoms} atoms in {elapsed:.1f} s: "
             f"{ms_per_step:.2f} ms/step, {args.steps / elapsed:.1f} steps/s, "
             f"{args.steps * args.timestep * 1e-6 / elapsed * 86400:.3f} ns/day"]
    drift = atoms.get_total_energy() - e_start
    if args.ensemble == "nve":
        ps = args.steps * args.timestep / 1000
        lines.append(f"NVE energy drift: {drift:+.3e} eV total, {drift / n_atoms:+.3e} eV/atom, "
                     f"{drift / n_atoms / max(ps, 1e-12):+.3e} eV/atom/ps")
    lines.append(f"mean temperature {np.mean(temperatures):.1f} K; trajectory: {path} (view: ase gui {path})")
    return "\n".join(lines)
