"""NPT molecular dynamics of a periodic crystal with a SINet model: ASE's isotropic MTK
barostat with Nose-Hoover chains (what ``sinet-md --ensemble npt`` runs).

    python examples/md_npt.py sinet-mlearn-si --steps 2000 --pressure 1e-4     # Si, 1 bar
    python examples/md_npt.py MODEL.pt --crystal Cu --temperature 500 --pressure 1

The model must be trained with stress (the shipped sinet-mlearn-si is); the pressure is in
GPa (1e-4 GPa = 1 bar). The volume and the instantaneous pressure are printed as it goes.
"""

import argparse

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from sinet_ase import SINetCalculator


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model file or shipped potential name (sinet-mlearn-si)")
    parser.add_argument("--crystal", default="Si", help="element of an ase.build.bulk cubic cell")
    parser.add_argument("--repeat", type=int, default=1, help="cells along each axis")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--pressure", type=float, default=1e-4, help="GPa")
    args = parser.parse_args()

    atoms = bulk(args.crystal, cubic=True).repeat(args.repeat)
    # the barostat asks for the forces, then the stress: one model call serves both
    atoms.calc = SINetCalculator(args.model, compute_stress=True)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
    Stationary(atoms)
    # ASE's MTK integrator copies positions and momenta when it is built: set them first
    dyn = IsotropicMTKNPT(
        atoms,
        args.timestep * units.fs,
        temperature_K=args.temperature,
        pressure_au=args.pressure * units.GPa,
        tdamp=100 * args.timestep * units.fs,
        pdamp=1000 * args.timestep * units.fs,
    )

    def report():
        pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.GPa
        print(
            f"step {dyn.nsteps:6d}  T {atoms.get_temperature():7.1f} K  "
            f"V {atoms.get_volume():9.3f} Å^3  P {pressure:8.4f} GPa"
        )

    dyn.attach(report, interval=max(1, args.steps // 10))
    dyn.run(args.steps)
    print(f"final volume per atom {atoms.get_volume() / len(atoms):.3f} Å^3")


if __name__ == "__main__":
    main()
