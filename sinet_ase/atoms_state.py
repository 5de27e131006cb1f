"""ASE's check for what changed in a structure since the last calculation, made cheap.

ASE asks the calculator for every property (an MD step reads forces, then the energy) and
each time compares the structure with the one of the last calculation
(``ase.calculators.calculator.compare_atoms``): cell, pbc, positions, numbers and the other
per-atom arrays, each with ``np.allclose(a, b, rtol=0, atol=1e-15)``, about 15 µs apiece,
a tenth of a compiled 9-atom step. :func:`compare_atoms` returns the same list: an array whose
bytes equal the old ones is unchanged at any tolerance, so only arrays that differ bit for
bit go to ASE's comparison (in MD the positions, once per step).
"""

from typing import Iterable, List, Optional

import numpy as np
from ase.calculators.calculator import all_changes, equal


def _unchanged(a, b, tol: float) -> bool:
    a, b = np.asarray(a), np.asarray(b)  # a Cell compares as its 3 x 3 array, as in ASE
    if a.shape != b.shape:
        return False
    if a.dtype == b.dtype and a.tobytes() == b.tobytes():
        return True
    return equal(a, b, atol=tol)


def compare_atoms(atoms1, atoms2, tol: float = 1e-15, excluded_properties: Optional[Iterable[str]] = None) -> List[str]:
    """``ase.calculators.calculator.compare_atoms``: the names in ``all_changes`` (less
    ``excluded_properties``) whose values differ between the two structures by more than
    ``tol``; all of them when ``atoms1`` is ``None``."""
    if atoms1 is None:
        return all_changes[:]
    to_check = set(all_changes) - set(excluded_properties or ())
    changes = [
        prop
        for prop in ("cell", "pbc")
        if prop in to_check and not _unchanged(getattr(atoms1, prop), getattr(atoms2, prop), tol)
    ]
    to_check -= {"cell", "pbc"}
    arrays1, arrays2 = atoms1.arrays, atoms2.arrays
    changes += to_check & (set(arrays1) ^ set(arrays2))
    changes += [
        prop for prop in to_check & set(arrays1) & set(arrays2) if not _unchanged(arrays1[prop], arrays2[prop], tol)
    ]
    return changes
