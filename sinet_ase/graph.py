"""``ase.Atoms`` -> graph, with periodic, mixed and open boundaries.

A graph is a torch-geometric ``Data`` (a ``Batch`` for many structures) with

============  =============  ==============================================
attribute     shape, dtype   meaning
============  =============  ==============================================
pos           (N, 3) f64     Cartesian positions, Å
z             (N,) long      atomic numbers
edge_index    (2, E) long    ``[0]`` = receiving atom ``i``, ``[1]`` = neighbour ``j``
shifts        (E, 3) f64     integer cell shifts ``S_ij`` of the neighbour
cell          (1, 3, 3) f64  cell vectors as rows (``(G, 3, 3)`` in a batch)
pbc           (1, 3) bool    periodic directions
batch         (N,) long      structure index of each atom (set by ``Batch``)
============  =============  ==============================================

and, for training data, ``energy`` (1,), ``forces`` (N, 3), ``stress`` (1, 3, 3).
The edge vector ``r_ij = x_j - x_i + S_ij . cell`` is computed inside the model
from ``pos`` and ``cell``, so that autograd reaches positions and strain.

Neighbours: for fully periodic cells, vesin's cell-list neighbour list (C++,
faster than matscipy's at every system size measured, benchmarks/bench_neighbours.py
and benchmarks/README.md; matscipy when vesin is not installed);
for mixed (e.g. slab) cells, matscipy's C neighbour list. Both handle cells
smaller than the cutoff (many images of one atom) and return the same pairs
(tested). matscipy needs an invertible cell, and a slab's cell may have a
zero-length non-periodic vector: along non-periodic directions the cell is
replaced by one that spans the atoms plus a cutoff margin (a zero-length
vector by one perpendicular to the periodic ones); the pairs are unchanged
(tested against ASE's neighbour list). Open molecules use a k-d tree (scipy), whose memory grows
with the number of atoms and pairs, not with the spread of the molecule:
binning a bounding box instead costs gigabytes for atoms 10,000 Å apart.
"""

from typing import Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list
from scipy.spatial import cKDTree
from torch_geometric.data import Batch, Data

from .errors import SINetInputError, UnknownElementError
from .labels import LabelKeys, get_energy, get_forces, get_stress

try:  # optional speed-up for periodic cells (a dependency of the package; kept optional here)
    from vesin import NeighborList as _VesinNeighborList
except ImportError:  # pragma: no cover - exercised only where vesin is missing
    _VesinNeighborList = None

#: atoms closer than this (Å) are taken as sitting on the same position
MIN_DISTANCE = 1e-2


def validate_atoms(atoms: Atoms, elements: Optional[Sequence[str]] = None) -> None:
    """Raise a clear :class:`SINetInputError` for a structure the model cannot evaluate.

    Checks: at least one atom; finite positions and cell; elements known to the
    model (when ``elements`` is given).
    """
    if not isinstance(atoms, Atoms):
        raise SINetInputError(f"expected an ase.Atoms object, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise SINetInputError("the Atoms object is empty: there is nothing to evaluate")
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        bad = np.where(~np.all(np.isfinite(pos), axis=1))[0]
        raise SINetInputError(
            f"positions of atom(s) {bad[:10].tolist()} are NaN or infinite; "
            "check the structure (a diverged MD run or optimiser step?)"
        )
    if not np.all(np.isfinite(atoms.cell.array)):
        raise SINetInputError("the cell holds NaN or infinite values")
    if elements is not None:
        known = set(elements)
        symbols = set(atoms.get_chemical_symbols())
        if not symbols <= known:
            raise UnknownElementError(symbols - known, elements)


def _open_pairs(positions: np.ndarray, cutoff: float):
    tree = cKDTree(positions)
    pairs = tree.query_pairs(cutoff, output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return i, j, np.zeros((len(i), 3), dtype=np.int64)


def _cover_open_directions(positions, cell, pbc, cutoff):
    """Cell and origin whose non-periodic vectors span all atoms (plus a margin)."""
    cell = np.array(cell, dtype=np.float64)
    for a in range(3):
        if pbc[a] or np.linalg.norm(cell[a]) > 1e-12:
            continue
        # a zero vector along an open direction: choose one perpendicular to the others
        others = [cell[b] for b in range(3) if b != a and np.linalg.norm(cell[b]) > 1e-12]
        if len(others) == 2:
            v = np.cross(others[0], others[1])
        else:  # one periodic vector only (a wire): any perpendicular direction
            v = np.cross(others[0], [1.0, 0.0, 0.0])
            if np.linalg.norm(v) < 1e-8 * np.linalg.norm(others[0]):
                v = np.cross(others[0], [0.0, 1.0, 0.0])
        cell[a] = v / np.linalg.norm(v)
    frac = np.linalg.solve(cell.T, positions.T).T
    origin = np.zeros(3)
    for a in range(3):
        if pbc[a]:
            continue
        length = np.linalg.norm(cell[a])
        lo, hi = frac[:, a].min(), frac[:, a].max()
        margin = cutoff / length
        origin += (lo - margin) * cell[a]
        cell[a] = cell[a] * (hi - lo + 2 * margin)
    return cell, origin


def _vesin_pairs(positions: np.ndarray, cell: np.ndarray, cutoff: float):
    calculator = _VesinNeighborList(cutoff=float(cutoff), full_list=True)
    # copy=False: views into the calculator's buffers, valid while it lives (until return);
    # astype makes the one copy
    i, j, S = calculator.compute(points=positions, box=cell, periodic=True, quantities="ijS", copy=False)
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc: Sequence[bool], cutoff: float, backend: str = "auto"):
    """All pairs ``i != j`` (or an image of ``i`` itself) closer than ``cutoff``.

    Returns ``(i, j, S)``: int arrays ``(E,)``, ``(E,)`` and ``(E, 3)`` with
    ``r_ij = x_j - x_i + S @ cell``. ``backend`` picks the periodic neighbour
    list: ``"auto"`` (vesin for fully periodic cells if installed, else matscipy),
    ``"vesin"`` or ``"matscipy"``; open molecules always use a k-d tree and mixed
    boundaries matscipy. The pairs are the same whichever runs; the order may differ.
    """
    if backend not in ("auto", "vesin", "matscipy"):
        raise ValueError(f"backend must be 'auto', 'vesin' or 'matscipy', got {backend!r}")
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        return _open_pairs(positions, cutoff)
    cell = np.asarray(cell, dtype=np.float64)
    for a in range(3):
        if pbc[a] and np.linalg.norm(cell[a]) < 1e-12:
            raise SINetInputError(
                f"direction {a} is periodic but its cell vector is zero; set atoms.cell "
                "or make that direction non-periodic (atoms.pbc)"
            )
    if pbc.all():
        if abs(np.linalg.det(cell)) < 1e-12:
            raise SINetInputError("the periodic cell has zero volume; check atoms.cell")
        if backend == "vesin" and _VesinNeighborList is None:
            raise ImportError("backend='vesin' needs the vesin package: pip install vesin")
        if backend != "matscipy" and _VesinNeighborList is not None:
            return _vesin_pairs(positions, cell, cutoff)
        origin = None
    else:
        cell, origin = _cover_open_directions(positions, cell, pbc, cutoff)
    i, j, S = _matscipy_neighbour_list(
        "ijS", positions=positions, cell=cell, pbc=pbc, cutoff=float(cutoff), cell_origin=origin
    )
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)


def atoms_to_graph(
    atoms: Atoms,
    cutoff: float,
    elements: Optional[Sequence[str]] = None,
    with_labels: bool = False,
    keys: Optional[LabelKeys] = None,
) -> Data:
    """Build the graph of one structure; see the module docstring for the fields.

    ``elements`` (if given) is checked first, so an unknown element is a clear
    :class:`UnknownElementError` rather than an index error in the model.
    ``with_labels`` copies energy, forces and stress from ``atoms.calc`` (or
    ``atoms.info``/``atoms.arrays``) when present, under the names ``keys`` gives
    (:mod:`sinet_ase.labels`; ASE's names by default; virials become stress).
    """
    validate_atoms(atoms, elements)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    positions, cell = atoms.positions, atoms.cell.array
    i, j, S = neighbour_list(positions, cell, pbc, cutoff)
    if len(i):
        vec = positions[j] - positions[i]
        if pbc.any():  # open boundaries: every shift is zero
            vec += S @ cell
        dist = np.linalg.norm(vec, axis=1)
        if dist.min() < MIN_DISTANCE:
            k = int(np.argmin(dist))
            raise SINetInputError(
                f"atoms {int(i[k])} and {int(j[k])} are {dist[k]:.2e} Å apart (an atom on top of "
                f"another, or of its own periodic image); separate them by more than {MIN_DISTANCE} Å"
            )
    # from_numpy where the array is this call's own (the neighbour list's int64 arrays): no copy
    data = Data(
        pos=torch.tensor(positions, dtype=torch.float64),
        z=torch.tensor(atoms.numbers, dtype=torch.long),
        edge_index=torch.from_numpy(np.stack([i, j]).astype(np.int64, copy=False)),
        shifts=torch.from_numpy(S.astype(np.float64)),
        cell=torch.tensor(cell, dtype=torch.float64).unsqueeze(0),
        pbc=torch.tensor(pbc).unsqueeze(0),
    )
    if with_labels:
        _attach_labels(data, atoms, keys or LabelKeys())
    return data


def _attach_labels(data: Data, atoms: Atoms, keys: LabelKeys) -> None:
    energy, forces = get_energy(atoms, keys), get_forces(atoms, keys)
    stress = get_stress(atoms, keys)
    if energy is not None:
        data.energy = torch.tensor([energy], dtype=torch.float64)
    if forces is not None:
        data.forces = torch.tensor(forces, dtype=torch.float64)
    if stress is not None:
        data.stress = torch.tensor(stress, dtype=torch.float64).reshape(1, 3, 3)


def batch_graphs(graphs: Sequence[Data]) -> Batch:
    """Many graphs -> one ``Batch`` (edge indices offset, ``batch`` vector set)."""
    return Batch.from_data_list(list(graphs))


def symbols_to_numbers(elements: Sequence[str]):
    """``["H", "C"] -> [1, 6]``, with a clear error for a symbol that is no element."""
    numbers = []
    for s in elements:
        if s not in chemical_symbols or s == "X":
            raise ValueError(f"{s!r} is not a chemical element symbol")
        numbers.append(chemical_symbols.index(s))
    return numbers
