"""Print isolated-atom energies for the elements H, C, O from an isolated_atoms.xyz.
usage: e0s.py FILE mace|nequip   (mace: {Z: E}; nequip: hydra dict {C: E, H: E, O: E})"""

import sys
from ase.io import read

d = {}
for a in read(sys.argv[1], ":"):
    if len(a) == 1 and a[0].symbol in ("H", "C", "O"):
        d[a[0].symbol] = (int(a[0].number), float(a.get_potential_energy()))
assert set(d) == {"H", "C", "O"}, d
if sys.argv[2] == "mace":
    print("{" + ", ".join(f"{z}: {e!r}" for z, e in sorted(d.values())) + "}")
else:
    print("{" + ",".join(f"{s}:{d[s][1]!r}" for s in ("C", "H", "O")) + "}")
