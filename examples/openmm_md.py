"""OpenMM molecular dynamics with a SINet potential, through openmm-ml's ASE bridge.

    pip install -e ".[openmm]"          # OpenMM and openmm-ml
    python examples/openmm_md.py sinet-rmd17-ethanol --structure CH3CH2OH --steps 1000

openmm-ml's ``MLPotential("ase")`` wraps any ASE calculator in an OpenMM
``PythonForce``: at every step OpenMM hands the positions (nm) to the calculator and
takes back energy (kJ/mol) and forces (kJ/mol/nm). The model is a model file or a
shipped potential's name; ``--structure`` an ``ase.build.molecule`` name or a file.
Velocity Verlet (NVE, default) prints the energy drift; ``--langevin`` runs OpenMM's
LangevinMiddleIntegrator at ``--temperature``. Molecules only here: for a periodic
structure, give the Topology its box vectors (``setPeriodicBoxVectors``) and the
bridge passes the cell on.
"""

import argparse
import os
import time

from ase import units
from ase.build import molecule
from ase.io import read

from sinet_ase import SINetCalculator

#: one eV in kJ/mol (ASE's constants, as the bridge uses)
EV_IN_KJ_PER_MOL = 1.0 / (units.kJ / units.mol)


def load_structure(spec):
    return read(spec) if os.path.exists(spec) else molecule(spec)


def topology_from_atoms(atoms):
    """An OpenMM Topology of one residue holding the atoms, in their order."""
    from openmm import app

    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for k, number in enumerate(atoms.numbers):
        element = app.Element.getByAtomicNumber(int(number))
        topology.addAtom(f"{element.symbol}{k + 1}", element, residue)
    return topology


def build_simulation(atoms, calc, timestep_fs=0.5, temperature=300.0, langevin=False, friction=1.0, seed=0):
    """An OpenMM ``Simulation`` of ``atoms`` with ``calc`` as the only force, velocities drawn
    at ``temperature`` (K); velocity Verlet, or Langevin with ``friction`` in 1/ps."""
    import openmm
    from openmm import app, unit
    from openmmml import MLPotential

    topology = topology_from_atoms(atoms)
    system = MLPotential("ase").createSystem(topology, calculator=calc)
    if langevin:
        integrator = openmm.LangevinMiddleIntegrator(
            temperature * unit.kelvin, friction / unit.picosecond, timestep_fs * unit.femtoseconds
        )
        integrator.setRandomNumberSeed(seed)
    else:
        integrator = openmm.VerletIntegrator(timestep_fs * unit.femtoseconds)
    # the network runs in Python: the Reference platform adds nothing to wait for
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(atoms.positions * unit.angstrom)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    return simulation


def energies_ev(simulation):
    """(potential, total) energy of the simulation's current state, eV."""
    from openmm import unit

    state = simulation.context.getState(getEnergy=True)
    potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    return potential / EV_IN_KJ_PER_MOL, (potential + kinetic) / EV_IN_KJ_PER_MOL


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model file (sinet-train, save_model) or shipped potential name")
    parser.add_argument("--structure", default="CH3CH2OH")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (initial for NVE)")
    parser.add_argument("--langevin", action="store_true", help="Langevin instead of NVE")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args()

    atoms = load_structure(args.structure)
    calc = SINetCalculator(args.model, dtype=args.dtype)
    simulation = build_simulation(atoms, calc, args.timestep, args.temperature, args.langevin, args.friction)
    check = atoms.copy()
    check.calc = calc
    potential = energies_ev(simulation)[0]
    print(f"start: OpenMM potential energy {potential:.6f} eV, SINetCalculator {check.get_potential_energy():.6f} eV")
    # OpenMM's Verlet is leapfrog: its velocities live at half steps, so the total energy
    # is taken from the first step on (the velocities drawn at t = 0 are not at a half step)
    start = time.perf_counter()
    simulation.step(1)
    e0 = energies_ev(simulation)[1]
    chunk = max(1, args.steps // 10)
    while simulation.currentStep < args.steps:
        step = simulation.currentStep
        simulation.step(min(chunk - step % chunk, args.steps - step))
        potential, total = energies_ev(simulation)
        print(f"step {simulation.currentStep:6d}  E_pot {potential:.6f} eV  E_tot {total:.6f} eV")
    elapsed = time.perf_counter() - start
    if not args.langevin:
        drift = energies_ev(simulation)[1] - e0
        print(f"energy drift {drift:.3e} eV over {args.steps - 1} steps ({drift / len(atoms):.3e} eV/atom)")
    print(f"{1e3 * elapsed / max(args.steps, 1):.2f} ms/step")


if __name__ == "__main__":
    main()
