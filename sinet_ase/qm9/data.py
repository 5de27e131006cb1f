"""QM9 molecules as labelled graphs, subsets of the splits, target statistics.

Built on :mod:`sinet_ase.qm9.cache` (the loader) and :mod:`sinet_ase.qm9.targets`.
Every function works on *rows* of :class:`~sinet_ase.qm9.cache.QM9Data`
(0-based, not QM9 molecule numbers).
"""

from functools import lru_cache
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from tqdm import tqdm

from .cache import QM9Data, default_cache_dir, load_qm9
from .targets import ATOMREF_COLUMNS, ATOMREF_HARTREE, TARGETS
from ..graph import atoms_to_graph

__all__ = [
    "qm9_dataset",
    "subset_rows",
    "qm9_graph",
    "qm9_graphs",
    "element_counts",
    "fit_atom_refs",
    "dataset_atom_refs",
]


@lru_cache(maxsize=2)
def _load(path: str) -> QM9Data:
    return load_qm9(path)


def qm9_dataset(cache_dir: Optional[str] = None) -> QM9Data:
    """:func:`~sinet_ase.qm9.cache.load_qm9`, memoised per cache folder for this process
    (loading and checking the 157 MB cache takes seconds; trainers and tests share it)."""
    path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return _load(str(path.resolve()))


def subset_rows(rows: np.ndarray, size: Optional[int], seed: int) -> np.ndarray:
    """``size`` rows drawn without replacement (seeded), sorted; all rows when ``size`` is None
    or not smaller than ``len(rows)``."""
    rows = np.asarray(rows, dtype=np.int64)
    if size is None or size >= len(rows):
        return np.sort(rows)
    pick = np.random.default_rng(seed).permutation(len(rows))[: int(size)]
    return np.sort(rows[pick])


def qm9_graph(data: QM9Data, row: int, cutoff: float, elements: Sequence[str], value: Optional[float] = None):
    """Graph of molecule ``row`` (:func:`~sinet_ase.graph.atoms_to_graph`), with the
    target ``value`` as ``y`` (shape (1,), float64) when given."""
    atoms = Atoms(numbers=data.numbers_of(row), positions=data.positions_of(row))
    graph = atoms_to_graph(atoms, cutoff, elements)
    if value is not None:
        graph.y = torch.tensor([float(value)], dtype=torch.float64)
    return graph


def qm9_graphs(
    data: QM9Data,
    rows: Sequence[int],
    cutoff: float,
    elements: Sequence[str],
    target: Optional[str] = None,
    progress: bool = False,
    desc: str = "graphs",
) -> list:
    """Graphs of ``rows``, labelled with ``target`` (a :data:`TARGETS` name) when given."""
    values = data.target(target) if target is not None else None
    return [
        qm9_graph(data, int(r), cutoff, elements, None if values is None else values[r])
        for r in tqdm(rows, disable=not progress, desc=desc, leave=False)
    ]


def element_counts(data: QM9Data, rows: Sequence[int], elements: Sequence[str]) -> np.ndarray:
    """``(len(rows), len(elements))`` counts of each element in each molecule."""
    from ase.data import atomic_numbers

    column = np.full(119, -1, dtype=np.int64)
    for k, symbol in enumerate(elements):
        column[atomic_numbers[symbol]] = k
    counts = np.zeros((len(rows), len(elements)))
    for i, r in enumerate(rows):
        cols = column[data.numbers_of(int(r))]
        if (cols < 0).any():
            raise ValueError(f"row {r} holds elements outside {list(elements)}")
        np.add.at(counts[i], cols, 1.0)
    return counts


def fit_atom_refs(counts: np.ndarray, values: np.ndarray, elements: Sequence[str]) -> Dict[str, float]:
    """Least-squares per-element references: ``min_ref sum_s (y_s - sum_Z n_sZ ref_Z)^2``."""
    solution, *_ = np.linalg.lstsq(counts, np.asarray(values, dtype=np.float64), rcond=None)
    return {s: float(solution[k]) for k, s in enumerate(elements)}


def dataset_atom_refs(target: str, elements: Sequence[str]) -> Dict[str, float]:
    """The QM9 free-atom references (Ramakrishnan et al. 2014) of ``target``, in its units."""
    from ase.data import atomic_numbers

    spec = TARGETS[target]
    if spec.raw_name not in ATOMREF_COLUMNS:
        raise ValueError(f"QM9 has no atom reference for {target!r}")
    column = ATOMREF_COLUMNS.index(spec.raw_name)
    return {s: ATOMREF_HARTREE[atomic_numbers[s]][column] * spec.factor for s in elements}


def residual_statistics(values: np.ndarray, counts: np.ndarray, refs: Mapping[str, float], elements: Sequence[str]):
    """Mean and standard deviation of ``y - sum_i ref_{Z_i}``."""
    ref = np.array([refs.get(s, 0.0) for s in elements])
    residual = np.asarray(values, dtype=np.float64) - counts @ ref
    std = float(residual.std())
    return float(residual.mean()), (std if std > 0 else 1.0)
