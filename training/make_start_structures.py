"""Starting geometries that ship with sinet-ase for ``sinet-md <molecule>``.

The same GFN2-xTB-relaxed structures from which ``make_xtb_md17.py`` starts
its MD (RDKit from SMILES, MMFF, then xTB BFGS to 0.01 eV/Å), written to
``sinet_ase/potentials/structures.extxyz`` with ``info["name"]``.

    OMP_NUM_THREADS=1 python training/make_start_structures.py
"""

import sys
from pathlib import Path

from ase.io import write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_xtb_md17 import MOLECULES, build_structure, molecule_seed, relax  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "sinet_ase" / "potentials" / "structures.extxyz"


def main(base_seed: int = 1234):
    frames = []
    for name in MOLECULES:
        atoms = build_structure(name, molecule_seed(base_seed, name))
        relax(atoms)
        atoms.calc = None
        atoms.info = {"name": name}
        frames.append(atoms)
        print(f"{name}: {len(atoms)} atoms", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write(OUT, frames)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
