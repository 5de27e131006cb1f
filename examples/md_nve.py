"""NVE molecular dynamics (velocity Verlet) with a SINet model; prints the energy drift.

    python examples/md_nve.py MODEL.pt --structure CH3CH2OH --steps 1000

``--structure`` is a name that ``ase.build.molecule`` knows or a file that
``ase.io.read`` reads.
"""

import argparse
import os
import time

import numpy as np
from ase import units
from ase.build import molecule
from ase.io import read
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from sinet_ase import SINetCalculator


def load_structure(spec):
    return read(spec) if os.path.exists(spec) else molecule(spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model file written by sinet-train or save_model")
    parser.add_argument("--structure", default="CH3CH2OH")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="initial K")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (pays for small molecules; the first step compiles)",
    )
    args = parser.parse_args()

    atoms = load_structure(args.structure)
    atoms.calc = SINetCalculator(args.model, dtype=args.dtype, compile=args.compile)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
    e0 = atoms.get_total_energy()
    start = time.perf_counter()
    for done in range(0, args.steps, max(1, args.steps // 10)):
        dyn.run(min(max(1, args.steps // 10), args.steps - done))
        print(f"step {dyn.nsteps:6d}  T {atoms.get_temperature():7.1f} K  E_tot {atoms.get_total_energy():.6f} eV")
    elapsed = time.perf_counter() - start
    drift = atoms.get_total_energy() - e0
    print(
        f"energy drift {drift:.3e} eV over {args.steps} steps "
        f"({drift / len(atoms):.3e} eV/atom); {1e3 * elapsed / args.steps:.2f} ms/step"
    )


if __name__ == "__main__":
    main()
