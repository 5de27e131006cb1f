"""Completeness metric r(l) = rank(H^l) / (2l+1) (sinet_ase.analysis)."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from e3nn import o3

from sinet_ase import atoms_to_graph, batch_graphs
from sinet_ase.analysis import completeness, features_by_layer, rank_ratio
from sinet_ase.model import edge_vectors, graph_batch
from sinet_ase.ops import SphericalLayout
from sinet_ase.testing import random_orthogonal, rotate_features, small_sinet


def degrees(lmax):
    return torch.arange(lmax + 1, dtype=torch.float64)


def block(h, l):
    return h[:, :, l * l : (l + 1) ** 2]


def test_equal_channels_span_one_direction():
    torch.manual_seed(0)
    lmax, c = 4, 12
    h = torch.zeros(5, c, (lmax + 1) ** 2, dtype=torch.float64)
    for l in range(lmax + 1):
        direction = torch.randn(5, 1, 2 * l + 1, dtype=torch.float64)
        scale = torch.randn(5, c, 1, dtype=torch.float64)  # channels are multiples of one vector
        block(h, l)[:] = scale * direction
    r = rank_ratio(h)
    assert torch.allclose(r, (1.0 / (2 * degrees(lmax) + 1)).expand(5, -1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_features(dtype):
    torch.manual_seed(0)
    lmax = 6
    full = rank_ratio(torch.randn(4, 2 * lmax + 1, (lmax + 1) ** 2, dtype=dtype))
    assert torch.equal(full, torch.ones(4, lmax + 1, dtype=torch.float64))
    c = 3  # fewer channels than 2l+1 for l >= 2: the rank is c
    few = rank_ratio(torch.randn(4, c, (lmax + 1) ** 2, dtype=dtype))
    expected = torch.clamp(c / (2 * degrees(lmax) + 1), max=1.0)
    assert torch.allclose(few, expected.expand(4, -1))


def test_constructed_rank_and_zero_blocks():
    torch.manual_seed(1)
    lmax, c = 3, 10
    h = torch.randn(2, c, (lmax + 1) ** 2, dtype=torch.float64)
    # degree 3 spanned by exactly two directions: rank 2 of 7
    basis = torch.randn(2, 2, 7, dtype=torch.float64)
    block(h, 3)[:] = torch.randn(2, c, 2, dtype=torch.float64) @ basis
    # degree 2 of node 1 holds only round-off (as a symmetry-forbidden degree does)
    block(h, 2)[1] = 1e-12 * torch.randn(c, 5, dtype=torch.float64)
    r = rank_ratio(h)
    assert r[0].tolist() == [1.0, 1.0, 1.0, 2 / 7]
    assert r[1].tolist() == [1.0, 1.0, 0.0, 2 / 7]
    assert rank_ratio(torch.zeros(3, c, 16)).eq(0).all()


def test_rank_is_rotation_invariant():
    torch.manual_seed(2)
    layout = SphericalLayout(3, 4)
    h = torch.randn(6, 4, 16, dtype=torch.float64)
    block(h, 1)[:, 2:] = 0.0  # two channels zero: rank 2 of 3 for degree 1
    R = random_orthogonal(parity=True)
    assert torch.equal(rank_ratio(h), rank_ratio(rotate_features(layout, h, R)))


def test_bad_shapes():
    with pytest.raises(ValueError, match="L\\+1"):
        rank_ratio(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="N, c"):
        rank_ratio(torch.randn(3, 4))
    with pytest.raises(ValueError, match="tol"):
        rank_ratio(torch.randn(2, 3, 4), tol=0.0)


def small_model(dtype=torch.float64, lmax=2, num_layers=2):
    return small_sinet(["H", "C", "O", "Cu"], dtype, lmax=lmax, num_layers=num_layers, avg_num_neighbors=8.0)


def test_features_by_layer_are_the_layer_inputs():
    model = small_model(num_layers=2)
    graph = atoms_to_graph(molecule("CH3CH2OH"), model.cutoff)
    feats = features_by_layer(model, graph)
    assert list(feats) == [0, 1, 2]
    backbone = model.backbone
    vec = edge_vectors(graph, graph.pos, graph.cell, graph_batch(graph)).to(model.dtype)
    Y = o3.spherical_harmonics(backbone.layout.sh_irreps, vec, True, normalization="component")
    with torch.no_grad():
        phi, u = backbone.radial(vec.norm(dim=-1))
        for t, layer in enumerate(backbone.layers):
            out = layer(feats[t], graph.edge_index, Y, phi, u)
            assert torch.allclose(out, feats[t + 1])
        assert torch.allclose(feats[2], backbone(graph, vec))
    # hooks are removed again
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in backbone.layers)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_completeness_on_a_model(dtype):
    model = small_model(dtype, lmax=3, num_layers=2)
    rattled = bulk("Cu", "fcc", a=3.61, cubic=True)
    rattled.rattle(0.1, seed=3)
    graph = batch_graphs([atoms_to_graph(molecule("CH3CH2OH"), 4.0), atoms_to_graph(rattled, 4.0)])
    result = completeness(model, graph)
    assert list(result) == [0, 1, 2]
    for mean, std in result.values():
        assert mean.shape == std.shape == (4,)
        assert np.all((mean >= 0) & (mean <= 1)) and np.all(std >= 0)
        assert mean[0] == 1.0 and std[0] == 0.0  # every atom has non-zero scalars
        assert np.all(mean[1:] > 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetry_forbidden_degrees_have_rank_zero(dtype):
    # every atom of perfect fcc sits on an O_h site: no l = 1, 2, 3 invariant direction
    model = small_model(dtype, lmax=3, num_layers=2)
    graph = atoms_to_graph(bulk("Cu", "fcc", a=3.61, cubic=True), model.cutoff)
    for mean, std in completeness(model, graph).values():
        assert mean.tolist() == [1.0, 0.0, 0.0, 0.0] and np.all(std == 0)


def test_nbody_message_passing_raises_the_rank_beyond_the_embedding():
    """Paper Sec. 5.2: Scalar Interaction makes no new directions, message passing does.

    A particle's embedding of degree l is spanned by at most 6 vectors (the harmonics of its
    4 edges, of x - mean(x) and of v), so at l = 4 (9 dimensions) r(4) <= 6/9; a layer sums
    over neighbours whose features span other edges' directions, so the rank can grow."""
    from sinet_ase.nbody import NBodySINet
    from sinet_ase.analysis import nbody_features_by_layer

    torch.manual_seed(0)
    model = NBodySINet(lmax=4, channels=16, num_layers=2, radial_hidden=8, mlp_hidden=16).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5, 3, generator=g, dtype=torch.float64)
    v = torch.randn(8, 5, 3, generator=g, dtype=torch.float64)
    q = torch.where(torch.rand(8, 5, generator=g) < 0.5, -1.0, 1.0).double()
    feats = nbody_features_by_layer(model, x, v, q)
    assert list(feats) == [0, 1, 2]
    with torch.no_grad():
        assert torch.equal(feats[2], model.features(x, v, q))
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in model.layers)
    ranks = {t: (rank_ratio(h) * (2 * degrees(4) + 1)).round() for t, h in feats.items()}
    assert ranks[0][:, 4].max() <= 6 and ranks[0][:, 1].min() == 3  # l = 1: 6 vectors span R^3
    assert ranks[1][:, 4].min() > 6  # after one layer, beyond what the embedding can span
