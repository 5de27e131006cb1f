"""Neighbour lists from ase.Atoms: periodic, mixed, small cells, open molecules."""

import resource

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from sinet_ase import SINetInputError, UnknownElementError, atoms_to_graph
from sinet_ase.graph import neighbour_list


def _pairs(i, j, S):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(S).tolist())))


def _assert_same_as_ase(atoms, cutoff):
    ai, aj, aS = ase_neighbor_list("ijS", atoms, cutoff)
    # every backend: vesin and matscipy for periodic cells (the k-d tree for open ones)
    for backend in ("auto", "vesin", "matscipy"):
        i, j, S = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, backend=backend)
        assert len(i) > 0 and i.dtype == j.dtype == S.dtype == np.int64
        assert _pairs(i, j, S) == _pairs(ai, aj, aS), backend


def test_periodic_cell_smaller_than_cutoff():
    atoms = bulk("Cu", "fcc", a=3.6)  # 1 atom, cell vectors ~2.5 Å, cutoff 5 Å
    i, j, S = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    assert np.all(i == 0) and np.all(j == 0)
    assert len(i) == 42  # fcc shells at 2.55, 3.60, 4.41 Å (12 + 6 + 24); the next is at 5.09 Å
    _assert_same_as_ase(atoms, 5.0)


def test_triclinic_cell_matches_ase(rng):
    atoms = Atoms(
        "Cu3", scaled_positions=rng.uniform(size=(3, 3)), cell=[[3.0, 0, 0], [1.1, 2.9, 0], [0.6, -0.8, 3.2]], pbc=True
    )
    _assert_same_as_ase(atoms, 4.5)


def test_periodic_atoms_outside_the_cell_match_ase(rng):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=2)
    atoms.positions[0] += [10.0, -7.0, 3.0]  # unwrapped: several cells away
    _assert_same_as_ase(atoms, 5.0)


def test_unknown_neighbour_backend_is_an_error():
    atoms = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(ValueError, match="backend must be"):
        neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0, backend="ase")


def test_slab_mixed_periodicity_matches_ase():
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    assert slab.pbc.tolist() == [True, True, False]
    _assert_same_as_ase(slab, 5.0)


def test_slab_with_atom_outside_the_cell_along_the_open_direction():
    slab = fcc111("Cu", (2, 2, 3), vacuum=2.0)
    slab.positions[0, 2] -= 3.0  # below the cell bottom, still within the cutoff of others
    _assert_same_as_ase(slab, 5.0)


def test_slab_with_zero_open_cell_vector():
    slab = fcc111("Cu", (2, 2, 2), vacuum=5.0)
    reference = slab.copy()
    slab.cell[2] = 0.0
    i, j, S = neighbour_list(slab.positions, slab.cell.array, slab.pbc, 5.0)
    ai, aj, aS = ase_neighbor_list("ijS", reference, 5.0)
    assert _pairs(i, j, S) == _pairs(ai, aj, aS)


def test_open_molecule_matches_ase():
    _assert_same_as_ase(molecule("C6H6"), 3.0)


def test_molecule_spread_over_thousands_of_angstrom_uses_little_memory():
    rng = np.random.default_rng(1)
    positions = rng.uniform(0, 10_000.0, size=(200, 3))
    positions[1] = positions[0] + [1.0, 0.0, 0.0]
    atoms = Atoms("H200", positions=positions)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    graph = atoms_to_graph(atoms, 5.0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    # binning a 10,000 Å bounding box with a 5 Å cutoff would need gigabytes
    assert grown_mb < 100
    assert graph.edge_index.shape[1] == 2


def test_graph_fields():
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    g = atoms_to_graph(atoms, 3.0)
    assert g.pos.shape == (2, 3) and g.cell.shape == (1, 3, 3) and g.pbc.shape == (1, 3)
    assert g.edge_index.shape[0] == 2 and g.shifts.shape == (g.edge_index.shape[1], 3)
    r = g.pos[g.edge_index[1]] - g.pos[g.edge_index[0]] + g.shifts @ g.cell[0]
    assert float(r.norm(dim=1).max()) < 3.0


@pytest.mark.parametrize(
    "atoms, error, message",
    [
        (Atoms(), SINetInputError, "empty"),
        (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), SINetInputError, "NaN"),
        (Atoms("H2", positions=[[0, 0, 0], [np.inf, 0, 0]]), SINetInputError, "infinite"),
        (Atoms("H2", positions=[[0, 0, 0], [0, 0, 0]]), SINetInputError, "apart"),
        (Atoms("HU", positions=[[0, 0, 0], [1, 0, 0]]), UnknownElementError, "U unknown.*H, C, O"),
    ],
    ids=["empty", "nan", "inf", "overlap", "unknown-element"],
)
def test_bad_structures_raise_clear_errors(atoms, error, message):
    with pytest.raises(error, match=message):
        atoms_to_graph(atoms, 5.0, elements=["H", "C", "O"])


def test_periodic_direction_with_zero_cell_vector_is_an_error():
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], pbc=True)
    with pytest.raises(SINetInputError, match="cell vector is zero"):
        atoms_to_graph(atoms, 5.0)


def test_graph_tensors_own_their_memory_and_have_the_documented_dtypes():
    """The graph copies what it takes from the atoms (an MD step moves them in place) and
    the neighbour list's arrays become int64 / float64 tensors."""
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.pbc = [True, True, False]
    g = atoms_to_graph(atoms, 3.0)
    pos, cell = g.pos.clone(), g.cell.clone()
    atoms.positions += 1.0
    atoms.cell.array[:] *= 2.0
    assert torch.equal(g.pos, pos) and torch.equal(g.cell, cell)
    assert g.edge_index.dtype == torch.long and g.shifts.dtype == torch.float64 and g.pos.dtype == torch.float64
    assert g.z.dtype == torch.long and g.pbc.dtype == torch.bool and g.pbc.tolist() == [[True, True, False]]


def test_an_atom_on_its_own_periodic_image_is_an_error():
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=[2.0, 2.0, 2.0], pbc=True)
    assert atoms_to_graph(atoms, 3.0).edge_index.shape[1] > 0
    atoms.positions[1] = [2.0, 0, 0]  # the image of atom 0 across the cell
    with pytest.raises(SINetInputError, match="atoms [01] and [01] are .* apart"):
        atoms_to_graph(atoms, 3.0)
