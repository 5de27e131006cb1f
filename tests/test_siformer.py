"""SiFormer (scalar-interaction transformer): the SINet backbone's test battery, plus attention."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from e3nn import o3

from sinet_ase import SINet, SINetCalculator, atoms_to_graph, batch_graphs, load_model, save_model
from sinet_ase.io import model_from_dict, model_to_dict
from sinet_ase.model import edge_vectors, graph_batch
from sinet_ase.ops import (EquivariantLayerNorm, RadialEmbedding, SiFormerLayer, SphericalLayout,
                           cutoff_softmax)
from sinet_ase.testing import (backbone_features as node_features, random_orthogonal,
                               rattled_ethanol as ethanol, relative_error, rotate_features,
                               triclinic_copper)
from conftest import TOLERANCE


def small_model(elements, dtype=torch.float64, cutoff=4.0, lmax=2, channels=8, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_heads", 2)
    model = SINet(elements=elements, cutoff=cutoff, lmax=lmax, channels=channels, num_layers=2,
                  mlp_hidden=16, radial_hidden=16, avg_num_neighbors=6.0, backbone="siformer", **kw)
    return model.to(dtype).eval()


def edge_inputs(layout, positions, cutoff, dtype):
    """All pairs within ``cutoff``: ``edge_index, Y, phi, u`` for a layer test."""
    n = positions.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = (i != j) & ((positions[j] - positions[i]).norm(dim=-1) < cutoff)
    edge_index = torch.stack([i[keep], j[keep]])
    vec = (positions[edge_index[1]] - positions[edge_index[0]]).to(dtype)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, normalize=True, normalization="component")
    phi, u = RadialEmbedding(cutoff, 8).to(dtype)(vec.norm(dim=-1))
    return edge_index, Y, phi, u


def randomise(module, scale=0.3, seed=0):
    """Move every parameter off its initial value (layer-norm scales of 1, sink logits of 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return module


# --- symmetry ---------------------------------------------------------------------------

@pytest.mark.parametrize("lmax", range(5))
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
    assert lmax == 0 or h[:, :, 1:].abs().max() > 1e-3
    assert relative_error(h_rot, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("lmax", range(5))
@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_layer_equivariant(lmax, parity, dtype):
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 4)
    layer = randomise(SiFormerLayer(layout, 8, hidden=16, num_heads=2), seed=lmax).to(dtype)
    layout = layer.layout
    positions = 2.0 * torch.rand(7, 3, dtype=torch.float64)
    h = torch.randn(7, 4, layout.num_m, dtype=torch.float64).to(dtype)
    R = random_orthogonal(parity)
    out = layer(h, *edge_inputs(layout, positions, 3.0, dtype))
    out_rot = layer(rotate_features(layout, h, R), *edge_inputs(layout, positions @ R.T, 3.0, dtype))
    assert relative_error(out_rot, rotate_features(layout, out, R)) < TOLERANCE[dtype]


@pytest.mark.parametrize("separate", [False, True], ids=["shared_scale", "per_degree"])
@pytest.mark.parametrize("lmax", [0, 3])
def test_layer_norm_equivariant_and_normalising(lmax, separate, dtype):
    layout = SphericalLayout(lmax, 5).to(dtype)
    norm = EquivariantLayerNorm(layout, separate_degrees=separate).to(dtype)
    h = 10.0 * torch.randn(6, 5, layout.num_m, dtype=dtype)
    R = random_orthogonal(True)
    out = norm(h)
    assert relative_error(norm(rotate_features(layout, h, R)), rotate_features(layout, out, R)) \
        < TOLERANCE[dtype]
    # unit weights: scalars centred; mean square per component (channel variance for l = 0)
    # is 1 per degree (per_degree) or on average over the degrees (shared_scale)
    assert out[:, :, 0].mean(dim=1).abs().max() < 1e-5
    mean_square = ((out * out) @ (layout.inner_product ** 2)).mean(dim=1)  # (N, L+1)
    if not separate:
        mean_square = mean_square.mean(dim=1)
    torch.testing.assert_close(mean_square, torch.ones_like(mean_square), atol=1e-3, rtol=0)
    assert torch.all(torch.isfinite(norm(torch.zeros_like(h))))


def test_shared_scale_keeps_small_vectors_small():
    """A tiny l > 0 part (a nearly symmetric environment) is not blown up to unit size."""
    layout = SphericalLayout(2, 4)
    h = torch.randn(3, 4, layout.num_m, dtype=torch.float64)
    h[:, :, 1:] *= 1e-2
    out = EquivariantLayerNorm(layout).double()(h)
    assert out[:, :, 1:].abs().max() < 0.1
    out_sep = EquivariantLayerNorm(layout, separate_degrees=True).double()(h)
    assert out_sep[:, :, 1:].abs().max() > 0.5


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


def test_energy_invariant_under_permutation(rng):
    model = small_model(["H", "C", "O"])
    atoms = ethanol(rng)
    perm = rng.permutation(len(atoms))
    out = model(atoms_to_graph(atoms, model.cutoff))
    out_perm = model(atoms_to_graph(atoms[perm], model.cutoff))
    assert relative_error(out_perm["energies"], out["energies"][perm]) < 1e-9
    assert relative_error(out_perm["forces"], out["forces"][perm]) < 1e-9


# --- conservative forces, stress, locality -----------------------------------------------

@pytest.mark.parametrize("system", ["molecule", "triclinic"])
def test_forces_match_finite_differences(system, rng):
    if system == "molecule":
        atoms, elements = ethanol(rng), ["H", "C", "O"]
    else:
        atoms, elements = triclinic_copper(rng), ["Cu"]
    atoms.calc = SINetCalculator(small_model(elements))
    iatoms = [0, 2, 8] if system == "molecule" else None  # C, O, H: keep it fast
    analytic = atoms.get_forces()[iatoms if iatoms else slice(None)]
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=iatoms)
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


@pytest.mark.parametrize("partner", ["only_neighbour", "one_of_many"])
def test_smooth_as_an_atom_crosses_the_cutoff(partner):
    """Energy and forces continuous at r_c, also when the entering atom is the only
    neighbour of the receiver (where a softmax without the sink term jumps 0 -> 1)."""
    model = small_model(["H", "O"], cutoff=3.0)
    base = molecule("H2O")
    direction = np.array([1.0, 0.0, 0.0]) if partner == "only_neighbour" else np.array([0.0, 1.0, 0.0])

    def energy_forces(d):
        atoms = base + Atoms("H", positions=[base.positions[0] + d * direction])
        graph = atoms_to_graph(atoms, model.cutoff)
        out = model(graph)
        return out["energy"].item(), out["forces"].detach().numpy(), graph.edge_index.shape[1]

    eps = 1e-9  # the energy also depends on d through the test atom's other neighbours
    e_in, f_in, n_in = energy_forces(3.0 - eps)
    e_out, f_out, n_out = energy_forces(3.0 + eps)
    e_far, _, _ = energy_forces(2.5)
    assert n_in > n_out, "the test atom must enter the neighbour list"
    assert abs(e_in - e_out) < 1e-9
    assert np.abs(f_in - f_out).max() < 1e-6
    assert abs(e_far - e_out) > 1e-6, "the test atom must interact inside the cutoff"


def test_batch_equals_one_at_a_time(dtype, rng):
    model = small_model(["H", "C", "O", "Cu"], dtype)
    structures = [ethanol(rng), triclinic_copper(rng), bulk("Cu", "fcc", a=3.6) * (2, 1, 1),
                  molecule("H2O")]
    graphs = [atoms_to_graph(a, model.cutoff) for a in structures]
    batched = model(batch_graphs(graphs), compute_stress=True)
    tol = TOLERANCE[dtype] * 10
    # errors relative to the batch's scale: bulk Cu has forces ~0 by symmetry
    force_scale = batched["forces"].abs().max().item()
    stress_scale = batched["stress"][1:3].abs().max().item()
    offset = 0
    for k, g in enumerate(graphs):
        single = model(g, compute_stress=True)
        n = g.pos.shape[0]
        assert relative_error(batched["energy"][k], single["energy"][0]) < tol
        error = (batched["forces"][offset:offset + n] - single["forces"]).abs().max().item()
        assert error < tol * force_scale
        if k in (1, 2):  # periodic ones: stress per structure
            error = (batched["stress"][k] - single["stress"][0]).abs().max().item()
            assert error < tol * stress_scale
        offset += n


# --- attention ----------------------------------------------------------------------------

def test_attention_weights_sum_to_at_most_one(rng):
    model = small_model(["H", "C", "O"])
    graph = atoms_to_graph(ethanol(rng), model.cutoff)
    backbone = model.backbone
    vec = edge_vectors(graph, graph.pos, graph.cell, graph_batch(graph))
    Y = o3.spherical_harmonics(backbone.layout.sh_irreps, vec, True, normalization="component")
    phi, u = backbone.radial(vec.norm(dim=-1))
    h = backbone.embedding(backbone.species(graph.z), graph.edge_index, Y, phi, u)
    with torch.no_grad():
        for layer in backbone.layers:
            a = layer.attention_weights(h, graph.edge_index, Y, phi, u)
            assert a.shape == (graph.edge_index.shape[1], 2)
            assert torch.all(a >= 0)
            sums = torch.zeros(graph.pos.shape[0], 2, dtype=a.dtype).index_add_(0, graph.edge_index[0], a)
            assert torch.all(sums <= 1.0) and torch.all(sums > 0.1)
            h = layer(h, graph.edge_index, Y, phi, u)


def test_cutoff_softmax_properties():
    gen = torch.Generator().manual_seed(0)
    receiver = torch.tensor([0, 0, 0, 1, 1, 2])
    logits = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    u = torch.rand(6, generator=gen, dtype=torch.float64)
    sink = torch.randn(3, generator=gen, dtype=torch.float64)
    a = cutoff_softmax(logits, u, receiver, 4, sink)
    # the formula, written out naively
    w = u[:, None] * logits.exp()
    denominator = sink.exp().expand(4, 3).clone().index_add(0, receiver, w)
    torch.testing.assert_close(a, w / denominator[receiver])
    # huge logits: the per-receiver shift keeps everything finite, same weights
    torch.testing.assert_close(cutoff_softmax(logits + 800.0, u, receiver, 4, sink + 800.0), a)
    assert torch.all(torch.isfinite(cutoff_softmax(logits * 1e4, u, receiver, 4, sink)))
    # u = 0 edges (at the cutoff) drop out and leave the others as if absent
    u0 = u.clone()
    u0[[1, 5]] = 0.0
    a0 = cutoff_softmax(logits, u0, receiver, 4, sink)
    keep = torch.tensor([0, 2, 3, 4])
    torch.testing.assert_close(a0[keep], cutoff_softmax(logits[keep], u[keep], receiver[keep], 4, sink))
    assert torch.all(a0[[1, 5]] == 0)
    # no sink and u = 1: the ordinary softmax over neighbours
    from torch_geometric.utils import softmax

    plain = cutoff_softmax(logits, torch.ones(6, dtype=torch.float64), receiver, 4,
                           torch.full((3,), -1e4, dtype=torch.float64))
    torch.testing.assert_close(plain, softmax(logits, receiver, num_nodes=4))
    # gradients are finite, also through u = 0 and huge logits
    logits.requires_grad_(True)
    u0.requires_grad_(True)
    cutoff_softmax(logits * 100.0, u0, receiver, 4, sink).pow(2).sum().backward()
    assert torch.all(torch.isfinite(logits.grad)) and torch.all(torch.isfinite(u0.grad))


def test_force_training_step_reaches_every_parameter(rng):
    """``training=True`` keeps the graph of the forces (double backward through the softmax)."""
    model = small_model(["H", "C", "O"]).train()
    out = model(atoms_to_graph(ethanol(rng), model.cutoff), training=True)
    loss = out["forces"].pow(2).sum() + out["energy"].pow(2).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad)), name
    assert model.backbone.layers[0].attention.sink_logit.grad.abs().max() > 0


# --- configuration and model files ---------------------------------------------------------

def test_save_load_round_trip_through_calculator(tmp_path):
    model = small_model(["H", "C", "O"], atomic_energies={"H": -13.6, "C": -1029.5, "O": -2041.3})
    path = tmp_path / "siformer.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config["backbone"] == "siformer" and loaded.config["num_heads"] == 2
    assert all(isinstance(layer, SiFormerLayer) for layer in loaded.backbone.layers)
    atoms = ethanol()
    results = []
    for m in (model, path):  # the in-memory model, and the file through the calculator
        calc = SINetCalculator(m)
        results.append((calc.get_potential_energy(atoms), calc.get_forces(atoms)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_model_files_without_backbone_key_load_as_sinet():
    torch.manual_seed(0)
    payload = model_to_dict(SINet(["H"], channels=4, lmax=1, num_layers=1, mlp_hidden=8,
                                  radial_hidden=8))
    del payload["config"]["backbone"], payload["config"]["num_heads"]
    model = model_from_dict(payload)
    assert model.config["backbone"] == "sinet"
    assert model.backbone.backbone_type == "sinet"


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="'sinet', 'siformer'"):
        SINet(elements=["H"], backbone="transformer")
    with pytest.raises(ValueError, match="divide channels"):
        SINet(elements=["H"], channels=6, backbone="siformer", num_heads=4)
