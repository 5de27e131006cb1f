"""Geometry relaxation with a SINet model.

A molecule relaxes its positions with BFGS; a periodic crystal relaxes
positions and cell together through ASE's FrechetCellFilter.

    python examples/relax.py MODEL.pt --structure CH3CH2OH
    python examples/relax.py MODEL.pt --crystal Cu --lattice 3.7
"""

import argparse
import os

from ase.build import bulk, molecule
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.optimize import BFGS

from sinet_ase import SINetCalculator


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model file written by sinet-train or save_model")
    parser.add_argument("--structure", default="CH3CH2OH", help="ase.build.molecule name or a file")
    parser.add_argument("--crystal", help="element of an fcc crystal to relax with its cell")
    parser.add_argument("--lattice", type=float, default=3.6, help="fcc lattice constant, Å")
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å")
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()

    if args.crystal:
        atoms = bulk(args.crystal, "fcc", a=args.lattice, cubic=True)
        target = FrechetCellFilter(atoms)
    else:
        atoms = read(args.structure) if os.path.exists(args.structure) else molecule(args.structure)
        target = atoms
    atoms.calc = SINetCalculator(args.model)
    e0 = atoms.get_potential_energy()
    converged = BFGS(target).run(fmax=args.fmax, steps=args.steps)
    print(f"energy {e0:.6f} -> {atoms.get_potential_energy():.6f} eV; converged: {converged}")
    if args.crystal:
        print(f"cell lengths {atoms.cell.lengths()} Å")


if __name__ == "__main__":
    main()
