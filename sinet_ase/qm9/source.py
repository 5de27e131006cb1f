r"""QM9 from the PyPI package ``qm9pack`` (extra ``sinet-ase[qm9]``): its CSV files parsed into arrays.

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

:mod:`sinet_ase.qm9.cache` writes the parsed arrays to a cache file once and loads them.
"""

from __future__ import annotations

import csv
import os
from array import array
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .targets import N_MOLECULES, POLARIZABILITY_COMPONENTS, RAW_PROPERTY_NAMES

PathLike = Union[str, "os.PathLike[str]"]

#: Files of the qm9pack package that are read.
QM9PACK_PART_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9PACK_POLARIZABILITY_FILE = "qm9_polarizability.csv"

_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_STOICHIOMETRY_ORDER = (1, 6, 7, 8, 9)  # qm9pack "Stoichiometry" = counts of H, C, N, O, F

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

# Cache format (:mod:`sinet_ase.qm9.cache`).  Bump CACHE_FORMAT_VERSION whenever the parsed content changes.
CACHE_FORMAT_VERSION = 1


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
