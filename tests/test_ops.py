"""Scalar Interaction, layout, radial basis, embedding and gate."""

import pytest
import torch
from e3nn import o3

from sinet_ase.ops import (BesselBasis, PolynomialEnvelope, RadialEmbedding, ScalarGate,
                           ScalarInteraction, SphericalEmbedding, SphericalLayout)
from sinet_ase.testing import random_orthogonal, relative_error, rotate_features, rotate_harmonics
from conftest import TOLERANCE


def _edges(layout, E, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h_src = torch.randn(E, layout.channels, layout.num_m, generator=g, dtype=dtype)
    h_dst = torch.randn(E, layout.channels, layout.num_m, generator=g, dtype=dtype)
    vec = torch.randn(E, 3, generator=g, dtype=dtype)
    return h_src, h_dst, vec


@pytest.mark.parametrize("lmax", range(7))
@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_scalar_interaction_equivariant(lmax, parity, dtype):
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 6)
    op = ScalarInteraction(layout, num_edge_scalars=4, with_receiver=True, hidden=16).to(dtype)
    h_src, h_dst, vec = _edges(layout, 11, dtype)
    s = torch.randn(11, 4, dtype=dtype)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    R = random_orthogonal(parity, dtype=dtype)
    out = op(h_src, Y, h_dst, s)
    Y_rot = o3.spherical_harmonics(layout.sh_irreps, vec @ R.T, True, normalization="component")
    assert relative_error(Y_rot, rotate_harmonics(layout, Y, R)) < TOLERANCE[dtype]
    out_rot = op(rotate_features(layout, h_src, R), Y_rot, rotate_features(layout, h_dst, R), s)
    assert relative_error(out_rot, rotate_features(layout, out, R)) < TOLERANCE[dtype]


@pytest.mark.parametrize("lmax", [0, 1, 3])
@pytest.mark.parametrize("num_species", [1, 3])
def test_species_folded_embedding_equals_the_per_edge_sum(lmax, num_species):
    """The embedding's two forms (``fold_species``) give the same features and gradients with
    respect to the edge inputs and every parameter; the choice follows ``S (L+1) <= n_avg``."""
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 5)
    emb = SphericalEmbedding(num_species, layout, num_basis=4, radial_hidden=6, avg_num_neighbors=3.0).double()
    assert emb.fold_species == (num_species * (lmax + 1) <= 3.0)
    N, E = 7, 23
    g = torch.Generator().manual_seed(2)
    species = torch.randint(0, num_species, (N,), generator=g)
    edge_index = torch.randint(0, N, (2, E), generator=g)
    vec = torch.randn(E, 3, dtype=torch.float64, generator=g)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component").requires_grad_(True)
    phi = torch.randn(E, 4, dtype=torch.float64, generator=g, requires_grad=True)
    u = torch.rand(E, dtype=torch.float64, generator=g, requires_grad=True)
    inputs = [Y, phi, u] + list(emb.parameters())
    results = []
    for fold in (False, True):
        for chunk in (None, 5):  # whole, and in recomputed chunks of 5 edges
            emb.fold_species = fold
            h = emb(species, edge_index, Y, phi, u, edge_chunk_size=chunk)
            cot = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
            results.append((h, torch.autograd.grad(h, inputs, cot)))
    h_ref, g_ref = results[0]  # per edge, whole
    for h, grads in results[1:]:
        assert relative_error(h, h_ref) < 1e-12
        for a, b in zip(grads, g_ref):
            assert relative_error(a, b) < 1e-12


@pytest.mark.parametrize("lmax", [0, 1, 2, 4])
@pytest.mark.parametrize("with_receiver,num_scalars", [(True, 3), (False, 0)])
@pytest.mark.parametrize("scalars_only", [False, True], ids=["all_degrees", "scalars_only"])
def test_node_folded_aggregate_equals_the_sum_of_per_edge_messages(lmax, with_receiver, num_scalars,
                                                                  scalars_only):
    """``aggregate_channels_last`` (the q and beta terms regrouped onto nodes) gives the neighbour
    sum of ``forward``'s messages, values and gradients with respect to every input."""
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 5)
    op = ScalarInteraction(layout, num_edge_scalars=num_scalars, with_receiver=with_receiver,
                           hidden=8).double()
    N, E = 6, 19
    h = torch.randn(N, 5, layout.num_m, dtype=torch.float64, requires_grad=True)
    edge_index = torch.randint(0, N, (2, E), generator=torch.Generator().manual_seed(1))
    vec = torch.randn(E, 3, dtype=torch.float64)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component").requires_grad_(True)
    s = torch.randn(E, num_scalars, dtype=torch.float64, requires_grad=True) if num_scalars else None
    w = torch.rand(E, dtype=torch.float64, requires_grad=True)
    receiver, sender = edge_index
    messages = op(h[sender], Y, h[receiver] if with_receiver else None, s, edge_weight=w)
    expected = torch.zeros(N, 5, layout.num_m, dtype=torch.float64).index_add(0, receiver, messages)
    expected = expected[:, :, 0] if scalars_only else expected.transpose(1, 2)
    inputs = [t for t in (h, Y, s, w) if t is not None]
    cot = torch.randn_like(expected)
    grads = torch.autograd.grad(expected, inputs, cot, retain_graph=True)
    for chunk in (None, 4):  # whole, and in recomputed chunks of 4 edges
        folded = op.aggregate_channels_last(h.transpose(1, 2).contiguous(), edge_index, Y, s, edge_weight=w,
                                            scalars_only=scalars_only, edge_chunk_size=chunk)
        assert folded.shape == expected.shape
        assert relative_error(folded, expected) < 1e-12
        for g_folded, g in zip(torch.autograd.grad(folded, inputs, cot), grads):
            assert relative_error(g_folded, g) < 1e-12


@pytest.mark.parametrize("lmax", [0, 1, 2, 3, 5])
def test_channels_last_form_is_the_same_operation(lmax):
    """``forward_channels_last`` on (E, M, c) equals ``forward`` on (E, c, M), values and gradients,
    and the layer gives the same output whichever edge layout it uses."""
    from sinet_ase.ops import ScalarInteractionLayer

    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 5)
    op = ScalarInteraction(layout, num_edge_scalars=3, with_receiver=True, hidden=8).double()
    h_src, h_dst, vec = _edges(layout, 13, torch.float64)
    h_src.requires_grad_(True)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    s, w = torch.randn(13, 3, dtype=torch.float64), torch.rand(13, dtype=torch.float64)
    out = op(h_src, Y, h_dst, s, edge_weight=w)
    out_cl = op.forward_channels_last(h_src.transpose(1, 2), Y, h_dst.transpose(1, 2), s, edge_weight=w)
    assert relative_error(out_cl.transpose(1, 2), out) < 1e-12
    cot = torch.randn_like(out)
    g, = torch.autograd.grad(out, h_src, cot)
    g_cl, = torch.autograd.grad(out_cl.transpose(1, 2), h_src, cot)
    assert relative_error(g_cl, g) < 1e-12

    # without h_dst and edge scalars too
    op_plain = ScalarInteraction(layout, with_receiver=False, hidden=8).double()
    assert relative_error(op_plain.forward_channels_last(h_src.transpose(1, 2), Y).transpose(1, 2),
                          op_plain(h_src, Y)) < 1e-12

    # the layer: (E, c, M) form against channels-last with the per-node first-layer terms,
    # values and gradients with respect to the features and the edge vectors' harmonics
    layer = ScalarInteractionLayer(layout, num_basis=3, hidden=8, avg_num_neighbors=2.0).double()
    h = torch.randn(6, 5, layout.num_m, dtype=torch.float64, requires_grad=True)
    Y = Y.detach().requires_grad_(True)
    edge_index = torch.randint(0, 6, (2, 13))
    results, grads = [], []
    for channels_last in (False, True):
        layer.channels_last = channels_last
        out = layer(h, edge_index, Y, s, w)
        results.append(out)
        grads.append(torch.autograd.grad(out, (h, Y), torch.ones_like(out)))
    assert relative_error(results[1], results[0]) < 1e-12
    for g_cl, g in zip(grads[1], grads[0]):
        assert relative_error(g_cl, g) < 1e-12


@pytest.mark.parametrize("channels", [1, 3, 64])
def test_scalar_interaction_any_channel_count(channels):
    layout = SphericalLayout(3, channels)
    op = ScalarInteraction(layout, with_receiver=False)
    h_src, _, vec = _edges(layout, 5, torch.float32)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    assert op(h_src, Y).shape == (5, channels, 16)


def test_scalar_interaction_mixes_degrees():
    """Output of degree 1 depends on the degree-2 input: the MLP couples degrees."""
    torch.manual_seed(0)
    layout = SphericalLayout(2, 4)
    op = ScalarInteraction(layout, with_receiver=False).double()
    h_src, _, vec = _edges(layout, 3, torch.float64)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    changed = h_src.clone()
    changed[:, :, 4:9] *= 2.0  # the l = 2 columns only
    out, out_changed = op(h_src, Y), op(changed, Y)
    assert (out[:, :, 1:4] - out_changed[:, :, 1:4]).abs().max() > 1e-6


def test_scalar_interaction_needs_declared_inputs():
    layout = SphericalLayout(1, 2)
    op = ScalarInteraction(layout, num_edge_scalars=3, with_receiver=True)
    h, _, vec = _edges(layout, 2, torch.float32)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    with pytest.raises(ValueError, match="h_dst"):
        op(h, Y)
    with pytest.raises(ValueError, match="edge scalars"):
        op(h, Y, h)


@pytest.mark.parametrize("lmax", [0, 1, 3])
def test_layout_round_trip_and_o3_linear(lmax):
    """The (n, c, M) layout holds exactly e3nn's numbers; o3.Linear acts per degree."""
    layout = SphericalLayout(lmax, 5)
    h = torch.randn(4, 5, layout.num_m)
    flat = layout.to_e3nn(h)
    assert flat.shape == (4, layout.irreps.dim)
    assert torch.equal(layout.from_e3nn(flat), h)
    # e3nn block of degree l, channel k is h[:, k, l^2:(l+1)^2]
    offset = 0
    for l in range(lmax + 1):
        block = flat[:, offset:offset + 5 * (2 * l + 1)].reshape(4, 5, 2 * l + 1)
        assert torch.equal(block, h[:, :, l * l:(l + 1) ** 2])
        offset += 5 * (2 * l + 1)


def test_envelope_smooth_at_cutoff():
    env = PolynomialEnvelope(5.0, p=6).double()
    r = torch.tensor([0.0, 4.999999, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    u = env(r)
    assert float(u[0].detach()) == pytest.approx(1.0)
    assert abs(float(u[1])) < 1e-12 and float(u[2]) == 0.0 and float(u[3]) == 0.0
    (du,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    assert abs(float(du[1])) < 1e-8 and abs(float(d2u[1])) < 1e-3


def test_bessel_basis_values():
    basis = BesselBasis(5.0, 3).double()
    r = torch.tensor([1.3], dtype=torch.float64)
    expected = [(2 / 5.0) ** 0.5 * torch.sin(n * torch.pi * r / 5.0) / r for n in (1, 2, 3)]
    assert torch.allclose(basis(r)[0], torch.cat(expected))
    phi, u = RadialEmbedding(5.0, 3).double()(torch.tensor([5.5], dtype=torch.float64))
    assert torch.all(phi == 0) and u.item() == 0


@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_embedding_and_gate_equivariant(parity, dtype):
    torch.manual_seed(1)
    layout = SphericalLayout(3, 4)
    emb = SphericalEmbedding(2, layout, num_basis=5, radial_hidden=8).to(dtype)
    gate = ScalarGate(layout).to(dtype)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    vec = torch.randn(4, 3, dtype=dtype)
    phi = torch.rand(4, 5, dtype=dtype)
    u = torch.rand(4, dtype=dtype)
    species = torch.tensor([0, 1, 1])
    R = random_orthogonal(parity, dtype=dtype)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    Y_rot = o3.spherical_harmonics(layout.sh_irreps, vec @ R.T, True, normalization="component")
    h = emb(species, edge_index, Y, phi, u)
    h_rot = emb(species, edge_index, Y_rot, phi, u)
    assert relative_error(h_rot, rotate_features(layout, h, R)) < TOLERANCE[dtype]
    assert relative_error(gate(h_rot), rotate_features(layout, gate(h), R)) < TOLERANCE[dtype]
