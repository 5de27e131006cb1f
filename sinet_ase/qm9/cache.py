r"""QM9 as arrays: the cache file of the parsed qm9pack data, :class:`QM9Data`, :func:`load_qm9`.

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

Example
-------
>>> from sinet_ase.qm9.cache import load_qm9
>>> from sinet_ase.qm9.split import qm9_split, save_split
>>> data = load_qm9()                       # doctest: +SKIP
>>> split = qm9_split(len(data))            # doctest: +SKIP
>>> save_split(split, "runs/exp1/split.json", qm9_index=data.index)  # doctest: +SKIP
>>> atoms = data.atoms(0); atoms.info["U0"]  # doctest: +SKIP
-17172.18...
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from ..files import read_checksummed_npz, write_checksummed_npz
from .source import CACHE_FORMAT_VERSION, parse_qm9pack
from .targets import TARGET_NAMES, compute_targets

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

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


def default_cache_dir() -> Path:
    """``$SINET_ASE_CACHE/qm9`` if ``SINET_ASE_CACHE`` is set, else ``~/.cache/sinet_ase/qm9``."""
    root = os.environ.get("SINET_ASE_CACHE")
    if root:
        return Path(root).expanduser() / "qm9"
    return Path.home() / ".cache" / "sinet_ase" / "qm9"


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
