r"""SiFormer: a graph transformer built from Scalar Interaction (paper, Sec. 5).

The paper names SiFormer and leaves its details to an appendix we do not
have; this module is our design from its one-line description ("uses scalar
interaction to construct a graph transformer"): attention whose weights come
only from invariants, values that are scalar-interaction messages, and the
usual pre-norm transformer block. Shapes: ``N`` atoms, ``E`` edges ``i <- j``
(``edge_index[0] = i`` receives, ``edge_index[1] = j`` sends), ``c`` channels
of every degree ``l = 0..L``, ``M = (L+1)^2`` spherical columns, ``H`` heads of
``d = c / H`` channels each (head ``h`` owns channels ``h d .. (h+1) d - 1``).

One :class:`SiFormerLayer` (``h`` is ``(N, c, M)``)::

    x = LN_1(h)                                   # EquivariantLayerNorm, (N, c, M)
    h = h + Linear_O( sum_j a_ij v_ij )           # attention block
    h = h + FFN(LN_2(h))                          # feed-forward block

(``LN``: :class:`~sinet_ase.ops.EquivariantLayerNorm`: scalars centred, all
degrees divided by one invariant per-atom scale, learnable per-channel
weights; see :mod:`sinet_ase.ops.norm` for why the scale is shared across
degrees in a potential.)

**Invariants of an edge** (the same as Scalar Interaction's;
``<a, b> = sum_m a_m b_m / sqrt(2l+1)`` per degree):

``s_ij = [ <x_j^{l,k}, Y_ij^l>, x_j^{0,k}, <x_i^{l,k}, x_j^{l,k}>, x_i^{0,k}, phi(r_ij) ]``,
``(E, 2c(L+1) + 2c + n_basis)``. One MLP maps them to the value coefficients
and the attention logits: ``MLP(s_ij) = [alpha (E, c, L+1), beta (E, c, L+1),
logit (E, H)]`` (a single hidden layer shared by both).

**Values** (REBIF: linear combinations of the type-``l`` fragments present):
``V = Linear_V(x)`` (e3nn ``o3.Linear``, mixes channels within each degree),
``v_ij^{l,k} = alpha_ij^{l,k} V_j^{l,k} + beta_ij^{l,k} Y_ij^l``, ``(E, c, M)``.

**Attention weights** with the cutoff envelope ``u`` inside the softmax and a
learnable "sink" logit ``b_h`` per head (an always-present extra key that
contributes to the denominator only):

``a_ij^h = u(r_ij) exp(logit_ij^h) / ( exp(b_h) + sum_k u(r_ik) exp(logit_ik^h) )``, ``(E, H)``.

So ``0 <= sum_j a_ij^h < 1`` per receiver and head. Because ``u`` and its
first two derivatives vanish at ``r_c``, a neighbour crossing the cutoff
changes its own weight *and every other weight of the receiver* only at third
order: energy and forces stay continuous. The sink term is what makes this
true when the entering atom is the receiver's only neighbour (without it the
weight would jump from 0 to 1); multiplying a plain softmax by ``u`` instead
would not do: the other neighbours' weights would jump when the new one
enters the denominator with its full ``exp(logit)``. Evaluation is
numerically stable: every receiver subtracts the (detached) shift
``m_i^h = max(b_h, max_j [logit_ij^h + log max(u_ij, 1e-30)])`` from all
exponents, which leaves the weights unchanged mathematically and keeps every
exponent below 69 and the denominator ``>= 1`` in practice (see :func:`cutoff_softmax`). The message sum
``sum_j a_ij v_ij`` is a weighted mean, so no ``1/avg_num_neighbors``.

**Feed-forward block** (a node-level scalar interaction, PaiNN-like):
``y = Linear_A(x)``; invariants ``[x^{0,k}, <x^{l,k}, y^{l,k}> for l >= 1]``
``(N, c(L+1))`` -> MLP -> ``[delta^k (N, c), gamma^{l,k} (N, c, L)]``;
``out^0 = delta``, ``out^{l,k} = gamma^{l,k} y^{l,k}`` (``l >= 1``);
``FFN(x) = Linear_B(out)``. The bilinear invariants ``<x^l, W x^l>`` carry the
cross-channel inner products ``<x^{l,k}, x^{l,k'}>`` at ``O(c)`` cost.

Equivariance: ``x, V, Y`` transform by ``D^l(g)`` (parity ``(-1)^l``), every
invariant above and therefore ``alpha, beta, logit, a, delta, gamma`` are
invariant, and every output of degree ``l`` is a sum of type-``l`` fragments
times invariants. Cost per edge is ``O(c M)`` for the equivariant part plus
the MLP, like :class:`~sinet_ase.ops.ScalarInteractionLayer`; the layer norms,
linears and FFN work per atom.
"""

from typing import Optional

import torch
from e3nn import o3

from .layout import SphericalLayout
from .mlp import mlp
from .norm import EquivariantLayerNorm

_FLOOR = 1e-30


def cutoff_softmax(
    logits: torch.Tensor, u: torch.Tensor, receiver: torch.Tensor, num_nodes: int, sink_logit: torch.Tensor
) -> torch.Tensor:
    r"""Envelope-weighted softmax over each receiver's neighbours, with a sink.

    ``a_e = u_e exp(logit_e) / (exp(b) + sum_{e' -> same receiver} u_e' exp(logit_e'))``.

    Args:
        logits: ``(E, H)``.
        u: ``(E,)`` cutoff envelope in ``[0, 1]``.
        receiver: ``(E,)`` receiving node of each edge.
        num_nodes: ``N``.
        sink_logit: ``(H,)`` the sink's logit ``b``.

    Returns ``(E, H)`` weights; per receiver and head they sum to ``< 1``.
    """
    E, H = logits.shape
    sink = sink_logit.to(logits.dtype)
    with torch.no_grad():  # the shift cancels mathematically: no gradient through the max
        key = logits + torch.log(u.clamp_min(_FLOOR)).unsqueeze(-1)
        shift = sink.detach().expand(num_nodes, H).clone()
        shift.scatter_reduce_(0, receiver.unsqueeze(-1).expand(E, H), key, reduce="amax", include_self=True)
    w = u.unsqueeze(-1) * torch.exp(logits - shift[receiver])  # (E, H), each <= 1e30
    denominator = torch.exp(sink - shift).index_add(0, receiver, w)  # (N, H), >= 1 in practice
    return w / denominator.clamp_min(_FLOOR)[receiver]


def _linear(layout: SphericalLayout, linear: o3.Linear, x: torch.Tensor) -> torch.Tensor:
    return layout.from_e3nn(linear(layout.to_e3nn(x)))


class ScalarInteractionAttention(torch.nn.Module):
    """Attention weights and scalar-interaction values of every edge.

    forward(x (N, c, M), V (N, c, M), edge_index (2, E), Y (E, M), phi (E, n_basis), u (E,))
    -> (a (E, H), v (E, c, M)).
    """

    def __init__(self, layout: SphericalLayout, num_basis: int, num_heads: int, hidden: int = 64):
        super().__init__()
        c, L = layout.channels, layout.lmax
        self.layout = layout
        self.num_heads = int(num_heads)
        num_invariants = 2 * c * (L + 1) + 2 * c + int(num_basis)
        self.mlp = mlp([num_invariants, hidden, 2 * c * (L + 1) + self.num_heads])
        self.sink_logit = torch.nn.Parameter(torch.zeros(self.num_heads))

    def forward(self, x, V, edge_index, Y, phi, u):
        c, L = self.layout.channels, self.layout.lmax
        receiver, sender = edge_index[0], edge_index[1]
        E = receiver.shape[0]
        x_i, x_j = x[receiver], x[sender]
        invariants = torch.cat(
            [
                self.layout.inner_with_harmonics(x_j, Y).reshape(E, -1),
                x_j[:, :, 0],
                self.layout.inner(x_i, x_j).reshape(E, -1),
                x_i[:, :, 0],
                phi,
            ],
            dim=-1,
        )
        out = self.mlp(invariants)
        coeff, logits = out[:, : 2 * c * (L + 1)], out[:, 2 * c * (L + 1) :]
        alpha, beta = coeff.reshape(E, 2, c, L + 1).unbind(1)  # (E, c, L+1)
        values = self.layout.combine_with_harmonics(alpha, V[sender], beta, Y)
        weights = cutoff_softmax(logits, u, receiver, x.shape[0], self.sink_logit)
        return weights, values


class ScalarInteractionFFN(torch.nn.Module):
    """Node-level feed-forward block: ``(N, c, M) -> (N, c, M)`` (see the module docstring)."""

    def __init__(self, layout: SphericalLayout, hidden: int = 64):
        super().__init__()
        c, L = layout.channels, layout.lmax
        self.layout = layout
        self.mix = o3.Linear(layout.irreps, layout.irreps)
        self.mlp = mlp([c * (L + 1), hidden, c * (L + 1)])
        self.output = o3.Linear(layout.irreps, layout.irreps)
        self.register_buffer("gate_of_m", layout.degree_of_m[1:] - 1, persistent=False)

    def forward(self, x):
        c, L = self.layout.channels, self.layout.lmax
        N = x.shape[0]
        y = _linear(self.layout, self.mix, x)
        invariants = torch.cat([x[:, :, 0], self.layout.inner(x, y)[:, :, 1:].reshape(N, -1)], dim=-1)
        coeff = self.mlp(invariants)
        out = coeff[:, :c].unsqueeze(-1)
        if L > 0:
            gamma = coeff[:, c:].reshape(N, c, L).index_select(-1, self.gate_of_m)  # (N, c, M-1)
            out = torch.cat([out, gamma * y[:, :, 1:]], dim=-1)
        return _linear(self.layout, self.output, out)


class SiFormerLayer(torch.nn.Module):
    """One SiFormer block (pre-norm attention + feed-forward, both residual).

    Args:
        layout: degrees and channels of the features.
        num_basis: width of the radial basis ``phi``.
        hidden: width of the edge MLP (coefficients and logits).
        num_heads: attention heads ``H``; must divide ``layout.channels``.
        ffn_hidden: width of the feed-forward MLP (default ``hidden``).

    forward(h (N, c, M), edge_index (2, E), Y (E, M), phi (E, n_basis), u (E,)) -> (N, c, M),
    the signature of :class:`~sinet_ase.ops.ScalarInteractionLayer`.
    """

    def __init__(
        self,
        layout: SphericalLayout,
        num_basis: int,
        hidden: int = 64,
        num_heads: int = 4,
        ffn_hidden: Optional[int] = None,
    ):
        super().__init__()
        c = layout.channels
        if num_heads < 1 or c % num_heads:
            raise ValueError(f"num_heads must be >= 1 and divide channels={c}, got {num_heads}")
        self.layout = layout
        self.num_heads = int(num_heads)
        self.norm_attention = EquivariantLayerNorm(layout)
        self.value = o3.Linear(layout.irreps, layout.irreps)
        self.attention = ScalarInteractionAttention(layout, num_basis, num_heads, hidden)
        self.output = o3.Linear(layout.irreps, layout.irreps)
        self.norm_ffn = EquivariantLayerNorm(layout)
        self.ffn = ScalarInteractionFFN(layout, ffn_hidden or hidden)
        self.register_buffer("head_of_channel", torch.arange(c) // (c // num_heads), persistent=False)

    def attention_weights(self, h, edge_index, Y, phi, u) -> torch.Tensor:
        """The weights ``a_ij^h`` this layer uses for input ``h``: ``(E, H)``."""
        x = self.norm_attention(h)
        return self.attention(x, x, edge_index, Y, phi, u)[0]

    def forward(self, h, edge_index, Y, phi, u):
        receiver = edge_index[0]
        x = self.norm_attention(h)
        weights, values = self.attention(x, _linear(self.layout, self.value, x), edge_index, Y, phi, u)
        messages = values * weights.index_select(1, self.head_of_channel).unsqueeze(-1)  # (E, c, M)
        aggregated = torch.zeros_like(h).index_add_(0, receiver, messages)
        h = h + _linear(self.layout, self.output, aggregated)
        return h + self.ffn(self.norm_ffn(h))

    def extra_repr(self) -> str:
        return f"{self.layout.irreps}, heads={self.num_heads}"
