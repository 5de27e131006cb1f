"""Langevin (NVT) molecular dynamics with a SINet model, trajectory written for ``ase gui``.

python examples/md_langevin.py MODEL.pt --structure CH3CH2OH --steps 1000 --temperature 300
"""

import argparse
import os

import numpy as np
from ase import units
from ase.build import molecule
from ase.io import read
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin

from sinet_ase import SINetCalculator


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model file written by sinet-train or save_model")
    parser.add_argument("--structure", default="CH3CH2OH", help="ase.build.molecule name or a file")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--friction", type=float, default=0.01, help="1/fs")
    parser.add_argument("--trajectory", default="langevin.traj")
    args = parser.parse_args()

    atoms = read(args.structure) if os.path.exists(args.structure) else molecule(args.structure)
    atoms.calc = SINetCalculator(args.model)
    dyn = Langevin(
        atoms,
        args.timestep * units.fs,
        temperature_K=args.temperature,
        friction=args.friction / units.fs,
        fixcm=False,
        rng=np.random.default_rng(0),
    )
    traj = Trajectory(args.trajectory, "w", atoms)
    dyn.attach(traj.write, interval=10)
    dyn.attach(
        lambda: print(
            f"step {dyn.nsteps:6d}  T {atoms.get_temperature():7.1f} K  E_pot {atoms.get_potential_energy():.4f} eV"
        ),
        interval=max(1, args.steps // 10),
    )
    dyn.run(args.steps)
    traj.close()
    print(f"trajectory written to {args.trajectory} (view with: ase gui {args.trajectory})")


if __name__ == "__main__":
    main()
