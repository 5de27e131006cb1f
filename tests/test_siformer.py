"""SiFormer (scalar-interaction transformer): the energy-model contract of ``sinet_ase.testing``,
plus its layer, layer norm and attention."""

import functools

import numpy as np
import pytest
import torch
from e3nn import o3

from sinet_ase import SINet, SINetCalculator, atoms_to_graph, load_model, save_model
from sinet_ase.io import model_from_dict, model_to_dict
from sinet_ase.model import edge_vectors, graph_batch
from sinet_ase.ops import EquivariantLayerNorm, RadialEmbedding, SiFormerLayer, SphericalLayout, cutoff_softmax
from sinet_ase.testing import (
    TOLERANCE,
    EnergyModelTests,
    random_orthogonal,
    rattled_ethanol as ethanol,
    relative_error,
    rotate_features,
)


SIFORMER = {"backbone": "siformer", "num_heads": 2}


class TestSiFormer(EnergyModelTests):
    """The energy-model contract on the SiFormer backbone."""

    model_options = SIFORMER


@pytest.fixture
def siformer(small_model):
    """``siformer(elements, dtype=float64, **options)``: a small SINet with the SiFormer backbone."""
    return functools.partial(small_model, **SIFORMER)


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
    assert relative_error(norm(rotate_features(layout, h, R)), rotate_features(layout, out, R)) < TOLERANCE[dtype]
    # unit weights: scalars centred; mean square per component (channel variance for l = 0)
    # is 1 per degree (per_degree) or on average over the degrees (shared_scale)
    assert out[:, :, 0].mean(dim=1).abs().max() < 1e-5
    mean_square = ((out * out) @ (layout.inner_product**2)).mean(dim=1)  # (N, L+1)
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


# --- attention ----------------------------------------------------------------------------


def test_attention_weights_sum_to_at_most_one(siformer, rng):
    model = siformer(["H", "C", "O"])
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

    plain = cutoff_softmax(
        logits, torch.ones(6, dtype=torch.float64), receiver, 4, torch.full((3,), -1e4, dtype=torch.float64)
    )
    torch.testing.assert_close(plain, softmax(logits, receiver, num_nodes=4))
    # gradients are finite, also through u = 0 and huge logits
    logits.requires_grad_(True)
    u0.requires_grad_(True)
    cutoff_softmax(logits * 100.0, u0, receiver, 4, sink).pow(2).sum().backward()
    assert torch.all(torch.isfinite(logits.grad)) and torch.all(torch.isfinite(u0.grad))


def test_force_training_step_reaches_every_parameter(siformer, rng):
    """``training=True`` keeps the graph of the forces (double backward through the softmax)."""
    model = siformer(["H", "C", "O"]).train()
    out = model(atoms_to_graph(ethanol(rng), model.cutoff), training=True)
    loss = out["forces"].pow(2).sum() + out["energy"].pow(2).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad)), name
    assert model.backbone.layers[0].attention.sink_logit.grad.abs().max() > 0


# --- configuration and model files ---------------------------------------------------------


def test_save_load_round_trip_through_calculator(siformer, tmp_path):
    model = siformer(["H", "C", "O"], atomic_energies={"H": -13.6, "C": -1029.5, "O": -2041.3})
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
    payload = model_to_dict(SINet(["H"], channels=4, lmax=1, num_layers=1, mlp_hidden=8, radial_hidden=8))
    del payload["config"]["backbone"], payload["config"]["num_heads"]
    model = model_from_dict(payload)
    assert model.config["backbone"] == "sinet"
    assert model.backbone.backbone_type == "sinet"


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="'sinet', 'siformer'"):
        SINet(elements=["H"], backbone="transformer")
    with pytest.raises(ValueError, match="divide channels"):
        SINet(elements=["H"], channels=6, backbone="siformer", num_heads=4)
