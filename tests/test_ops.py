"""Scalar Interaction, layout, radial basis, embedding and gate."""

import pytest
import torch
from e3nn import o3

from sinet_ase.ops import (
    BesselBasis,
    PolynomialEnvelope,
    RadialEmbedding,
    ScalarGate,
    ScalarInteraction,
    SphericalEmbedding,
    SphericalLayout,
)
from sinet_ase.testing import (
    TOLERANCE,
    random_orthogonal,
    relative_error,
    rotate_features,
    rotate_harmonics,
    scalar_interaction_messages,
    scalar_interaction_messages_channels_last,
    scalar_interaction_reference,
)


def _edges(layout, E, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h_src = torch.randn(E, layout.channels, layout.num_m, generator=g, dtype=dtype)
    h_dst = torch.randn(E, layout.channels, layout.num_m, generator=g, dtype=dtype)
    vec = torch.randn(E, 3, generator=g, dtype=dtype)
    return h_src, h_dst, vec


def _graph_inputs(layout, N, E, num_scalars, dtype, seed=0):
    """Node features ``(N, c, M)``, an edge index, edge vectors, scalars and weights."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, layout.channels, layout.num_m, generator=g, dtype=dtype)
    edge_index = torch.randint(0, N, (2, E), generator=g)
    vec = torch.randn(E, 3, generator=g, dtype=dtype)
    s = torch.randn(E, num_scalars, generator=g, dtype=dtype) if num_scalars else None
    w = torch.rand(E, generator=g, dtype=dtype)
    return h, edge_index, vec, s, w


def _production(op, h, edge_index, Y, s=None, w=None, **kwargs):
    """The module's forward with ``(N, c, M)`` features in and out."""
    out = op(h.transpose(1, 2).contiguous(), edge_index, Y, s, w, **kwargs)
    return out if kwargs.get("scalars_only") else out.transpose(1, 2)


@pytest.mark.parametrize("lmax", range(7))
@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_scalar_interaction_equivariant(lmax, parity, dtype):
    """The production form and the per-edge reference both map rotated inputs to rotated sums."""
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 6)
    op = ScalarInteraction(layout, num_edge_scalars=4, with_receiver=True, hidden=16).to(dtype)
    h, edge_index, vec, s, w = _graph_inputs(layout, 5, 11, 4, dtype)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    R = random_orthogonal(parity, dtype=dtype)
    Y_rot = o3.spherical_harmonics(layout.sh_irreps, vec @ R.T, True, normalization="component")
    assert relative_error(Y_rot, rotate_harmonics(layout, Y, R)) < TOLERANCE[dtype]
    h_rot = rotate_features(layout, h, R)
    for form in (_production, scalar_interaction_reference):
        out = form(op, h, edge_index, Y, s, w)
        out_rot = form(op, h_rot, edge_index, Y_rot, s, w)
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
def test_production_form_equals_the_sum_of_per_edge_messages(lmax, with_receiver, num_scalars, scalars_only):
    """``ScalarInteraction`` (channels-last, the q and beta terms regrouped onto nodes) gives the
    neighbour sum of the reference per-edge messages (``sinet_ase.testing``), values and
    gradients with respect to every input and parameter, whole and in chunks of edges."""
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 5)
    op = ScalarInteraction(layout, num_edge_scalars=num_scalars, with_receiver=with_receiver, hidden=8).double()
    h, edge_index, vec, s, w = _graph_inputs(layout, 6, 19, num_scalars, torch.float64, seed=1)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    inputs = [t.requires_grad_(True) for t in (h, Y, s, w) if t is not None] + list(op.parameters())
    expected = scalar_interaction_reference(op, h, edge_index, Y, s, w)
    expected = expected[:, :, 0] if scalars_only else expected
    cot = torch.randn_like(expected)
    grads = torch.autograd.grad(expected, inputs, cot)
    for chunk in (None, 4):  # whole, and in recomputed chunks of 4 edges
        out = _production(op, h, edge_index, Y, s, w, scalars_only=scalars_only, edge_chunk_size=chunk)
        assert out.shape == expected.shape
        assert relative_error(out, expected) < 1e-12
        for g_out, g in zip(torch.autograd.grad(out, inputs, cot), grads):
            assert relative_error(g_out, g) < 1e-12
    # only the first n nodes receive (a chunk of receivers with its halo): the first n rows
    n = 4
    into_first = edge_index[0] < n
    out = _production(
        op,
        h,
        edge_index[:, into_first],
        Y[into_first],
        s[into_first] if s is not None else None,
        w[into_first],
        scalars_only=scalars_only,
        num_receivers=n,
    )
    assert out.shape[0] == n and relative_error(out, expected[:n]) < 1e-12


@pytest.mark.parametrize("lmax", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("with_receiver,num_scalars", [(True, 3), (False, 0)])
def test_per_edge_channels_last_form_is_the_same_operation(lmax, with_receiver, num_scalars):
    """The per-edge channels-last form (what ``benchmarks/bench_ops.py`` times) equals the
    ``(E, c, M)`` reference, values and gradients."""
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 5)
    op = ScalarInteraction(layout, num_edge_scalars=num_scalars, with_receiver=with_receiver, hidden=8).double()
    h_src, h_dst, vec = _edges(layout, 13, torch.float64)
    h_src.requires_grad_(True)
    h_dst = h_dst if with_receiver else None
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    s = torch.randn(13, num_scalars, dtype=torch.float64) if num_scalars else None
    w = torch.rand(13, dtype=torch.float64)
    out = scalar_interaction_messages(op, h_src, Y, h_dst, s, w)
    cl = scalar_interaction_messages_channels_last(
        op, h_src.transpose(1, 2), Y, None if h_dst is None else h_dst.transpose(1, 2), s, w
    )
    assert relative_error(cl.transpose(1, 2), out) < 1e-12
    cot = torch.randn_like(out)
    inputs = [h_src] + list(op.parameters())
    for g_cl, g in zip(torch.autograd.grad(cl.transpose(1, 2), inputs, cot), torch.autograd.grad(out, inputs, cot)):
        assert relative_error(g_cl, g) < 1e-12


@pytest.mark.parametrize("pre_norm", [False, True], ids=["plain", "pre_norm"])
@pytest.mark.parametrize("lmax", [0, 2])
def test_layer_equals_its_per_edge_reference(lmax, pre_norm):
    """``ScalarInteractionLayer`` is ``h + Gate(Linear(sum_j u SI(N(h_j), Y, N(h_i), phi) / n_avg))``
    written out with the per-edge reference, values and gradients (features, harmonics and
    every parameter); ``forward_scalars`` is its column 0; chunked edges change nothing."""
    from sinet_ase.ops import EquivariantRMSNorm, ScalarInteractionLayer

    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, 5)
    layer = ScalarInteractionLayer(layout, num_basis=3, hidden=8, avg_num_neighbors=2.0, pre_norm=pre_norm).double()
    assert layer.pre_norm == pre_norm and isinstance(layer.norm, EquivariantRMSNorm) == pre_norm
    if pre_norm:  # gains away from 1, so that the norm's parameters are exercised
        torch.nn.init.uniform_(layer.norm.gain, 0.5, 1.5)
    h, edge_index, vec, s, w = _graph_inputs(layout, 6, 17, 3, torch.float64, seed=2)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    inputs = [h.requires_grad_(True), Y.requires_grad_(True)] + list(layer.parameters())
    hn = layer.norm(h) if pre_norm else h
    summed = scalar_interaction_reference(layer.interaction, hn, edge_index, Y, s, w) / 2.0
    update = layout.from_e3nn(layer.linear(layout.to_e3nn(summed)))
    expected = h + layer.gate(update)
    cot = torch.randn_like(expected)
    grads = torch.autograd.grad(expected, inputs, cot)
    for chunk in (None, 5):
        out = layer(h, edge_index, Y, s, w, edge_chunk_size=chunk)
        assert relative_error(out, expected) < 1e-12
        for g_out, g in zip(torch.autograd.grad(out, inputs, cot), grads):
            assert relative_error(g_out, g) < 1e-12
    assert relative_error(layer.forward_scalars(h, edge_index, Y, s, w), expected[:, :, 0]) < 1e-12


@pytest.mark.parametrize("parity", [False, True], ids=["proper", "improper"])
def test_equivariant_rms_norm(parity):
    """One invariant scale per node and degree: equivariant with parity; unit mean square
    per degree when the gains are one."""
    from sinet_ase.ops import EquivariantRMSNorm

    layout = SphericalLayout(3, 4)
    norm = EquivariantRMSNorm(layout, eps=1e-12).double()
    h = torch.randn(5, 4, layout.num_m, dtype=torch.float64) * 7
    R = random_orthogonal(parity)
    assert relative_error(norm(rotate_features(layout, h, R)), rotate_features(layout, norm(h), R)) < 1e-12
    out = norm(h)
    for l in range(4):
        block = out[:, :, l * l : (l + 1) ** 2]
        mean_square = block.pow(2).sum(-1).mean(1) / (2 * l + 1)
        torch.testing.assert_close(mean_square, torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("channels", [1, 3, 64])
def test_scalar_interaction_any_channel_count(channels):
    layout = SphericalLayout(3, channels)
    op = ScalarInteraction(layout, with_receiver=False)
    h, edge_index, vec, _, _ = _graph_inputs(layout, 4, 5, 0, torch.float32)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    assert _production(op, h, edge_index, Y).shape == (4, channels, 16)


def test_scalar_interaction_mixes_degrees():
    """Output of degree 1 depends on the degree-2 input: the MLP couples degrees."""
    torch.manual_seed(0)
    layout = SphericalLayout(2, 4)
    op = ScalarInteraction(layout, with_receiver=False).double()
    h, edge_index, vec, _, _ = _graph_inputs(layout, 3, 6, 0, torch.float64)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    changed = h.clone()
    changed[:, :, 4:9] *= 2.0  # the l = 2 columns only
    out, out_changed = _production(op, h, edge_index, Y), _production(op, changed, edge_index, Y)
    assert (out[:, :, 1:4] - out_changed[:, :, 1:4]).abs().max() > 1e-6


def test_scalar_interaction_needs_declared_inputs():
    layout = SphericalLayout(1, 2)
    op = ScalarInteraction(layout, num_edge_scalars=3, with_receiver=True)
    h, edge_index, vec, _, _ = _graph_inputs(layout, 2, 2, 0, torch.float32)
    Y = o3.spherical_harmonics(layout.sh_irreps, vec, True, normalization="component")
    with pytest.raises(ValueError, match="edge scalars"):
        _production(op, h, edge_index, Y)
    with pytest.raises(ValueError, match="h_dst"):
        scalar_interaction_messages(op, h, Y)
    with pytest.raises(ValueError, match="edge scalars"):
        scalar_interaction_messages(op, h, Y, h)


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
        block = flat[:, offset : offset + 5 * (2 * l + 1)].reshape(4, 5, 2 * l + 1)
        assert torch.equal(block, h[:, :, l * l : (l + 1) ** 2])
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
