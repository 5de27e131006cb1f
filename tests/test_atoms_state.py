"""sinet_ase.atoms_state.compare_atoms returns what ASE's compare_atoms returns."""

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import compare_atoms as ase_compare_atoms

from sinet_ase.atoms_state import compare_atoms


def changes():
    """(name, function that changes a copy of the structure) pairs."""

    def positions(a, d):
        a.positions[1, 2] += d

    return [
        ("nothing", lambda a: None),
        ("positions by 1e-3", lambda a: positions(a, 1e-3)),
        ("positions below the tolerance", lambda a: positions(a, 1e-16)),
        ("a NaN position", lambda a: a.positions.__setitem__((0, 0), np.nan)),
        ("numbers", lambda a: a.numbers.__setitem__(0, 8)),
        ("cell", lambda a: a.set_cell(a.cell * 1.01)),
        ("pbc", lambda a: a.set_pbc([True, False, True])),
        ("charges added", lambda a: a.set_initial_charges(np.linspace(0, 1, len(a)))),
        ("magmoms added", lambda a: a.set_initial_magnetic_moments(np.ones(len(a)))),
        ("negative zero", lambda a: a.positions.__setitem__((0, 0), -0.0)),
    ]


@pytest.mark.parametrize("name, change", changes(), ids=[name for name, _ in changes()])
@pytest.mark.parametrize("excluded", [None, {"positions"}, {"initial_charges", "cell"}])
def test_same_changes_as_ase(name, change, excluded):
    for atoms in (molecule("CH3CH2OH"), bulk("Cu", "fcc", a=3.6, cubic=True)):
        atoms.positions[0, 0] = 0.0
        atoms.set_initial_charges(np.zeros(len(atoms))) if name == "magmoms added" else None
        other = atoms.copy()
        change(other)
        for a, b in ((atoms, other), (other, atoms)):
            ours = compare_atoms(a, b, excluded_properties=excluded)
            theirs = ase_compare_atoms(a, b, excluded_properties=excluded)
            assert sorted(ours) == sorted(theirs) and len(set(ours)) == len(ours), name
    assert sorted(compare_atoms(None, atoms)) == sorted(ase_compare_atoms(None, atoms))


def test_md_trajectory_unchanged_by_the_shortcut():
    """The calculator with the shortcut and with ASE's own check give the same MD run, bit
    for bit, also while atoms cross the cutoff (the neighbour list changes)."""
    import torch
    from ase import units
    from ase.calculators.calculator import Calculator
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from sinet_ase import SINet, SINetCalculator
    from sinet_ase.graph import atoms_to_graph

    class WithAseCheck(SINetCalculator):
        check_state = Calculator.check_state

    torch.manual_seed(0)
    model = SINet(
        ["H", "C", "O"],
        cutoff=2.5,
        lmax=1,
        channels=8,
        num_layers=1,
        mlp_hidden=16,
        radial_hidden=16,
        avg_num_neighbors=4.0,
    )
    runs = []
    for cls in (SINetCalculator, WithAseCheck):
        atoms = molecule("CH3CH2OH")
        MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(0))
        atoms.calc = cls(model, compile=False)
        frames, edges = [], set()

        def record():
            frames.append((atoms.positions.copy(), atoms.get_forces(), atoms.get_potential_energy()))
            edges.add(atoms_to_graph(atoms, model.cutoff).edge_index.shape[1])

        dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
        dyn.attach(record, interval=1)
        dyn.run(40)
        runs.append((frames, edges))
    (ours, edges), (theirs, _) = runs
    assert len(edges) > 1
    for (x, f, e), (x_ref, f_ref, e_ref) in zip(ours, theirs):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(f, f_ref)
        assert e == e_ref
