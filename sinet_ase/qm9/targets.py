r"""QM9's regression targets: units, atom references, and their values from the raw columns.

Targets
-------
The 12 standard regression targets, in the units of Table 1 of the paper (the
same units as Cormorant / EGNN):

=====  ==========================  ===============  =============================
name   quantity                    unit             from the CSV column
=====  ==========================  ===============  =============================
mu     dipole moment               D                Dipole_debye (x 1)
alpha  isotropic polarisability    bohr^3           Polarizability_bohr3 (x 1)
homo   HOMO energy                 meV              HOMO_au x HARTREE_TO_MEV
lumo   LUMO energy                 meV              LUMO_au x HARTREE_TO_MEV
gap    HOMO-LUMO gap               meV              HOMO_LUMO_gap_au x HARTREE_TO_MEV
r2     electronic spatial extent   bohr^2           R2_bohr2 (x 1)
zpve   zero-point vibr. energy     meV              ZPVE_au x HARTREE_TO_MEV
U0     internal energy at 0 K      meV              (U0 - sum atomref U0) x HARTREE_TO_MEV
U      internal energy at 298 K    meV              (U - sum atomref U) x HARTREE_TO_MEV
H      enthalpy at 298 K           meV              (H - sum atomref H) x HARTREE_TO_MEV
G      free energy at 298 K        meV              (G - sum atomref G) x HARTREE_TO_MEV
Cv     heat capacity at 298 K      cal/(mol K)      Heatcapacity_Cv_cal_mol_K (x 1)
=====  ==========================  ===============  =============================

U0, U, H and G are atomisation energies: the molecular value minus the sum of
the free-atom reference energies of its atoms (:data:`ATOMREF_HARTREE`), so
they are negative (methane U0: -17,172 meV).  Positions are in Angstrom
throughout.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

#: Hartree -> meV, as specified for Table 1 (CODATA 2018 gives
#: 27211.386245988; the difference, 9e-12 relative, is far below the 6-digit
#: precision of the QM9 energies).
HARTREE_TO_MEV = 27211.386

#: Number of molecules in QM9 after removing the 3,054 uncharacterised ones.
N_MOLECULES = 130_831
#: Number of molecules in the original GDB-9 / QM9 enumeration.
N_MOLECULES_ORIGINAL = 133_885


#: Free-atom reference energies (Hartree) and heat capacity, B3LYP/6-31G(2df,p),
#: columns ZPVE, U0 (0 K), U (298.15 K), H (298.15 K), G (298.15 K), Cv
#: (cal/(mol K)).  Source: the "atomref" table of the QM9 paper,
#: R. Ramakrishnan, P. O. Dral, M. Rupp, O. A. von Lilienfeld, "Quantum
#: chemistry structures and properties of 134 kilo molecules",
#: Sci. Data 1, 140022 (2014), doi:10.1038/sdata.2014.22, distributed as
#: ``atomref.txt`` on figshare, doi:10.6084/m9.figshare.1057643
#: (https://figshare.com/ndownloader/files/3195395).  The same
#: numbers are used by Cormorant/EGNN (``get_thermo_dict``) and PyG.
#: Only U0, U, H and G are subtracted from the targets.
ATOMREF_COLUMNS = ("zpve", "U0", "U", "H", "G", "Cv")
ATOMREF_HARTREE: Dict[int, Tuple[float, float, float, float, float, float]] = {
    #     ZPVE       U0           U            H            G            Cv
    1: (0.000000, -0.500273, -0.498857, -0.497912, -0.510927, 2.981),  # H
    6: (0.000000, -37.846772, -37.845355, -37.844411, -37.861317, 2.981),  # C
    7: (0.000000, -54.583861, -54.582445, -54.581501, -54.598897, 2.981),  # N
    8: (0.000000, -75.064579, -75.063163, -75.062219, -75.079532, 2.981),  # O
    9: (0.000000, -99.718730, -99.717314, -99.716370, -99.733544, 2.981),  # F
}
ATOMREF_SOURCE = "Ramakrishnan et al., Sci. Data 1, 140022 (2014), atomref.txt (figshare 10.6084/m9.figshare.1057643)"

#: Scalar per-molecule columns kept raw (CSV units), in this order, in
#: :attr:`~sinet_ase.qm9.cache.QM9Data.raw_properties`.
RAW_PROPERTY_NAMES = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
RAW_PROPERTY_UNITS = (
    "GHz",
    "GHz",
    "GHz",
    "D",
    "bohr^3",
    "Ha",
    "Ha",
    "Ha",
    "bohr^2",
    "Ha",
    "Ha",
    "Ha",
    "Ha",
    "Ha",
    "cal/(mol K)",
)
#: Order of the 6 components in :attr:`~sinet_ase.qm9.cache.QM9Data.polarizability_tensor`.
POLARIZABILITY_COMPONENTS = ("xx", "xy", "yy", "xz", "yz", "zz")


class QM9Target(NamedTuple):
    """One regression target: ``value = (raw - sum(atomref)) * factor``."""

    name: str
    unit: str  # unit of the converted value (paper, Table 1)
    raw_name: str  # entry of RAW_PROPERTY_NAMES it is computed from
    raw_unit: str  # unit in the CSV
    factor: float  # multiplicative conversion raw_unit -> unit
    atomref: bool  # subtract the summed ATOMREF_HARTREE[raw_name] first
    description: str

    def convert(self, raw: np.ndarray, atomref_sum: Optional[np.ndarray] = None) -> np.ndarray:
        """Convert raw CSV values (shape (n,)) to target units.

        ``atomref_sum`` (Hartree, shape (n,)) is required when
        :attr:`atomref` is true.
        """
        raw = np.asarray(raw, dtype=np.float64)
        if self.atomref:
            if atomref_sum is None:
                raise ValueError(f"target {self.name!r} needs the summed atom references")
            raw = raw - atomref_sum
        return raw * self.factor


#: The 12 standard QM9 targets, keyed by name, in the column order of
#: :attr:`QM9Data.targets`.
TARGETS: Dict[str, QM9Target] = {
    t.name: t
    for t in (
        QM9Target("mu", "D", "mu", "D", 1.0, False, "dipole moment"),
        QM9Target("alpha", "bohr^3", "alpha", "bohr^3", 1.0, False, "isotropic polarizability"),
        QM9Target("homo", "meV", "homo", "Ha", HARTREE_TO_MEV, False, "HOMO energy"),
        QM9Target("lumo", "meV", "lumo", "Ha", HARTREE_TO_MEV, False, "LUMO energy"),
        QM9Target("gap", "meV", "gap", "Ha", HARTREE_TO_MEV, False, "HOMO-LUMO gap"),
        QM9Target("r2", "bohr^2", "r2", "bohr^2", 1.0, False, "electronic spatial extent <R^2>"),
        QM9Target("zpve", "meV", "zpve", "Ha", HARTREE_TO_MEV, False, "zero-point vibrational energy"),
        QM9Target("U0", "meV", "U0", "Ha", HARTREE_TO_MEV, True, "atomisation internal energy at 0 K"),
        QM9Target("U", "meV", "U", "Ha", HARTREE_TO_MEV, True, "atomisation internal energy at 298.15 K"),
        QM9Target("H", "meV", "H", "Ha", HARTREE_TO_MEV, True, "atomisation enthalpy at 298.15 K"),
        QM9Target("G", "meV", "G", "Ha", HARTREE_TO_MEV, True, "atomisation free energy at 298.15 K"),
        QM9Target("Cv", "cal/(mol K)", "Cv", "cal/(mol K)", 1.0, False, "heat capacity at 298.15 K"),
    )
}
TARGET_NAMES: Tuple[str, ...] = tuple(TARGETS)
TARGET_UNITS: Tuple[str, ...] = tuple(t.unit for t in TARGETS.values())


def _atomref_lookup() -> np.ndarray:
    """(10, 6) table indexed by Z; NaN for elements without a reference."""
    table = np.full((10, len(ATOMREF_COLUMNS)), np.nan)
    for z, row in ATOMREF_HARTREE.items():
        table[z] = row
    return table


def atomref_sums(numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-molecule sums of :data:`ATOMREF_HARTREE`; shape (n, 6), columns ATOMREF_COLUMNS."""
    per_atom = _atomref_lookup()[np.asarray(numbers, dtype=np.int64)]
    if len(offsets) < 2:
        return np.zeros((0, per_atom.shape[1]))
    # reduceat needs non-empty segments; every QM9 molecule has >= 3 atoms.
    return np.add.reduceat(per_atom, np.asarray(offsets[:-1], dtype=np.int64), axis=0)


def compute_targets(raw_properties: np.ndarray, numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The 12 :data:`TARGETS` from raw CSV properties; shape (n, 12), paper units.

    ``raw_properties``: (n, 15) in :data:`RAW_PROPERTY_NAMES` order;
    ``numbers``: (N_atoms_total,) atomic numbers; ``offsets``: (n+1,).
    """
    refs = atomref_sums(numbers, offsets)
    out = np.empty((raw_properties.shape[0], len(TARGETS)))
    for j, t in enumerate(TARGETS.values()):
        raw = raw_properties[:, RAW_PROPERTY_NAMES.index(t.raw_name)]
        ref = refs[:, ATOMREF_COLUMNS.index(t.raw_name)] if t.atomref else None
        out[:, j] = t.convert(raw, ref)
    return out
