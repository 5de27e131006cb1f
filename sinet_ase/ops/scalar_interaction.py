r"""Scalar Interaction: equivariant messages without Clebsch-Gordan products.

REBIF (paper, Def. 3): the type-``l`` output of an equivariant operation is a
linear combination, with invariant coefficients, of the type-``l`` fragments
that the inputs already contain. For an edge ``i <- j`` those fragments are
the ``c`` channels ``h_j^{l,k}`` of the neighbour, and the edge harmonic
``Y_ij^l = Y^l(r_ij / |r_ij|)``.

1. Invariants, from inner products of fragments of equal degree
   (``<a, b>`` is summed over ``m`` and divided by ``sqrt(2l+1)``):

   ``q^{l,k} = <h_j^{l,k}, Y_ij^l>``,  ``p^{l,k} = <h_i^{l,k}, h_j^{l,k}>``,

   together with the scalars ``h_i^{0,k}``, ``h_j^{0,k}`` and the radial basis
   ``phi(|r_ij|)``.
2. Coefficients: one MLP maps the invariants of *all* degrees to
   ``alpha^{l,k}, beta^{l,k}`` for every output degree; this is where
   degrees talk to each other.
3. Message: ``m_ij^{l,k} = alpha^{l,k} h_j^{l,k} + beta^{l,k} Y_ij^l``.

The equivariant work per edge is ``O(c (L+1)^2)`` (products and sums over
the ``(L+1)^2`` spherical columns), against ``O((L+1)^6)`` paths of a full
tensor product. Under a rotation with or without inversion ``g``,
``h^l -> D^l(g) h^l`` and ``Y^l -> D^l(g) Y^l`` with the same parity
``(-1)^l``, so every ``q, p`` is invariant and ``m^l -> D^l(g) m^l``.

:class:`ScalarInteraction` computes the messages summed over neighbours, in one
production form (channels-last, with the linear parts regrouped per node; see its
docstring); the plain per-edge form of steps 1-3 is the reference it is tested against
(:func:`sinet_ase.testing.scalar_interaction_messages`).
:class:`ScalarInteractionLayer` wraps it into a message-passing layer: optional
pre-norm, messages times the cutoff envelope, sum over neighbours divided by the
average neighbour count, e3nn ``o3.Linear`` (mixes channels within each degree), gate
non-linearity, residual.
"""

import functools
from typing import Optional

import torch
from e3nn import o3

from . import fused
from .chunking import edge_chunked_sum
from .gate import ScalarGate
from .layout import SphericalLayout
from .mlp import mlp
from .neighbour_sum import gather_rows, sum_rows
from .norm import EquivariantRMSNorm


def _contract_rows(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``sum_m weights[e, m] rows[e, m, :]``: ``(E, R) x (E, R, d) -> (E, d)``.

    A product and a sum, which inductor fuses; ``bmm`` with ``(1, R)`` factors (and
    ``einsum``, which calls it) is slower forward + backward on CPU.
    """
    return (weights.unsqueeze(-1) * rows).sum(1)


class ScalarInteraction(torch.nn.Module):
    r"""The edge operation, summed over neighbours: ``sum_j u_ij m_ij`` with
    ``m_ij = SI(h_j, Y_ij, [h_i], [s_ij])``.

    Args:
        layout: degrees and channels of the features.
        num_edge_scalars: width of the optional extra invariants ``s`` per edge
            (e.g. the radial basis); 0 for none.
        with_receiver: whether ``h_i`` enters, adding ``p^{l,k}`` and ``h_i^0``
            to the invariants.
        hidden: width of the coefficient MLP.

    forward(h (N, M, c), edge_index (2, E), Y (E, M), edge_scalars (E, s), edge_weight (E,),
    scalars_only=False, edge_chunk_size=None, num_receivers=None) -> ``(N, M, c)``, or the
    degree-0 row alone, ``(N, c)``, with ``scalars_only``; ``edge_index[0]`` receives,
    ``edge_index[1]`` sends; ``num_receivers`` rows instead of ``N`` when given.

    Features are *channels-last*, ``(N, M, c)``: the ``c`` channels are the contiguous inner
    axis, so per-degree coefficients reach the ``2l+1`` rows of their degree by a gather of
    whole rows. This is the one production form (the layers, the calculator and
    ``torch.compile`` run it). The per-edge forms it is tested against, the messages
    ``m_ij`` as ``(E, c, M)`` and ``(E, M, c)`` tensors, live in :mod:`sinet_ase.testing`
    (:func:`~sinet_ase.testing.scalar_interaction_messages`).

    Stored weights: the coefficient MLP's first layer reads ``[q (c, L+1), h_j^0,
    p (c, L+1), h_i^0, s]`` and its last layer writes ``(2, c, L+1)``-ordered ``alpha, beta``;
    the forward pass reads them in ``(L+1, c)`` order (``_register_channels_last_orders``)
    instead of transposing per-edge tensors.

    Two terms are regrouped so that their matrix products act on the ``N`` nodes instead of
    the ``E`` edges (exact algebra, only rounding differs; tested against the per-edge sum):

    * the first layer's ``q`` term. ``q^{l,k} = <h_j^{l,k}, Y^l>`` is linear in ``h_j``
      and in ``Y``, so ``sum_{l,k} W_q[a, lk] q^{l,k} = sum_m Y^m G_j[m, a]`` with
      ``G_j[m, a] = sum_k W_q[a, l(m) k] h_j^{m,k} / sqrt(2l+1)``: an ``(N, M, hidden)``
      node tensor, gathered and contracted with ``Y`` per edge (``M hidden`` products per
      edge instead of ``(L+1) c hidden``). The ``W_j h_j^0`` term rides along as an extra
      row ``m = M`` with ``Y = 1``.
    * the last layer's ``beta`` rows. ``beta_ij = W_b a_ij + b_b`` (``a``: hidden
      activations) enters the sum as ``sum_j u_ij beta_ij^{l,k} Y_ij^{lm}``, linear in
      ``a``, so ``= sum_a W_b[lk, a] T_i[m, a] + b_b[lk] T_i[m, bias]`` with
      ``T_i = sum_j u_ij [a_ij, 1] Y_ij^m``, an ``(N, M, hidden + 1)`` node tensor.

    What stays per edge: ``p = <h_i, h_j>`` and the edge scalars through the first layer,
    the activation, the ``alpha`` rows of the last layer and ``alpha h_j``.

    Three steps, so that only the middle one runs per chunk of edges when
    ``edge_chunk_size`` is set (:func:`~sinet_ase.ops.chunking.edge_chunked_sum`): the
    node terms (:meth:`node_terms`), the sums over edges (:meth:`edge_sums`, linear in
    the set of edges), and the per-node products with ``W_b`` (:meth:`finish_sums`).
    """

    #: run the edge sums through the fused kernels where they are built (:mod:`sinet_ase.ops.fused`;
    #: set by the calculator, ``predict`` and the trainer; off by default)
    use_fused = False

    def __init__(
        self, layout: SphericalLayout, num_edge_scalars: int = 0, with_receiver: bool = True, hidden: int = 64
    ):
        super().__init__()
        self.layout = layout
        self.num_edge_scalars = int(num_edge_scalars)
        self.with_receiver = bool(with_receiver)
        c, L = layout.channels, layout.lmax
        num_invariants = c * (L + 1) + c + num_edge_scalars  # q, h_j^0, s
        if with_receiver:
            num_invariants += c * (L + 1) + c  # p, h_i^0
        self.coefficients = mlp([num_invariants, hidden, 2 * c * (L + 1)])
        self._register_channels_last_orders()

    def _register_channels_last_orders(self):
        """Column and row orders that let the channels-last form use the MLP's stored weights.

        The stored first layer reads ``[q (c, L+1), h_j^0, p (c, L+1), h_i^0, s]``; the
        channels-last form reads ``[q (L+1, c), p (L+1, c), s]`` per edge (``edge_columns``)
        and takes the ``h_j^0`` and ``h_i^0`` columns (``src_columns``, ``dst_columns``) per
        node. The stored last layer writes ``(2, c, L+1)``; ``output_rows`` reorders it to
        ``(2, L+1, c)``, so ``alpha`` and ``beta`` come out channels-last without a copy.
        """
        c, L = self.layout.channels, self.layout.lmax
        by_degree = torch.arange(c * (L + 1)).view(c, L + 1).t().reshape(-1)  # (l, k) -> k (L+1) + l
        q_width = c * (L + 1)
        edge = [by_degree]
        src = torch.arange(q_width, q_width + c)
        dst = torch.zeros(0, dtype=torch.long)
        offset = q_width + c
        if self.with_receiver:
            edge.append(offset + by_degree)
            dst = torch.arange(offset + q_width, offset + q_width + c)
            offset += q_width + c
        edge.append(torch.arange(offset, offset + self.num_edge_scalars))
        self.register_buffer("edge_columns", torch.cat(edge), persistent=False)
        self.register_buffer("src_columns", src, persistent=False)
        self.register_buffer("dst_columns", dst, persistent=False)
        self.register_buffer("output_rows", torch.cat([by_degree, q_width + by_degree]), persistent=False)

    def _first_layer_term(self, h: torch.Tensor, columns: torch.Tensor, with_bias: bool) -> torch.Tensor:
        """``W[:, columns] h[:, 0, :] (+ b)``: one scalar block of the first layer, ``(n, hidden)``."""
        first = self.coefficients[0]
        weight = first.weight.index_select(1, columns).t()
        return torch.addmm(first.bias, h[:, 0, :], weight) if with_bias else h[:, 0, :] @ weight

    def forward(
        self,
        h: torch.Tensor,
        edge_index: torch.Tensor,
        Y: torch.Tensor,
        edge_scalars: Optional[torch.Tensor] = None,
        edge_weight: Optional[torch.Tensor] = None,
        scalars_only: bool = False,
        edge_chunk_size: Optional[int] = None,
        num_receivers: Optional[int] = None,
    ) -> torch.Tensor:
        """``sum_j u_ij m_ij`` for every receiver (see the class docstring)."""
        if self.num_edge_scalars and edge_scalars is None:
            raise ValueError(f"this ScalarInteraction expects {self.num_edge_scalars} edge scalars")
        sums = edge_chunked_sum(
            functools.partial(self.edge_sums, scalars_only=scalars_only, num_receivers=num_receivers),
            (h,) + self.node_terms(h),
            edge_index,
            (Y, edge_scalars, edge_weight),
            edge_chunk_size,
        )
        return self.finish_sums(sums, scalars_only)

    def node_terms(self, h: torch.Tensor):
        """The first layer's per-node terms, from ``h (N, M, c)``.

        Returns ``sender (N, M + 1, hidden)``: ``W_q q`` regrouped as ``G_j[m]`` (rows
        ``m < M``) and ``W_j h_j^0`` (row ``M``); and ``receiver (N, hidden)``:
        ``W_i h_i^0 + b`` (``None`` without a receiver: the bias is then added per edge).
        """
        c, L, M = self.layout.channels, self.layout.lmax, self.layout.num_m
        first = self.coefficients[0]
        hidden_width = first.weight.shape[0]
        q_columns = self.edge_columns[: (L + 1) * c]  # edge_columns starts with q's, in (L+1, c) order
        w_q = first.weight.index_select(1, q_columns).view(hidden_width, L + 1, c)
        w_q = w_q.index_select(1, self.layout.degree_of_m) * self.layout.inner_product.sum(1).view(1, M, 1)
        w_sender = torch.cat([w_q, first.weight.index_select(1, self.src_columns).unsqueeze(1)], dim=1)
        h_sender = torch.cat([h, h[:, :1]], dim=1)  # (N, M + 1, c)
        sender = torch.einsum("nmc,amc->nma", h_sender, w_sender)  # (N, M + 1, hidden)
        receiver = self._first_layer_term(h, self.dst_columns, with_bias=True) if self.with_receiver else None
        return sender, receiver

    def edge_sums(
        self,
        h,
        node_sender,
        node_receiver,
        edge_index,
        Y,
        edge_scalars=None,
        edge_weight=None,
        scalars_only: bool = False,
        num_receivers: Optional[int] = None,
    ) -> torch.Tensor:
        """The sums over edges of :meth:`forward`, linear in the set of edges.

        ``(N, M, c + hidden + 1)``: ``[sum_j u alpha h_j, T]`` (with ``scalars_only``, the
        degree-0 row alone, ``(N, c + hidden + 1)``); ``node_sender, node_receiver`` from
        :meth:`node_terms`; ``num_receivers`` rows instead of ``N`` when given.
        """
        c, L = self.layout.channels, self.layout.lmax
        receiver, sender = edge_index[0], edge_index[1]
        num_nodes = h.shape[0] if num_receivers is None else num_receivers
        first, activation, last = self.coefficients
        layout = self.layout
        # the fused kernels do each gather-product-sum in one pass (same numbers as the
        # torch form below, which runs where they are not built or not switched on)
        kernels = fused.kernels_for(h, self.use_fused)
        Y_ext = torch.cat([Y, Y.new_ones(Y.shape[0], 1)], dim=1)  # (E, M + 1)
        if kernels is not None:
            pre = fused.gather_contract(node_sender, sender, Y_ext)
            h_src = None
        else:
            pre = _contract_rows(Y_ext, gather_rows(node_sender, sender))
            h_src = gather_rows(h, sender)
        pre = pre + (first.bias if node_receiver is None else gather_rows(node_receiver, receiver))
        pairs = []
        if self.with_receiver:
            if kernels is not None:
                p = fused.pair_degree_dot(h, receiver, h, sender, layout.degree_start, layout.degree_scale)
            else:
                p = layout.degree_sum_channels_last(gather_rows(h, receiver) * h_src)  # (E, L+1, c)
            pairs.append(p.reshape(-1, (L + 1) * c))
        if self.num_edge_scalars:
            pairs.append(edge_scalars)
        if pairs:
            pre = torch.addmm(
                pre,
                torch.cat(pairs, dim=-1) if len(pairs) > 1 else pairs[0],
                first.weight.index_select(1, self.edge_columns[(L + 1) * c :]).t(),
            )  # p, s
        hidden = activation(pre)  # (E, hidden)
        rows = self._alpha_rows(scalars_only)
        alpha = torch.nn.functional.linear(hidden, last.weight.index_select(0, rows), last.bias.index_select(0, rows))
        hidden_ext = torch.cat([hidden, hidden.new_ones(hidden.shape[0], 1)], dim=1)  # [a, 1]
        if edge_weight is not None:
            alpha = alpha * edge_weight.unsqueeze(-1)
            hidden_ext = hidden_ext * edge_weight.unsqueeze(-1)
        if scalars_only:  # alpha^0 h_j^0 and [a, 1] Y^0, (E, c + hidden + 1): one neighbour sum
            h_src0 = gather_rows(h[:, 0, :], sender) if h_src is None else h_src[:, 0, :]
            edge_terms = torch.cat([alpha * h_src0, hidden_ext * Y[:, :1]], dim=1)
            return sum_rows(edge_terms, receiver, num_nodes)
        if kernels is not None:
            alpha_sums = fused.degree_scatter(
                alpha.view(-1, L + 1, c), h, sender, receiver, layout.degree_start, num_nodes
            )
            T = fused.outer_scatter(Y, hidden_ext, receiver, num_nodes)
            return torch.cat([alpha_sums, T], dim=-1)
        alpha_sums = sum_rows(
            layout.per_degree_channels_last(alpha.view(-1, L + 1, c)) * h_src, receiver, num_nodes
        )  # (N, M, c)
        T = sum_rows(Y.unsqueeze(-1) * hidden_ext.unsqueeze(1), receiver, num_nodes)  # (N, M, hidden + 1)
        return torch.cat([alpha_sums, T], dim=-1)

    def finish_sums(self, sums: torch.Tensor, scalars_only: bool = False) -> torch.Tensor:
        """``sum_j u alpha h_j + W_b T + b_b T_bias`` from :meth:`edge_sums`: ``(N, M, c)``
        (``(N, c)`` with ``scalars_only``)."""
        c, L = self.layout.channels, self.layout.lmax
        last = self.coefficients[-1]
        rows = self._alpha_rows(scalars_only) + self.output_rows.shape[0] // 2  # the beta rows
        w_beta = torch.cat(
            [last.weight.index_select(0, rows), last.bias.index_select(0, rows).unsqueeze(-1)], dim=1
        )  # (rows, hidden + 1)
        if scalars_only:
            return torch.addmm(sums[..., :c], sums[..., c:], w_beta.t())
        w_beta = w_beta.view(L + 1, c, -1).index_select(0, self.layout.degree_of_m)  # (M, c, hidden + 1)
        return sums[..., :c] + torch.einsum("nma,mca->nmc", sums[..., c:], w_beta)

    def _alpha_rows(self, scalars_only: bool) -> torch.Tensor:
        """Rows of the stored last layer that give ``alpha`` in ``(L+1, c)`` order (degree 0 only)."""
        # output_rows is (alpha, beta) in (L+1, c) order: degree 0 is the first c rows of each
        return self.output_rows[: self.layout.channels if scalars_only else self.output_rows.shape[0] // 2]

    def extra_repr(self) -> str:
        return f"{self.layout.irreps} x {self.layout.sh_irreps} -> {self.layout.irreps}"


class ScalarInteractionLayer(torch.nn.Module):
    r"""One message-passing layer built on :class:`ScalarInteraction`.

    ``m_i = (1/n_avg) sum_j u(r_ij) SI(N(h_j), Y_ij, N(h_i), phi_ij)``,
    ``h_i <- h_i + Gate(Linear(m_i))``,

    with ``N`` the identity (the SINet backbone) or, with ``pre_norm=True``,
    an :class:`~sinet_ase.ops.norm.EquivariantRMSNorm` of the node features (the N-body
    network: its inputs are unbounded, and Scalar Interaction is polynomial in its input,
    so without the norm the features grow layer after layer). The residual stream itself is
    never normalised.

    forward(h (N, c, M), edge_index (2, E), Y (E, M), phi (E, n_basis), u (E,),
    edge_chunk_size=None, num_receivers=None) -> (N, c, M); ``edge_index[0]`` receives,
    ``edge_index[1]`` sends. With ``edge_chunk_size``, the neighbour sum runs over chunks
    of edges whose activations are recomputed in the backward pass (see
    :func:`~sinet_ase.ops.chunking.edge_chunked_sum`): same result, memory bounded
    by the chunk instead of the edge count. With ``num_receivers = n``, only the first
    ``n`` nodes receive and the output is their ``n`` rows (a chunk of receivers with
    its halo, :func:`~sinet_ase.ops.chunking.layer_in_chunks`).
    """

    def __init__(
        self,
        layout: SphericalLayout,
        num_basis: int,
        hidden: int = 64,
        avg_num_neighbors: float = 1.0,
        pre_norm: bool = False,
    ):
        super().__init__()
        self.layout = layout
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.interaction = ScalarInteraction(layout, num_edge_scalars=num_basis, with_receiver=True, hidden=hidden)
        self.linear = o3.Linear(layout.irreps, layout.irreps)
        self.gate = ScalarGate(layout)
        # registered only when used, so that the state-dict keys of either kind stay as saved
        self.norm = EquivariantRMSNorm(layout) if pre_norm else None

    @property
    def pre_norm(self) -> bool:
        return self.norm is not None

    def _messages_input(self, h: torch.Tensor) -> torch.Tensor:
        """The features the messages read, channels-last ``(N, M, c)``: ``N(h)`` transposed
        (the node-level transpose is cheap next to the edge work it speeds up)."""
        if self.norm is not None:
            h = self.norm(h)
        return h.transpose(1, 2).contiguous()

    def forward(
        self, h, edge_index, Y, phi, u, edge_chunk_size: Optional[int] = None, num_receivers: Optional[int] = None
    ):
        n = h.shape[0] if num_receivers is None else num_receivers  # may be symbolic (export)
        aggregated = self.interaction(
            self._messages_input(h), edge_index, Y, phi, edge_weight=u, edge_chunk_size=edge_chunk_size, num_receivers=n
        )
        return h[:n] + self.gate(self._update(aggregated.transpose(1, 2)))

    def _update(self, aggregated):
        """``Linear(m / n_avg)`` of the summed messages ``(N, c, M)``."""
        aggregated = aggregated / self.avg_num_neighbors
        return self.layout.from_e3nn(self.linear(self.layout.to_e3nn(aggregated)))

    def forward_scalars(
        self, h, edge_index, Y, phi, u, edge_chunk_size: Optional[int] = None, num_receivers: Optional[int] = None
    ):
        """The new scalars ``h_i^0`` alone, ``(N, c)``: column 0 of :meth:`forward`.

        ``h_i^0 + silu(Linear(m_i)^0)`` needs only the degree-0 messages (the linear layer
        maps degree ``l`` to degree ``l``), so the edge work of ``l > 0`` messages and their
        sums is skipped (:class:`ScalarInteraction` with ``scalars_only``); the
        invariants that the coefficients read still come from every degree.
        """
        n = h.shape[0] if num_receivers is None else num_receivers  # may be symbolic (export)
        aggregated0 = self.interaction(
            self._messages_input(h),
            edge_index,
            Y,
            phi,
            edge_weight=u,
            scalars_only=True,
            edge_chunk_size=edge_chunk_size,
            num_receivers=n,
        )
        # zero l > 0 columns: o3.Linear has no path between degrees, so its degree-0 output is exact
        padded = torch.nn.functional.pad(aggregated0.unsqueeze(-1), (0, self.layout.num_m - 1))
        return h[:n, :, 0] + self.gate.scalars(self._update(padded))
