"""Physics of the SINet energy model: symmetry, conservative forces, stress, locality."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from sinet_ase import SINet, SINetCalculator, atoms_to_graph, batch_graphs
from sinet_ase.model import edge_vectors, graph_batch
from sinet_ase.testing import (backbone_features as node_features, random_orthogonal,
                               rattled_ethanol as ethanol, relative_error, rotate_features,
                               triclinic_copper)
from conftest import TOLERANCE


def small_model(elements, dtype=torch.float64, cutoff=4.0, lmax=2, channels=8, seed=0, **kw):
    torch.manual_seed(seed)
    model = SINet(elements=elements, cutoff=cutoff, lmax=lmax, channels=channels, num_layers=2,
                  mlp_hidden=16, radial_hidden=16, avg_num_neighbors=6.0, **kw)
    # random weights are small: make the untrained energy surface less flat so tests can fail
    return model.to(dtype).eval()


@pytest.mark.parametrize("lmax", range(7))
@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_backbone_equivariant(lmax, parity, dtype, rng):
    model = small_model(["H", "C", "O"], dtype, lmax=lmax, channels=4, seed=lmax)
    atoms = ethanol(rng)
    R = random_orthogonal(parity).numpy()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ R.T + np.array([1.0, -2.0, 0.5])
    h = node_features(model, atoms_to_graph(atoms, model.cutoff))
    h_rot = node_features(model, atoms_to_graph(rotated, model.cutoff))
    expected = rotate_features(model.backbone.layout, h, torch.tensor(R))
    assert relative_error(h_rot, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("lmax", [0, 1, 2, 3])
@pytest.mark.parametrize("chunk", [None, 37], ids=["whole", "chunked"])
def test_scalar_features_are_the_scalars_of_the_features_with_their_gradients(lmax, chunk, rng):
    """The energy path skips the last layer's l > 0 output; values and gradients stay the same."""
    model = small_model(["H", "C", "O"], torch.float64, lmax=lmax, channels=4, seed=lmax)
    model.backbone.edge_chunk_size = chunk
    graph = atoms_to_graph(ethanol(rng), model.cutoff)
    backbone = model.backbone
    species = backbone.species(graph.z)
    vectors = edge_vectors(graph, graph.pos, graph.cell, graph_batch(graph)).detach().requires_grad_(True)
    weights = torch.randn(len(species), backbone.layout.channels, dtype=torch.float64)
    full = backbone.features(species, graph.edge_index, vectors)[:, :, 0]
    (grad_full,) = torch.autograd.grad((full * weights).sum(), vectors)
    scalars = backbone.scalar_features(species, graph.edge_index, vectors)
    (grad_scalars,) = torch.autograd.grad((scalars * weights).sum(), vectors)
    assert scalars.shape == full.shape
    assert relative_error(scalars, full) < 1e-12
    assert relative_error(grad_scalars, grad_full) < 1e-12
    assert float(grad_full.abs().max()) > 0  # the check has something to compare


@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_energy_invariant_forces_equivariant(parity, dtype, rng):
    model = small_model(["H", "C", "O"], dtype, lmax=3)
    atoms = ethanol(rng)
    R = random_orthogonal(parity).numpy()
    out = model(atoms_to_graph(atoms, model.cutoff))
    moved = atoms.copy()
    moved.positions = atoms.positions @ R.T + np.array([3.0, 0.1, -7.0])
    out_moved = model(atoms_to_graph(moved, model.cutoff))
    tol = TOLERANCE[dtype] * 10
    assert relative_error(out_moved["energy"], out["energy"]) < tol
    assert relative_error(out_moved["forces"], out["forces"] @ torch.tensor(R).T) < tol


def test_energy_invariant_under_permutation(dtype, rng):
    model = small_model(["H", "C", "O"], dtype)
    atoms = ethanol(rng)
    perm = rng.permutation(len(atoms))
    out = model(atoms_to_graph(atoms, model.cutoff))
    out_perm = model(atoms_to_graph(atoms[perm], model.cutoff))
    tol = TOLERANCE[dtype] * 10
    assert relative_error(out_perm["energy"], out["energy"]) < tol
    assert relative_error(out_perm["forces"], out["forces"][perm]) < tol
    assert relative_error(out_perm["energies"], out["energies"][perm]) < tol


def test_per_atom_energies_sum_and_forces_sum_to_zero(rng):
    model = small_model(["H", "C", "O"])
    out = model(atoms_to_graph(ethanol(rng), model.cutoff))
    assert out["energies"].sum().item() == pytest.approx(out["energy"].item(), abs=1e-12)
    assert out["forces"].sum(0).abs().max().item() < 1e-12


@pytest.mark.parametrize("system", ["molecule", "triclinic", "slab"])
def test_forces_match_finite_differences(system, rng):
    if system == "molecule":
        atoms, elements = ethanol(rng), ["H", "C", "O"]
    elif system == "triclinic":
        atoms, elements = triclinic_copper(rng), ["Cu"]
    else:
        atoms, elements = fcc111("Cu", (1, 1, 3), vacuum=4.0), ["Cu"]
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = SINetCalculator(small_model(elements))
    analytic = atoms.get_forces()
    numeric = calculate_numerical_forces(atoms, eps=1e-4)
    assert np.abs(analytic).max() > 1e-3, "forces too small for the check to mean anything"
    np.testing.assert_allclose(analytic, numeric, atol=1e-7 + 1e-6 * np.abs(analytic).max())


def test_stress_matches_finite_differences_on_small_triclinic_cell(rng):
    atoms = triclinic_copper(rng)
    atoms.calc = SINetCalculator(small_model(["Cu"]))
    analytic = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(analytic).max() > 1e-4
    np.testing.assert_allclose(analytic, numeric, atol=1e-8 + 1e-6 * np.abs(analytic).max())


def test_far_apart_molecules_add_up(rng):
    model = small_model(["H", "C", "O"])
    a, b = ethanol(rng), molecule("H2O")
    b.positions += [100.0, 0.0, 0.0]
    e = lambda atoms: model(atoms_to_graph(atoms, model.cutoff))["energy"].item()
    assert e(a + b) == pytest.approx(e(a) + e(b), abs=1e-10)


def test_smooth_as_an_atom_crosses_the_cutoff():
    model = small_model(["H", "O"], cutoff=3.0)
    base = molecule("H2O")

    def energy_forces(d):
        atoms = base + Atoms("H", positions=[base.positions[0] + [d, 0.0, 0.0]])
        out = model(atoms_to_graph(atoms, model.cutoff))
        return out["energy"].item(), out["forces"].detach().numpy()

    eps = 1e-6
    e_in, f_in = energy_forces(3.0 - eps)
    e_out, f_out = energy_forces(3.0 + eps)
    e_far, _ = energy_forces(2.5)
    assert abs(e_in - e_out) < 1e-9
    assert np.abs(f_in - f_out).max() < 1e-6
    assert abs(e_far - e_out) > 1e-6, "the test atom must interact inside the cutoff"


def test_batch_equals_one_at_a_time(dtype, rng):
    model = small_model(["H", "C", "O", "Cu"], dtype)
    structures = [ethanol(rng), triclinic_copper(rng), bulk("Cu", "fcc", a=3.6) * (2, 1, 1),
                  molecule("H2O")]
    graphs = [atoms_to_graph(a, model.cutoff) for a in structures]
    batched = model(batch_graphs(graphs), compute_stress=True)
    offset = 0
    tol = TOLERANCE[dtype] * 10
    # the perfect fcc cell has zero forces by symmetry (rounding noise of 1e-12): forces are
    # compared on the scale of the largest force in the batch, not each structure's own
    force_scale = float(batched["forces"].abs().max())
    for k, g in enumerate(graphs):
        single = model(g, compute_stress=True)
        n = g.pos.shape[0]
        assert relative_error(batched["energy"][k], single["energy"][0]) < tol
        force_error = float((batched["forces"][offset:offset + n] - single["forces"]).abs().max())
        assert force_error < tol * force_scale
        offset += n
    for k in (1, 2):  # periodic ones: stress per structure
        single = model(graphs[k], compute_stress=True)
        assert relative_error(batched["stress"][k], single["stress"][0]) < tol


def test_float32_and_float64_agree(rng):
    m64 = small_model(["H", "C", "O"], torch.float64)
    m32 = small_model(["H", "C", "O"], torch.float32)
    g = atoms_to_graph(ethanol(rng), 4.0)
    e64, e32 = m64(g)["energy"].item(), m32(g)["energy"].item()
    assert abs(e64 - e32) < 1e-4 * max(1.0, abs(e64))


def test_energy_reference_survives_float32_cast():
    model = SINet(elements=["H", "O"], atomic_energies={"H": -13.6, "O": -2041.123456789})
    model = model.to(torch.float32)
    assert model.energy_shift.dtype == torch.float64
    assert model.energy_shift[1].item() == -2041.123456789


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="not a chemical element"):
        SINet(elements=["H", "Xx"])
    with pytest.raises(ValueError, match="repeats"):
        SINet(elements=["H", "H"])
    with pytest.raises(ValueError, match="cutoff"):
        SINet(elements=["H"], cutoff=-1.0)
    with pytest.raises(ValueError, match="not in elements"):
        SINet(elements=["H"], atomic_energies={"C": 1.0})
