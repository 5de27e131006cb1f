r"""QM9 loader built on the PyPI package ``qm9pack`` (extra ``sinet-ase[qm9]``).

Source data
-----------
``qm9pack`` 1.0.3 ships QM9 as four CSV files inside the package,
``qm9pack/data/``:

* ``qm9_part1.csv``, ``qm9_part2.csv``, ``qm9_part3.csv`` (225 MB together):
  one row per molecule, 130,831 rows in increasing QM9 index order (the 3,054
  "uncharacterised" molecules of the original 133,885 are already removed).
  Columns: ``XYZ_file, Index, SMILES, InChi, N_atoms, Stoichiometry,
  Elements, XYZ_Ang, Mulliken_pop, Harmonic_Freq_cmi, RotA_GHz, RotB_GHz,
  RotC_GHz, Dipole_debye, Polarizability_bohr3, HOMO_au, LUMO_au,
  HOMO_LUMO_gap_au, R2_bohr2, ZPVE_au, InternalEnergy_0K_au,
  InternalEnergy_298K_au, Enthalphy_298K_au, GibbsFreeEnergy_298K_au,
  Heatcapacity_Cv_cal_mol_K``.  The per-atom columns are quoted list
  literals such as ``"[[-0.0126981359,1.0858041578,0.0080009958],...]"`` and
  ``"['C','H','H','H','H']"``; coordinates are the B3LYP/6-31G(2df,p)
  geometries in Angstrom.
* ``qm9_polarizability.csv``: ``XYZ_file, A_xx, A_xy, A_yy, A_xz, A_yz, A_zz``,
  the static polarisability tensor in bohr^3 (kept as an extra).

``qm9pack.get_data()`` reads all of this with pandas on every call and returns
the list columns as strings; we parse the files ourselves, once, into a NumPy
cache.  Pitfalls handled by the parser (all checked by the tests):

* numbers are written ``0.`` and ``1.`` (e.g. molecule 4, acetylene), which is
  not valid JSON, and ``-7.E-6`` occurs in Mulliken populations (molecule
  3574).  Every number is converted with :func:`float`, which accepts these;
  nothing is ``eval``-ed.
* 334 rows carry two harmonic-frequency lists concatenated (e.g. molecule 29
  has 48 = 2 x (3N-6) values).  We keep the **second** list: half the sum of
  its real frequencies reproduces the ZPVE column to the printed precision
  (5e-7 Ha) in all 334 rows, while the first list misses it by 3.9 mHa for
  molecule 129152 (the two lists otherwise differ by < 0.5 cm^-1).  The
  affected molecules are flagged in :attr:`QM9Data.freq_duplicated`.
* imaginary frequencies are stored as negative numbers (e.g. -544.9 cm^-1
  in molecule 129158) and kept as such.

Cache
-----
The parse (30-40 s on one busy CPU core) runs once; the result is written to
``<cache_dir>/qm9_v1.npz`` (uncompressed NumPy npz, 157 MB: compression would
save 30 % but triple the load time) through a temporary file and
:func:`os.replace`, so readers never see a half-written file.  The npz embeds
a SHA-256 digest of its arrays, verified on every load (1-2 s in all); a
damaged file or a mismatch raises :class:`QM9CacheError` (it is not rebuilt
silently; ``load_qm9(rebuild=True)`` does that).
The default ``cache_dir`` is ``$SINET_ASE_CACHE/qm9`` when the environment
variable ``SINET_ASE_CACHE`` is set, otherwise ``~/.cache/sinet_ase/qm9``.

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

Splits
------
:func:`qm9_split` gives the paper's 110,000 / 10,000 / rest (10,831) split
(default) or the Cormorant/EGNN 100,000 / 17,748 / 13,083 split, both as a
seeded random permutation of the rows.  See its docstring for what is (and is
not) reproduced of EGNN's split; :func:`save_split` / :func:`load_split` store
the indices next to a run.

Example
-------
>>> from sinet_ase.data.qm9 import load_qm9, qm9_split, save_split
>>> data = load_qm9()                       # doctest: +SKIP
>>> split = qm9_split(len(data))            # doctest: +SKIP
>>> save_split(split, "runs/exp1/split.json", qm9_index=data.index)  # doctest: +SKIP
>>> atoms = data.atoms(0); atoms.info["U0"]  # doctest: +SKIP
-17172.18...
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..files import atomic_write, read_checksummed_npz, write_checksummed_npz

__all__ = [
    "HARTREE_TO_MEV",
    "ATOMREF_HARTREE",
    "ATOMREF_SOURCE",
    "TARGETS",
    "TARGET_NAMES",
    "RAW_PROPERTY_NAMES",
    "N_MOLECULES",
    "QM9Target",
    "QM9Data",
    "QM9Split",
    "QM9CacheError",
    "load_qm9",
    "build_qm9_cache",
    "parse_qm9pack",
    "atomref_sums",
    "split_sizes",
    "default_cache_dir",
    "qm9pack_data_dir",
    "compute_targets",
    "qm9_split",
    "save_split",
    "load_split",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

#: Hartree -> meV, as specified for Table 1 (CODATA 2018 gives
#: 27211.386245988; the difference, 9e-12 relative, is far below the 6-digit
#: precision of the QM9 energies).
HARTREE_TO_MEV = 27211.386

#: Number of molecules in QM9 after removing the 3,054 uncharacterised ones.
N_MOLECULES = 130_831
#: Number of molecules in the original GDB-9 / QM9 enumeration.
N_MOLECULES_ORIGINAL = 133_885

#: Files of the qm9pack package that are read.
QM9PACK_PART_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9PACK_POLARIZABILITY_FILE = "qm9_polarizability.csv"

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

_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_STOICHIOMETRY_ORDER = (1, 6, 7, 8, 9)  # qm9pack "Stoichiometry" = counts of H, C, N, O, F

#: Scalar per-molecule columns kept raw (CSV units), in this order, in
#: :attr:`QM9Data.raw_properties`.
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
_RAW_CSV_COLUMNS = (
    "RotA_GHz",
    "RotB_GHz",
    "RotC_GHz",
    "Dipole_debye",
    "Polarizability_bohr3",
    "HOMO_au",
    "LUMO_au",
    "HOMO_LUMO_gap_au",
    "R2_bohr2",
    "ZPVE_au",
    "InternalEnergy_0K_au",
    "InternalEnergy_298K_au",
    "Enthalphy_298K_au",
    "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
)
#: Order of the 6 components in :attr:`QM9Data.polarizability_tensor`.
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

# Cache format.  Bump CACHE_FORMAT_VERSION whenever the parsed content changes.
CACHE_FORMAT_VERSION = 1
CACHE_FILENAME = f"qm9_v{CACHE_FORMAT_VERSION}.npz"
_CACHE_KEYS = (
    "format_version",
    "qm9pack_version",
    "index",
    "n_atoms",
    "offsets",
    "numbers",
    "positions",
    "mulliken_charges",
    "frequencies",
    "freq_offsets",
    "freq_duplicated",
    "raw_properties",
    "polarizability_tensor",
    "smiles",
)


class QM9CacheError(RuntimeError):
    """The QM9 cache file is unreadable, incomplete or fails its checksum."""


# --------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$SINET_ASE_CACHE/qm9`` if ``SINET_ASE_CACHE`` is set, else ``~/.cache/sinet_ase/qm9``."""
    root = os.environ.get("SINET_ASE_CACHE")
    if root:
        return Path(root).expanduser() / "qm9"
    return Path.home() / ".cache" / "sinet_ase" / "qm9"


def qm9pack_data_dir() -> Path:
    """Directory holding the CSV files of the installed ``qm9pack`` package.

    Located with :func:`importlib.util.find_spec`, which does not execute the
    package (``import qm9pack`` pulls in pandas and ``pkg_resources``).
    """
    import importlib.util

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the QM9 loader needs the PyPI package 'qm9pack': pip install 'sinet-ase[qm9]'  (or: pip install qm9pack)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _qm9pack_version() -> str:
    try:
        from importlib.metadata import version

        return version("qm9pack")
    except Exception:  # not installed as a distribution (custom source dir)
        return "unknown"


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def _split_numbers(field: str) -> list:
    """``"[[1.,2],[3,-7.E-6]]"`` -> ``['1.', '2', '3', '-7.E-6']`` (strings)."""
    return field.replace("[", "").replace("]", "").split(",")


def _n_modes(n_atoms: int) -> Tuple[int, ...]:
    """Allowed numbers of harmonic frequencies: 3N-6, or 3N-5 for linear molecules."""
    return tuple(m for m in (3 * n_atoms - 6, 3 * n_atoms - 5) if m > 0)


def _parse_part_files(paths: Sequence[Path]) -> Dict[str, np.ndarray]:
    """Parse the qm9pack part CSVs (in the given order) into flat arrays."""
    index = array("i")
    n_atoms = array("i")
    numbers = array("B")
    positions = array("d")
    mulliken = array("d")
    freqs = array("d")
    n_freqs = array("i")
    duplicated = array("b")
    raw = array("d")
    smiles = []

    for path in paths:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            try:
                col = {
                    name: header.index(name)
                    for name in (
                        "XYZ_file",
                        "Index",
                        "SMILES",
                        "N_atoms",
                        "Stoichiometry",
                        "Elements",
                        "XYZ_Ang",
                        "Mulliken_pop",
                        "Harmonic_Freq_cmi",
                        *_RAW_CSV_COLUMNS,
                    )
                }
            except ValueError as exc:
                raise ValueError(f"{path}: unexpected header ({exc})") from None
            raw_cols = [col[c] for c in _RAW_CSV_COLUMNS]
            for row in reader:
                try:
                    qm9_id = int(row[col["Index"]])
                    if row[col["XYZ_file"]] != f"dsgdb9nsd_{qm9_id:06d}.xyz":
                        raise ValueError(f"XYZ_file {row[col['XYZ_file']]!r} does not match Index")
                    na = int(row[col["N_atoms"]])

                    # "['C','H','H','H','H']": plain split, no eval.
                    symbols = row[col["Elements"]].strip("[]").replace("'", "").split(",")
                    if len(symbols) != na:
                        raise ValueError(f"{len(symbols)} elements for N_atoms={na}")
                    z = [_SYMBOL_TO_Z[s.strip()] for s in symbols]
                    stoich = [int(v) for v in row[col["Stoichiometry"]].strip("[]").split(",")]
                    if stoich != [z.count(e) for e in _STOICHIOMETRY_ORDER]:
                        raise ValueError(f"Stoichiometry {stoich} disagrees with Elements")

                    # float() accepts "0.", "1." and "-7.E-6" (json.loads would not).
                    xyz = _split_numbers(row[col["XYZ_Ang"]])
                    if len(xyz) != 3 * na:
                        raise ValueError(f"{len(xyz)} coordinates for N_atoms={na}")
                    q = _split_numbers(row[col["Mulliken_pop"]])
                    if len(q) != na:
                        raise ValueError(f"{len(q)} Mulliken charges for N_atoms={na}")
                    fr = _split_numbers(row[col["Harmonic_Freq_cmi"]])
                    modes = _n_modes(na)
                    dup = 0
                    if len(fr) not in modes:
                        half = len(fr) // 2
                        if len(fr) % 2 == 0 and half in modes:
                            # Two lists concatenated; the second one reproduces
                            # the ZPVE column (see module docstring).
                            fr = fr[half:]
                            dup = 1
                        else:
                            raise ValueError(f"{len(fr)} frequencies for N_atoms={na}")
                    scalars = [float(row[c]) for c in raw_cols]

                    # A bad number raises here and aborts the whole parse, so
                    # partially extended arrays are never used.
                    positions.extend(map(float, xyz))
                    mulliken.extend(map(float, q))
                    freqs.extend(map(float, fr))
                except (ValueError, KeyError, IndexError) as exc:
                    raise ValueError(
                        f"{path}, line {reader.line_num}: cannot parse QM9 row {row[:2] if row else row}: {exc!r}"
                    ) from None
                index.append(qm9_id)
                n_atoms.append(na)
                numbers.extend(z)
                n_freqs.append(len(fr))
                duplicated.append(dup)
                raw.extend(scalars)
                smiles.append(row[col["SMILES"]])

    n = len(index)
    out = {
        "index": np.frombuffer(index, dtype=np.int32).copy(),
        "n_atoms": np.frombuffer(n_atoms, dtype=np.int32).copy(),
        "numbers": np.frombuffer(numbers, dtype=np.uint8).copy(),
        "positions": np.frombuffer(positions, dtype=np.float64).reshape(-1, 3).copy(),
        "mulliken_charges": np.frombuffer(mulliken, dtype=np.float64).copy(),
        "frequencies": np.frombuffer(freqs, dtype=np.float64).copy(),
        "freq_duplicated": np.frombuffer(duplicated, dtype=np.int8).astype(bool),
        "raw_properties": np.frombuffer(raw, dtype=np.float64).reshape(n, len(RAW_PROPERTY_NAMES)).copy(),
        "smiles": np.array(smiles, dtype="S") if smiles else np.zeros(0, dtype="S1"),
    }
    out["offsets"] = np.concatenate([[0], np.cumsum(out["n_atoms"], dtype=np.int64)])
    out["freq_offsets"] = np.concatenate([[0], np.cumsum(np.frombuffer(n_freqs, dtype=np.int32), dtype=np.int64)])
    if n and np.any(np.diff(out["index"]) <= 0):
        raise ValueError("QM9 rows are not in strictly increasing Index order")
    return out


def _parse_polarizability(path: Path, index: np.ndarray) -> np.ndarray:
    """Read ``qm9_polarizability.csv`` aligned to ``index``; shape (n, 6), bohr^3."""
    tensor = np.full((len(index), 6), np.nan)
    seen = np.zeros(len(index), dtype=bool)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        cols = [header.index("A_" + c) for c in POLARIZABILITY_COMPONENTS]
        for row in reader:
            name = row[0]
            try:
                qm9_id = int(name[len("dsgdb9nsd_") : -len(".xyz")])
                values = [float(row[c]) for c in cols]
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}, line {reader.line_num}: {exc!r}") from None
            pos = np.searchsorted(index, qm9_id)
            if pos < len(index) and index[pos] == qm9_id:
                tensor[pos] = values
                seen[pos] = True
    if not seen.all():
        missing = index[~seen][:5].tolist()
        raise ValueError(f"{path}: no polarizability tensor for molecules {missing}...")
    return tensor


def parse_qm9pack(source_dir: Optional[PathLike] = None) -> Dict[str, np.ndarray]:
    """Parse the qm9pack CSVs into the cache arrays (no checksum, not written).

    ``source_dir`` defaults to :func:`qm9pack_data_dir`; it must contain the
    three part files and the polarizability file.  With the installed package
    the molecule count is checked against :data:`N_MOLECULES`.
    """
    from_package = source_dir is None
    src = qm9pack_data_dir() if from_package else Path(source_dir)
    arrays = _parse_part_files([src / f for f in QM9PACK_PART_FILES])
    if from_package and len(arrays["index"]) != N_MOLECULES:
        raise ValueError(f"qm9pack holds {len(arrays['index'])} molecules, expected {N_MOLECULES}")
    arrays["polarizability_tensor"] = _parse_polarizability(src / QM9PACK_POLARIZABILITY_FILE, arrays["index"])
    arrays["format_version"] = np.array(CACHE_FORMAT_VERSION, dtype=np.int64)
    arrays["qm9pack_version"] = np.array(_qm9pack_version() if from_package else f"custom:{src}")
    return arrays


# --------------------------------------------------------------------------
# Cache I/O
# --------------------------------------------------------------------------


def _write_cache(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    # Uncompressed: loading is then I/O bound (~130 MB), unlike zlib inflate.
    write_checksummed_npz(path, arrays)


def _read_cache(path: Path) -> Dict[str, np.ndarray]:
    hint = f"delete {path} or call load_qm9(..., rebuild=True) to rebuild it"
    arrays = read_checksummed_npz(path, QM9CacheError, what="QM9 cache", hint=hint)
    missing = [k for k in _CACHE_KEYS if k not in arrays]
    if missing:
        raise QM9CacheError(f"QM9 cache {path} lacks arrays {missing}; {hint}")
    if int(arrays["format_version"]) != CACHE_FORMAT_VERSION:
        raise QM9CacheError(
            f"QM9 cache {path} has format {int(arrays['format_version'])}, expected {CACHE_FORMAT_VERSION}; {hint}"
        )
    return arrays


def build_qm9_cache(cache_dir: Optional[PathLike] = None, *, source_dir: Optional[PathLike] = None) -> Path:
    """Parse qm9pack and (re)write the cache file; returns its path."""
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / CACHE_FILENAME
    _build(path, source_dir)
    return path


def _build(path: Path, source_dir: Optional[PathLike]) -> Dict[str, np.ndarray]:
    t0 = time.perf_counter()
    arrays = parse_qm9pack(source_dir)
    t1 = time.perf_counter()
    _write_cache(path, arrays)
    logger.info(
        "QM9: parsed %d molecules in %.1f s, wrote %s in %.1f s",
        len(arrays["index"]),
        t1 - t0,
        path,
        time.perf_counter() - t1,
    )
    return arrays


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Data container
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class QM9Data:
    """QM9 in flat arrays.  ``n`` molecules, ``N`` atoms in total, ``F`` frequencies.

    Row ``i`` (0-based) is QM9 molecule number ``index[i]``; rows are in
    increasing QM9 index order, so row 0 is methane (QM9 index 1).  The atoms
    of row ``i`` are ``offsets[i]:offsets[i + 1]`` of the per-atom arrays.
    """

    index: np.ndarray  #: (n,) int32, QM9/GDB-9 molecule number 1..133885
    n_atoms: np.ndarray  #: (n,) int32, atoms per molecule
    offsets: np.ndarray  #: (n+1,) int64, start of each molecule in per-atom arrays
    numbers: np.ndarray  #: (N,) int64, atomic numbers (H, C, N, O, F)
    positions: np.ndarray  #: (N, 3) float64, Angstrom (B3LYP/6-31G(2df,p))
    mulliken_charges: np.ndarray  #: (N,) float64, Mulliken charges in e
    frequencies: np.ndarray  #: (F,) float64, harmonic frequencies in cm^-1
    freq_offsets: np.ndarray  #: (n+1,) int64, molecule i: frequencies[freq_offsets[i]:freq_offsets[i+1]]
    freq_duplicated: np.ndarray  #: (n,) bool, row had two frequency lists (second kept)
    raw_properties: np.ndarray  #: (n, 15) float64, RAW_PROPERTY_NAMES in RAW_PROPERTY_UNITS
    targets: np.ndarray  #: (n, 12) float64, TARGET_NAMES in TARGET_UNITS
    polarizability_tensor: np.ndarray  #: (n, 6) float64, bohr^3, POLARIZABILITY_COMPONENTS
    smiles: np.ndarray  #: (n,) str
    qm9pack_version: str = "unknown"
    cache_path: Optional[Path] = None

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], cache_path: Optional[Path] = None) -> "QM9Data":
        """Build from the cache arrays (computes :attr:`targets`)."""
        numbers = arrays["numbers"].astype(np.int64)  # uint8 on disk; int64 is safe as a torch index
        return cls(
            index=arrays["index"],
            n_atoms=arrays["n_atoms"],
            offsets=arrays["offsets"],
            numbers=numbers,
            positions=arrays["positions"],
            mulliken_charges=arrays["mulliken_charges"],
            frequencies=arrays["frequencies"],
            freq_offsets=arrays["freq_offsets"],
            freq_duplicated=arrays["freq_duplicated"],
            raw_properties=arrays["raw_properties"],
            targets=compute_targets(arrays["raw_properties"], numbers, arrays["offsets"]),
            polarizability_tensor=arrays["polarizability_tensor"],
            smiles=np.char.decode(arrays["smiles"], "ascii"),
            qm9pack_version=str(arrays["qm9pack_version"]),
            cache_path=cache_path,
        )

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (
            f"QM9Data(n_molecules={len(self)}, n_atoms_total={len(self.numbers)}, "
            f"qm9pack={self.qm9pack_version!r}, cache={str(self.cache_path)!r})"
        )

    def _atom_slice(self, i: int) -> slice:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} molecules")
        i %= len(self)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def positions_of(self, i: int) -> np.ndarray:
        """Positions of row ``i``, (n_atoms, 3) Angstrom (a view)."""
        return self.positions[self._atom_slice(i)]

    def numbers_of(self, i: int) -> np.ndarray:
        """Atomic numbers of row ``i``, (n_atoms,) (a view)."""
        return self.numbers[self._atom_slice(i)]

    def frequencies_of(self, i: int) -> np.ndarray:
        """Harmonic frequencies of row ``i`` in cm^-1, (3N-6,) or (3N-5,) (a view)."""
        self._atom_slice(i)  # bounds check
        i %= len(self)
        return self.frequencies[int(self.freq_offsets[i]) : int(self.freq_offsets[i + 1])]

    def target(self, name: str) -> np.ndarray:
        """Column of :attr:`targets` for target ``name`` (see :data:`TARGETS`), shape (n,)."""
        return self.targets[:, TARGET_NAMES.index(name)]

    def row_of(self, qm9_index: int) -> int:
        """Row of QM9 molecule number ``qm9_index`` (KeyError if absent/uncharacterised)."""
        pos = int(np.searchsorted(self.index, qm9_index))
        if pos < len(self) and self.index[pos] == qm9_index:
            return pos
        raise KeyError(f"QM9 molecule {qm9_index} is not in the data set")

    def atoms(self, i: int):
        """Row ``i`` as :class:`ase.Atoms` (a copy).

        ``atoms.info`` holds the 12 targets under their :data:`TARGET_NAMES`
        (paper units, see :data:`TARGETS`), plus ``qm9_index`` and ``smiles``;
        ``atoms.arrays["mulliken_charges"]`` holds the Mulliken charges (e).
        """
        from ase import Atoms

        s = self._atom_slice(i)
        i %= len(self)
        atoms = Atoms(numbers=self.numbers[s], positions=self.positions[s])
        atoms.new_array("mulliken_charges", self.mulliken_charges[s].copy())
        atoms.info["qm9_index"] = int(self.index[i])
        atoms.info["smiles"] = str(self.smiles[i])
        for name, value in zip(TARGET_NAMES, self.targets[i]):
            atoms.info[name] = float(value)
        return atoms

    def iter_atoms(self, rows: Optional[Sequence[int]] = None) -> Iterator:
        """Yield :meth:`atoms` for ``rows`` (default: all rows)."""
        for i in range(len(self)) if rows is None else rows:
            yield self.atoms(int(i))


def load_qm9(
    cache_dir: Optional[PathLike] = None, *, rebuild: bool = False, source_dir: Optional[PathLike] = None
) -> QM9Data:
    """Load QM9, parsing qm9pack and writing the cache on first use.

    Parameters
    ----------
    cache_dir:
        Directory of ``qm9_v1.npz``; default :func:`default_cache_dir`.
    rebuild:
        Re-parse the CSVs and overwrite the cache even if it exists (also the
        way out of a :class:`QM9CacheError`).
    source_dir:
        Directory with qm9pack's CSV files; default: the installed package.

    Raises
    ------
    QM9CacheError
        If an existing cache is unreadable or fails its SHA-256 check.  It is
        not silently rebuilt, so that a corrupted disk or a concurrent writer
        does not go unnoticed.
    """
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / CACHE_FILENAME
    if path.exists() and not rebuild:
        t0 = time.perf_counter()
        arrays = _read_cache(path)
        logger.info("QM9: loaded %s in %.2f s", path, time.perf_counter() - t0)
    else:
        arrays = _build(path, source_dir)
    return QM9Data.from_arrays(arrays, cache_path=path)


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------

#: Default seed of :func:`qm9_split` (also the seed of Cormorant's split).
DEFAULT_SPLIT_SEED = 0
PAPER_N_TRAIN, PAPER_N_VALID = 110_000, 10_000
EGNN_N_TRAIN = 100_000
EGNN_TEST_FRACTION = 0.1
SPLIT_SCHEMES = ("paper", "egnn")


@dataclass(frozen=True, eq=False)
class QM9Split:
    """Row indices (0-based rows of :class:`QM9Data`, sorted, int64) of a split."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    scheme: str
    seed: int
    n_total: int

    @property
    def sizes(self) -> Tuple[int, int, int]:
        return len(self.train), len(self.valid), len(self.test)

    def as_dict(self) -> Dict[str, np.ndarray]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def split_sizes(n_total: int, scheme: str = "paper") -> Tuple[int, int, int]:
    """(train, valid, test) sizes of ``scheme`` for ``n_total`` molecules."""
    if scheme == "paper":
        n_train, n_valid = PAPER_N_TRAIN, PAPER_N_VALID
        n_test = n_total - n_train - n_valid
    elif scheme == "egnn":
        # Cormorant's gen_splits_gdb9: 100k train, int(10 %) test, rest valid.
        n_train = EGNN_N_TRAIN
        n_test = int(EGNN_TEST_FRACTION * n_total)
        n_valid = n_total - n_train - n_test
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; choose from {SPLIT_SCHEMES}")
    if min(n_train, n_valid, n_test) <= 0:
        raise ValueError(f"split {scheme!r} needs more than {n_total} molecules")
    return n_train, n_valid, n_test


def qm9_split(n_total: int = N_MOLECULES, scheme: str = "paper", seed: int = DEFAULT_SPLIT_SEED) -> QM9Split:
    """Random train/valid/test split of ``n_total`` rows.

    * ``"paper"`` (default): 110,000 / 10,000 / rest (10,831 for QM9).
    * ``"egnn"``: the Cormorant/EGNN sizes 100,000 / 17,748 / 13,083
      (100k / rest / int(10 %)).

    Both take ``np.random.RandomState(seed).permutation(n_total)`` and cut it
    into train, valid, test in that order.  The legacy ``RandomState`` stream
    is frozen by NumPy's compatibility policy, so a (scheme, seed) pair gives
    the same indices on every NumPy version.  With ``seed=0`` this is also
    Cormorant's recipe (``np.random.seed(0); np.random.permutation(130831)``
    over the characterised molecules in index order), but EGNN then selects
    molecules by their position in the original tar archive, which we cannot
    check here: the ``"egnn"`` split reproduces the *sizes* of EGNN's split,
    not necessarily the identical molecules.

    Returns sorted row indices (int64) into :class:`QM9Data` (not QM9 indices).
    """
    n_total = int(n_total)
    n_train, n_valid, n_test = split_sizes(n_total, scheme)
    perm = np.random.RandomState(seed).permutation(n_total).astype(np.int64)
    train, valid, test = np.split(perm, [n_train, n_train + n_valid])
    return QM9Split(np.sort(train), np.sort(valid), np.sort(test), scheme=scheme, seed=int(seed), n_total=n_total)


_SPLIT_FORMAT = "sinet_ase.qm9_split/1"


def save_split(split: QM9Split, path: PathLike, *, qm9_index: Optional[np.ndarray] = None) -> Path:
    """Save ``split`` to ``path`` (``.json`` or ``.npz``), atomically.

    Stores the row indices, scheme, seed and ``n_total``; with ``qm9_index``
    (e.g. ``data.index``) also the QM9 molecule numbers of each part, which
    stay meaningful if the row order ever changes.
    """
    path = Path(path)
    parts = split.as_dict()
    ids = {}
    if qm9_index is not None:
        qm9_index = np.asarray(qm9_index)
        if len(qm9_index) != split.n_total:
            raise ValueError(f"qm9_index has {len(qm9_index)} entries, split is over {split.n_total}")
        ids = {f"{k}_qm9_index": qm9_index[v].astype(np.int64) for k, v in parts.items()}
    meta = {"format": _SPLIT_FORMAT, "scheme": split.scheme, "seed": split.seed, "n_total": split.n_total}
    if path.suffix == ".json":
        doc = dict(meta, sizes=dict(zip(("train", "valid", "test"), split.sizes)))
        doc.update({k: v.tolist() for k, v in {**parts, **ids}.items()})
        payload = json.dumps(doc).encode()
        atomic_write(path, lambda fh: fh.write(payload))
    elif path.suffix == ".npz":
        arrays = {k: np.array(v) for k, v in meta.items()}
        arrays.update(parts)
        arrays.update(ids)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    else:
        raise ValueError(f"split file must end in .json or .npz, got {path.name!r}")
    return path


def load_split(path: PathLike) -> QM9Split:
    """Read a split written by :func:`save_split`."""
    path = Path(path)
    if path.suffix == ".json":
        doc = json.loads(path.read_text())
    else:
        with np.load(path, allow_pickle=False) as z:
            doc = {k: z[k] for k in z.files}
    if str(doc.get("format")) != _SPLIT_FORMAT:
        raise ValueError(f"{path} is not a QM9 split file ({_SPLIT_FORMAT})")
    return QM9Split(
        *(np.asarray(doc[k], dtype=np.int64) for k in ("train", "valid", "test")),
        scheme=str(doc["scheme"]),
        seed=int(doc["seed"]),
        n_total=int(doc["n_total"]),
    )
