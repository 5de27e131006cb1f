"""The optional ZBL core repulsion (``SINet(zbl=True)``): physics, switching, model files."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.data import covalent_radii

from sinet_ase import SINet, SINetCalculator, list_pretrained, load_model, save_model
from sinet_ase.ops.zbl import COULOMB_EV_A, zbl_pair_energy
from sinet_ase.testing import random_orthogonal


def pair_models(elements=("H", "C", "O"), **kw):
    """The same random weights with and without the ZBL term (it has no parameters)."""
    torch.manual_seed(0)
    options = dict(
        cutoff=4.0, lmax=2, channels=8, num_layers=2, mlp_hidden=16, radial_hidden=16, avg_num_neighbors=6.0, **kw
    )
    with_zbl = SINet(list(elements), zbl=True, **options).double()
    without = SINet(list(elements), **options).double()
    without.load_state_dict(with_zbl.state_dict())
    return with_zbl, without


def squeezed_molecule(rng):
    """C, O and three H with several pairs inside the ZBL range and some beyond it."""
    positions = np.array([[0.0, 0.0, 0.0], [0.55, 0.1, 0.0], [-0.3, 0.3, 0.2], [0.2, -0.3, 0.3], [0.9, 0.4, 0.1]])
    atoms = Atoms("COHHH", positions=positions + rng.normal(scale=0.02, size=positions.shape))
    return atoms


def test_two_atoms_a_tenth_of_an_angstrom_apart_repel_strongly():
    """At 0.1 Å the term is the screened Coulomb repulsion (93 eV for H-H, 2.8 keV for C-C) and
    dominates; beyond 0.6 times the sum of covalent radii it is exactly zero."""
    for symbols, expected in (("H2", 92.89), ("C2", 2808.1)):
        with_zbl, without = pair_models()
        calc, bare = SINetCalculator(with_zbl), SINetCalculator(without)
        dimer = Atoms(symbols, positions=[[0, 0, 0], [0.1, 0, 0]])
        repulsion = calc.get_potential_energy(dimer) - bare.get_potential_energy(dimer)
        assert repulsion == pytest.approx(expected, rel=1e-3)
        assert calc.get_forces(dimer)[1, 0] > 0.5 * expected / 0.1  # pushes the atoms apart
        z = float(dimer.numbers[0])
        r_max = 0.6 * 2 * covalent_radii[int(dimer.numbers[0])]
        z = torch.tensor(z, dtype=torch.float64)
        pair = zbl_pair_energy(torch.tensor(0.1, dtype=torch.float64), z, z)
        u = 1 - 28 * (0.1 / r_max) ** 6 + 48 * (0.1 / r_max) ** 7 - 21 * (0.1 / r_max) ** 8  # p = 6
        assert repulsion == pytest.approx(float(pair) * u, rel=1e-9)
        apart = Atoms(symbols, positions=[[0, 0, 0], [r_max + 1e-6, 0, 0]])
        assert calc.get_potential_energy(apart) == bare.get_potential_energy(apart)
    # k_e Z^2 / r at r -> 0: the screening function tends to 1
    six = torch.tensor(6.0, dtype=torch.float64)
    assert float(zbl_pair_energy(torch.tensor(1e-6, dtype=torch.float64), six, six)) == pytest.approx(
        COULOMB_EV_A * 36 / 1e-6, rel=1e-4
    )


def test_forces_and_stress_match_finite_differences(rng):
    with_zbl, _ = pair_models()
    atoms = squeezed_molecule(rng)
    atoms.calc = SINetCalculator(with_zbl)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), rtol=1e-6, atol=1e-6)
    assert np.abs(atoms.get_forces()).max() > 10  # the repulsion is in the forces
    cell = Atoms(
        "CO", positions=[[0, 0, 0], [0.8, 0.3, 0.2]], cell=[[2.6, 0, 0], [0.9, 2.4, 0], [0.4, 0.7, 2.5]], pbc=True
    )
    cell.calc = SINetCalculator(with_zbl)
    np.testing.assert_allclose(cell.get_stress(), calculate_numerical_stress(cell, eps=1e-6), rtol=1e-6, atol=1e-6)


def test_the_switch_is_smooth_where_a_pair_leaves_its_covalent_radii():
    """Energy and force of an O-H pair are continuous through r_max = 0.6 (r_O + r_H) (0.58 Å):
    the envelope takes the term and its first two derivatives to zero there."""
    with_zbl, without = pair_models()
    calc, bare = SINetCalculator(with_zbl), SINetCalculator(without)
    r_max = 0.6 * (covalent_radii[8] + covalent_radii[1])
    values = []
    for r in r_max + np.array([-2e-3, -1e-3, 0.0, 1e-3]):
        dimer = Atoms("OH", positions=[[0, 0, 0], [r, 0, 0]])
        values.append(
            (
                calc.get_potential_energy(dimer) - bare.get_potential_energy(dimer),
                calc.get_forces(dimer)[1, 0] - bare.get_forces(dimer)[1, 0],
            )
        )
    (e2, f2), (e1, f1), (e0, f0), (e_out, f_out) = values
    assert e_out == 0 and f_out == pytest.approx(0, abs=1e-12)
    assert abs(e0) < 1e-15 and 0 < e1 < 1e-4
    assert e2 / e1 == pytest.approx(8, rel=0.05)  # energy ~ (r_max - r)^3
    assert f2 / f1 == pytest.approx(4, rel=0.05) and abs(f1) < 0.05  # force ~ (r_max - r)^2


@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_energy_invariant_forces_equivariant(parity, rng):
    with_zbl, _ = pair_models()
    atoms = squeezed_molecule(rng)
    R = random_orthogonal(parity).numpy()
    moved = atoms.copy()
    moved.positions = atoms.positions @ R.T + np.array([1.0, -2.0, 0.5])
    calc = SINetCalculator(with_zbl)
    e, f = calc.get_potential_energy(atoms), calc.get_forces(atoms)
    assert calc.get_potential_energy(moved) == pytest.approx(e, rel=1e-12)
    np.testing.assert_allclose(calc.get_forces(moved), f @ R.T, rtol=1e-9, atol=1e-9)
    assert calc.get_potential_energies(atoms).sum() == pytest.approx(e, rel=1e-12)


def test_zbl_models_save_chunk_and_cast_like_any_other(tmp_path, rng):
    """The option is stored in the model file's config and loads back with the same numbers;
    edge chunks and float32 give the same repulsion (its constants stay float64)."""
    with_zbl, without = pair_models()
    assert with_zbl.config["zbl"] is True and with_zbl.config["zbl_cutoff_factor"] == 0.6
    assert without.config["zbl"] is False and without.zbl is None
    path = tmp_path / "zbl.pt"
    save_model(with_zbl, path)
    loaded = load_model(path)
    assert loaded.config["zbl"] is True and loaded.zbl is not None
    atoms = squeezed_molecule(rng)
    ref = SINetCalculator(with_zbl)
    for other in (SINetCalculator(path), SINetCalculator(with_zbl, edge_chunk_size=3)):
        assert other.get_potential_energy(atoms) == pytest.approx(ref.get_potential_energy(atoms), abs=1e-10)
        np.testing.assert_allclose(other.get_forces(atoms), ref.get_forces(atoms), rtol=0, atol=1e-10)
    single = SINetCalculator(with_zbl, dtype="float32")
    assert single.model.zbl.numbers.dtype == torch.float64
    assert single.get_potential_energy(atoms) == pytest.approx(ref.get_potential_energy(atoms), rel=1e-5)
    with pytest.raises(TypeError, match="zbl must be true or false"):
        SINet(["H"], zbl="yes")


def test_the_term_is_zero_on_molecules_near_equilibrium():
    """With the default 0.6 sums of covalent radii the term ends below bonding distances: on the
    shipped xTB test slice (ten molecules at 500 K) it adds exactly nothing."""
    from ase.io import read

    from sinet_ase.pretrained import pretrained_path

    frames = read(pretrained_path("sinet-xtb-md17").with_name("sinet-xtb-md17_test_slice.extxyz"), "::10")
    with_zbl, without = pair_models(("H", "C", "N", "O"))
    calc, bare = SINetCalculator(with_zbl), SINetCalculator(without)
    for atoms in frames:
        assert calc.get_potential_energy(atoms) == bare.get_potential_energy(atoms)
    strong = SINet(["H", "C", "N", "O"], zbl=True, zbl_cutoff_factor=1.0, channels=4, lmax=1, num_layers=1)
    assert strong.zbl.pair_cutoff.max() == pytest.approx(2 * covalent_radii[6])
    with pytest.raises(ValueError, match="zbl_cutoff_factor must be positive"):
        SINet(["H"], zbl=True, zbl_cutoff_factor=0)


@pytest.mark.parametrize("name", list_pretrained())
def test_model_files_without_the_option_load_unchanged(name):
    """No shipped potential has a ZBL term: files older than the option have no ``zbl`` key and
    load without the term; newer files store ``zbl: False``."""
    from sinet_ase.pretrained import pretrained_path

    raw = torch.load(pretrained_path(name), weights_only=True)
    assert raw["config"].get("zbl", False) is False
    model = load_model(pretrained_path(name))
    assert model.zbl is None and model.config["zbl"] is False
