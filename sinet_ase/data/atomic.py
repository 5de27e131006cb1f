"""Energy + force data sets from extxyz / ASE database files.

A data set is a list of ``ase.Atoms`` with a ``SinglePointCalculator``
(``ase.io.read`` gives exactly that for extxyz with energies and forces).
This module turns them into labelled graphs, splits them reproducibly, and
computes the statistics that set up a model before training:

- per-element energy shift ``E0`` by least squares:
  ``min_E0 sum_s (E_s - sum_Z n_{s,Z} E0_Z)^2`` over the training structures;
- force scale: root-mean-square force component of the training set;
- average number of neighbours within the cutoff.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.io import read

from ..errors import ConfigError
from ..graph import atoms_to_graph

PathLike = Union[str, Path]


_COMPRESSED = {".xz": "lzma", ".gz": "gzip", ".bz2": "bz2"}


def _read_all(path: Path) -> List[Atoms]:
    """``ase.io.read(path, index=":")``, decompressing into memory first.

    ASE reads a compressed extxyz by re-opening the stream for each frame, so a
    2,000-frame ``.xz`` file takes many minutes; decompressed once it takes seconds.
    """
    suffix = path.suffix.lower()
    if suffix not in _COMPRESSED:
        return read(str(path), index=":")
    import importlib
    import io

    opener = importlib.import_module(_COMPRESSED[suffix]).open
    with opener(path, "rt") as handle:
        text = handle.read()
    fmt = "extxyz" if path.name.lower().endswith((".xyz" + suffix, ".extxyz" + suffix)) else None
    return read(io.StringIO(text), index=":", format=fmt)


def read_structures(path: PathLike, require_forces: bool = True,
                    require_stress: bool = False) -> List[Atoms]:
    """All frames of an extxyz / ASE-db / any ase.io file, checked for labels.

    Raises :class:`ConfigError` naming the file when it cannot be read, when
    a frame lacks the energy (or forces, or stress when asked for), or when a
    label is NaN or infinite (it would turn the loss and then every weight into NaN).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"data file {path} does not exist")
    try:
        frames = _read_all(path)
    except Exception as err:  # ase.io raises many types for unreadable files
        raise ConfigError(f"cannot read {path} with ase.io.read: {type(err).__name__}: {err}") from err
    if not frames:
        raise ConfigError(f"{path} holds no structures")
    for k, atoms in enumerate(frames):
        results = atoms.calc.results if atoms.calc is not None else {}
        missing = [name for name, needed in (("energy", True), ("forces", require_forces),
                                             ("stress", require_stress))
                   if needed and name not in results]
        if missing:
            raise ConfigError(
                f"{path}, frame {k}: no {' or '.join(missing)} found (training asks for them); "
                "an extxyz file needs energy= in the comment line and a forces column"
            )
        for name in ("energy", "forces", "stress"):
            if name in results and results[name] is not None:
                values = np.asarray(results[name], dtype=np.float64)
                if not np.all(np.isfinite(values)):
                    bad = values[~np.isfinite(values)].ravel()[0]
                    raise ConfigError(
                        f"{path}, frame {k}: the {name} label holds {bad} (non-finite); a NaN or "
                        "infinite label makes the loss NaN. Remove or fix this frame")
    return frames


def split_indices(n: int, valid: Union[int, float], test: Union[int, float],
                  seed: int) -> Dict[str, np.ndarray]:
    """Random disjoint train/valid/test indices of ``n`` items.

    ``valid`` and ``test`` are counts (int) or fractions (float < 1); the rest
    is training. The permutation comes from ``numpy.random.default_rng(seed)``.
    """
    def count(x):
        return int(round(x * n)) if isinstance(x, float) and x < 1 else int(x)

    n_valid, n_test = count(valid), count(test)
    if n_valid + n_test >= n:
        raise ConfigError(f"cannot split {n} structures into {n_valid} valid + {n_test} test + training")
    perm = np.random.default_rng(seed).permutation(n)
    return {"valid": np.sort(perm[:n_valid]), "test": np.sort(perm[n_valid:n_valid + n_test]),
            "train": np.sort(perm[n_valid + n_test:])}


def fit_atomic_energies(frames: Sequence[Atoms], elements: Sequence[str]) -> Dict[str, float]:
    """Least-squares per-element energies ``E0`` (eV) from total energies."""
    counts = np.zeros((len(frames), len(elements)))
    energies = np.zeros(len(frames))
    index = {s: k for k, s in enumerate(elements)}
    for row, atoms in enumerate(frames):
        for symbol in atoms.get_chemical_symbols():
            counts[row, index[symbol]] += 1
        energies[row] = atoms.get_potential_energy()
    # rank-deficient when element ratios never vary (one molecule): lstsq gives the min-norm fit
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {s: float(solution[k]) for s, k in index.items()}


def force_rms(frames: Sequence[Atoms]) -> float:
    """Root-mean-square force component (eV/Å) of a set of frames."""
    forces = np.concatenate([a.get_forces().ravel() for a in frames])
    return float(np.sqrt(np.mean(forces ** 2))) if forces.size else 1.0


def elements_of(frames: Sequence[Atoms]) -> List[str]:
    """Chemical symbols present, ordered by atomic number."""
    numbers = sorted({int(z) for a in frames for z in a.numbers})
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in numbers]


def check_elements_covered(train: Sequence[Atoms], other: Sequence[Atoms], name: str) -> None:
    """Every element of ``other`` must occur in the training set."""
    missing = set(elements_of(other)) - set(elements_of(train))
    if missing:
        raise ConfigError(
            f"element(s) {', '.join(sorted(missing))} occur in the {name} data but not in the "
            "training data; the model could not learn them. Add them to the training set."
        )


def to_graphs(frames: Sequence[Atoms], cutoff: float, elements: Sequence[str]):
    """Labelled graphs (energy, forces, stress when present) for training."""
    return [atoms_to_graph(a, cutoff, elements, with_labels=True) for a in frames]


def average_num_neighbors(graphs) -> float:
    """Mean number of neighbours per atom over a set of graphs."""
    edges = sum(int(g.edge_index.shape[1]) for g in graphs)
    atoms = sum(int(g.pos.shape[0]) for g in graphs)
    return max(edges / max(atoms, 1), 1.0)


def load_splits(train: Sequence[PathLike], valid: Optional[Sequence[PathLike]] = None,
                test: Optional[Sequence[PathLike]] = None, valid_size: Union[int, float] = 0.05,
                test_size: Union[int, float] = 0.0, seed: int = 0, require_forces: bool = True,
                require_stress: bool = False) -> Tuple[Dict[str, List[Atoms]], Dict[str, Dict]]:
    """Read the data files and split them.

    Without explicit ``valid``/``test`` files, *each* training file is split on
    its own (so every molecule of a multi-molecule set is in every split, and
    no test frame is ever trained on). Returns the frames of each split and,
    for reproducibility, the indices taken from each file.
    """
    splits: Dict[str, List[Atoms]] = {"train": [], "valid": [], "test": []}
    record: Dict[str, Dict] = {}
    for path in train:
        frames = read_structures(path, require_forces, require_stress)
        if valid is None:
            idx = split_indices(len(frames), valid_size, test_size if test is None else 0, seed)
            record[str(path)] = {k: v.tolist() for k, v in idx.items()}
            for key in idx:
                splits[key].extend(frames[i] for i in idx[key])
        else:
            splits["train"].extend(frames)
            record[str(path)] = {"train": list(range(len(frames)))}
    for key, paths in (("valid", valid), ("test", test)):
        for path in paths or []:
            frames = read_structures(path, require_forces, require_stress)
            splits[key].extend(frames)
            record[str(path)] = {key: list(range(len(frames)))}
    if not splits["train"]:
        raise ConfigError("the training split is empty")
    if not splits["valid"]:
        raise ConfigError("the validation split is empty; give valid files or a valid_size > 0")
    for key in ("valid", "test"):
        check_elements_covered(splits["train"], splits[key], key)
    return splits, record
