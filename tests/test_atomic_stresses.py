"""Per-atom stresses (``atoms.get_stresses()``): ASE's convention, sum, equivariance, locality."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.stress import voigt_6_to_full_3x3_stress

from sinet_ase import SINet, SINetCalculator, predict
from sinet_ase.testing import TOLERANCE, random_orthogonal


def make_model(elements=("H", "C", "O", "Cu"), seed=0):
    torch.manual_seed(seed)
    return SINet(
        elements=list(elements),
        cutoff=3.5,
        lmax=2,
        channels=8,
        num_layers=2,
        mlp_hidden=16,
        radial_hidden=16,
        avg_num_neighbors=6.0,
    )


def triclinic_crystal(rng):
    """A rattled, sheared two-element crystal: no symmetry makes the per-atom terms equal."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 5]] = "C"
    atoms.set_cell(atoms.cell.array + [[0.0, 0.3, -0.2], [0.25, 0.0, 0.1], [0.0, -0.15, 0.0]], scale_atoms=True)
    atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
    return atoms


def test_stresses_sum_to_the_stress(dtype, rng):
    atoms = triclinic_crystal(rng)
    atoms.calc = SINetCalculator(make_model(), dtype=str(dtype).replace("torch.", ""))
    stresses = atoms.get_stresses()
    assert stresses.shape == (len(atoms), 6) and stresses.dtype == np.float64
    stress = atoms.get_stress()
    assert np.abs(stress).max() > 1e-4, "a stress-free test structure would prove nothing"
    np.testing.assert_allclose(
        stresses.sum(axis=0), stress, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * np.abs(stress).max()
    )
    # the per-atom terms differ (a per-atom stress of stress/N everywhere would also sum right)
    share = stress / len(atoms)
    assert np.abs(stresses - share).max() > 0.05 * np.abs(share).max()


def test_stresses_after_stress_keep_both(rng):
    atoms = triclinic_crystal(rng)
    atoms.calc = SINetCalculator(make_model())
    stress = atoms.get_stress()
    stresses = atoms.get_stresses()  # a second calculation: stress must stay in the results
    np.testing.assert_allclose(atoms.calc.results["stress"], stress, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stresses.sum(axis=0), stress, rtol=1e-9, atol=1e-12)


def test_stresses_rotate_as_tensors(rng):
    atoms = triclinic_crystal(rng)
    calc = SINetCalculator(make_model())
    atoms.calc = calc
    stresses = voigt_6_to_full_3x3_stress(atoms.get_stresses())
    for parity in (False, True):
        R = random_orthogonal(parity).numpy()
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ R.T
        rotated.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
        rotated.calc = calc
        expected = np.einsum("ab,nbc,dc->nad", R, stresses, R)
        np.testing.assert_allclose(voigt_6_to_full_3x3_stress(rotated.get_stresses()), expected, rtol=1e-8, atol=1e-11)


def test_equivalent_atoms_share_the_stress():
    # every atom of a strained monatomic Bravais lattice sees the same surroundings
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell(
        atoms.cell.array @ np.array([[1.03, 0.02, 0.0], [0.02, 0.98, 0.0], [0.0, 0.0, 1.0]]), scale_atoms=True
    )
    atoms.calc = SINetCalculator(make_model())
    stresses = atoms.get_stresses()
    np.testing.assert_allclose(
        stresses, np.tile(atoms.get_stress() / len(atoms), (len(atoms), 1)), rtol=1e-8, atol=1e-12
    )


def test_stresses_are_local():
    # two molecules far apart in one cell: each one's atoms carry the stress (times its share of
    # the volume) that the molecule alone would have in that cell
    cell = np.diag([20.0, 14.0, 14.0])
    first, second = molecule("H2O"), molecule("CH4")
    first.positions += [4.0, 7.0, 7.0]
    second.positions += [14.0, 7.0, 7.0]
    calc = SINetCalculator(make_model())
    both = first + second
    for part in (both, first, second):
        part.set_cell(cell)
        part.pbc = True
    both.calc = calc
    together = both.get_stresses()
    for part, rows in ((first, slice(0, 3)), (second, slice(3, 8))):
        part.calc = calc
        np.testing.assert_allclose(together[rows], part.get_stresses(), rtol=1e-9, atol=1e-14)


def test_no_cell_is_a_clear_error():
    atoms = molecule("CH3CH2OH")
    atoms.calc = SINetCalculator(make_model())
    with pytest.raises(PropertyNotImplementedError, match="per-atom stresses need a cell periodic"):
        atoms.get_stresses()
    slab = Atoms("Cu2", positions=[[0, 0, 5], [1.8, 1.8, 5]], cell=[3.6, 3.6, 0], pbc=[1, 1, 0])
    slab.calc = SINetCalculator(make_model())
    with pytest.raises(PropertyNotImplementedError, match="pbc"):
        slab.get_stresses()


def test_committee_stresses_are_the_members_mean(rng):
    atoms = triclinic_crystal(rng)
    models = [make_model(seed=s) for s in range(2)]
    atoms.calc = SINetCalculator(models)
    mean = atoms.get_stresses()
    members = []
    for m in models:
        single = atoms.copy()
        single.calc = SINetCalculator(m)
        members.append(single.get_stresses())
    np.testing.assert_allclose(mean, np.mean(members, axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mean.sum(axis=0), atoms.get_stress(), rtol=1e-9, atol=1e-12)


def test_predict_stresses_match_the_calculator(rng):
    structures = [triclinic_crystal(rng), bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)]
    model = make_model()
    out = predict(model, structures, batch_size=2, properties=("stress", "stresses"))
    for k, atoms in enumerate(structures):
        atoms.calc = SINetCalculator(model)
        np.testing.assert_allclose(out["stresses"][k], atoms.get_stresses(), rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(out["stresses"][k].sum(axis=0), out["stress"][k], rtol=1e-9, atol=1e-12)
