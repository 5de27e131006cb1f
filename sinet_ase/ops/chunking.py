r"""Layers evaluated on pieces of a large system, so that memory stays bounded.

A message-passing layer on ``E`` edges keeps ``(E, c, (L+1)^2)``-sized tensors
for the backward pass: tens of kilobytes per edge, gigabytes for 10^5 atoms.
Two ways to bound that:

:func:`edge_chunked_sum` (used when gradients of the weights are needed, as in
training) evaluates one neighbour sum on slices of the edge list under
:func:`torch.utils.checkpoint`: the forward pass keeps only each chunk's inputs
and the backward pass recomputes the chunk's activations. Each chunk still
writes and differentiates whole-system node tensors, so its cost grows with
the number of atoms times the number of chunks.

:class:`ReceiverChunks` and :func:`layer_in_chunks` (inference: energies,
forces, stress) evaluate a whole *layer* one chunk of receiving atoms at a
time. A layer's output for atom ``i`` depends on ``i`` and its neighbours
only, so for a chunk ``R`` of receivers the layer runs on the small graph of
``R`` plus its one-hop halo (the senders of the edges into ``R``) and keeps
the rows of ``R``:

``h'_R = layer(h_{R ∪ halo(R)}, edges into R)[:|R|]``

which is exact (same numbers up to summation order). The forward pass stores
only the layer's whole-system input and output ``(N, c, M)``; the backward
pass recomputes each chunk and scatters its gradients, chunk-sized, into the
whole-system gradients. Peak memory: a few ``(N, c, M)`` tensors plus one
chunk; time: one extra forward pass plus the layer's node work on each halo.
Receivers are taken in a space-filling (Morton) order of their positions, so
that a chunk is a compact blob and its halo small.
"""

from typing import Callable, List, Optional, Sequence

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint


def edge_chunked_sum(
    aggregate: Callable[..., torch.Tensor],
    nodes: Sequence[torch.Tensor],
    edge_index: torch.Tensor,
    edge_tensors: Sequence[Optional[torch.Tensor]],
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """``aggregate(*nodes, edge_index, *edge_tensors)`` summed over chunks of ``chunk_size`` edges.

    Args:
        aggregate: ``(*nodes, edge_index (2, E'), *edge_tensors sliced to E') -> (N, ...)``,
            linear in its set of edges (a sum of per-edge terms).
        nodes: node tensors passed whole to every chunk (compute what depends on nodes
            alone before the call, so that it is not repeated per chunk).
        edge_index: ``(2, E)``.
        edge_tensors: per-edge tensors with the edge axis first (``None`` passes through).
        chunk_size: edges per chunk; ``None`` or ``>= E`` calls ``aggregate`` once, unchunked.
    """
    num_edges = edge_index.shape[1]
    if chunk_size is None or num_edges <= chunk_size:
        return aggregate(*nodes, edge_index, *edge_tensors)
    if chunk_size < 1:
        raise ValueError(f"edge_chunk_size must be a positive number of edges, got {chunk_size}")
    total = None
    for start in range(0, num_edges, chunk_size):
        stop = min(start + chunk_size, num_edges)
        part = checkpoint(
            aggregate,
            *nodes,
            edge_index[:, start:stop],
            *(None if t is None else t[start:stop] for t in edge_tensors),
            use_reentrant=False,
        )
        total = part if total is None else total + part
    return total


def morton_order(positions: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """Indices that sort points ``(N, 3)`` along a Z-order (Morton) curve: ``(N,)`` long.

    Coordinates are scaled to ``2^bits`` cells per axis of the bounding box and their bits
    interleaved; points close on the curve are close in space.
    """
    x = positions.detach().to(torch.float64)
    low, high = x.min(0).values, x.max(0).values
    cells = ((x - low) / (high - low).clamp_min(1e-12) * (2**bits - 1)).round().long()
    key = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for bit in range(bits):
        for axis in range(3):
            key |= ((cells[:, axis] >> bit) & 1) << (3 * bit + axis)
    return torch.argsort(key, stable=True)


class ReceiverChunks:
    """A partition of the atoms into chunks of receivers, with each chunk's one-hop halo.

    Built once per structure (:meth:`build`) and shared by every layer. Edges are
    regrouped chunk by chunk: per-edge tensors given to :func:`layer_in_chunks` must be
    in that order, ``t.index_select(0, chunks.edge_order)``.

    Attributes:
        num_nodes: ``N``.
        edge_order: ``(E,)`` long, the edges grouped by the chunk of their receiver.
        chunks: one :class:`ReceiverChunk` per chunk.
    """

    def __init__(self, num_nodes: int, edge_order: torch.Tensor, chunks: List["ReceiverChunk"]):
        self.num_nodes = int(num_nodes)
        self.edge_order = edge_order
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    @classmethod
    def build(
        cls, edge_index: torch.Tensor, num_nodes: int, chunk_size: int, positions: Optional[torch.Tensor] = None
    ) -> "ReceiverChunks":
        """Chunks of consecutive receivers (in Morton order of ``positions`` when given, else
        in index order) holding about ``chunk_size`` edges each (at least one receiver, so
        a chunk exceeds ``chunk_size`` by less than one receiver's edges)."""
        if chunk_size < 1:
            raise ValueError(f"edge_chunk_size must be a positive number of edges, got {chunk_size}")
        device = edge_index.device
        receiver, sender = edge_index[0], edge_index[1]
        order = morton_order(positions) if positions is not None else torch.arange(num_nodes, device=device)
        degree = torch.bincount(receiver, minlength=num_nodes).index_select(0, order)
        first_edge = torch.cumsum(degree, 0) - degree  # edges before each receiver, in order
        chunk_in_order = torch.div(first_edge, chunk_size, rounding_mode="floor")
        # renumber the chunks 0, 1, ... (empty numbers are skipped when receivers have many edges)
        chunk_in_order = torch.unique_consecutive(chunk_in_order, return_inverse=True)[1]
        chunk_of_node = torch.empty_like(chunk_in_order).scatter_(0, order, chunk_in_order)
        edge_chunk = chunk_of_node.index_select(0, receiver)
        edge_order = torch.argsort(edge_chunk, stable=True)
        num_chunks = int(chunk_in_order[-1]) + 1 if num_nodes else 0
        edges_per_chunk = torch.bincount(edge_chunk, minlength=num_chunks).tolist()
        nodes_per_chunk = torch.bincount(chunk_in_order, minlength=num_chunks).tolist()
        local = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
        chunks, edge_start, node_start = [], 0, 0
        for k in range(num_chunks):
            receivers = order[node_start : node_start + nodes_per_chunk[k]]
            edges = edge_order[edge_start : edge_start + edges_per_chunk[k]]
            chunk_receivers, chunk_senders = receiver.index_select(0, edges), sender.index_select(0, edges)
            local[receivers] = torch.arange(len(receivers), device=device)
            halo = torch.unique(chunk_senders[local.index_select(0, chunk_senders) < 0])
            local[halo] = torch.arange(len(receivers), len(receivers) + len(halo), device=device)
            local_edges = torch.stack([local.index_select(0, chunk_receivers), local.index_select(0, chunk_senders)])
            chunks.append(
                ReceiverChunk(
                    torch.cat([receivers, halo]),
                    len(receivers),
                    local_edges,
                    edge_start,
                    edge_start + edges_per_chunk[k],
                )
            )
            local[receivers] = -1
            local[halo] = -1
            edge_start += edges_per_chunk[k]
            node_start += nodes_per_chunk[k]
        return cls(num_nodes, edge_order, chunks)


class ReceiverChunk:
    """One chunk: ``nodes`` (receivers first, then the halo), ``num_receivers``, the chunk's
    ``edge_index`` in local node numbers ``(2, e)``, and its edges ``start:stop`` in
    :attr:`ReceiverChunks.edge_order`."""

    __slots__ = ("nodes", "num_receivers", "edge_index", "start", "stop")

    def __init__(self, nodes, num_receivers, edge_index, start, stop):
        self.nodes, self.num_receivers, self.edge_index = nodes, int(num_receivers), edge_index
        self.start, self.stop = int(start), int(stop)

    @property
    def receivers(self) -> torch.Tensor:
        return self.nodes[: self.num_receivers]


def layer_in_chunks(
    layer: Callable[..., torch.Tensor],
    chunks: ReceiverChunks,
    node_inputs: Sequence[torch.Tensor],
    edge_inputs: Sequence[torch.Tensor],
) -> torch.Tensor:
    """A layer's output ``(N, ...)`` computed one chunk of receivers at a time (module docstring).

    Args:
        layer: ``layer(num_receivers, edge_index (2, e), *node_inputs (n, ...), *edge_inputs (e, ...))
            -> (num_receivers, ...)``: the rows of the first ``num_receivers`` nodes of a small
            graph whose edges all point into them. It must not depend on tensors that need
            gradients other than its inputs (frozen weights).
        chunks: the partition (:meth:`ReceiverChunks.build`).
        node_inputs: ``(N, ...)`` tensors (floating point ones may need gradients; integer
            ones such as species pass through).
        edge_inputs: ``(E, ...)`` tensors in ``chunks.edge_order``.

    Differentiable once (forces, stress); a second derivative raises.
    """
    return _LayerInChunks.apply(layer, chunks, len(node_inputs), *node_inputs, *edge_inputs)


def _chunk_inputs(chunk: ReceiverChunk, nodes, edges, needs_grad=None):
    """The chunk's node rows and edge slices, as new leaves that need gradients when asked."""
    needs_grad = needs_grad or [False] * (len(nodes) + len(edges))
    inputs = [x.index_select(0, chunk.nodes) for x in nodes] + [t[chunk.start : chunk.stop] for t in edges]
    return [x.detach().requires_grad_(True) if need else x for x, need in zip(inputs, needs_grad)]


class _LayerInChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, layer, chunks, num_node_inputs, *inputs):
        nodes, edges = inputs[:num_node_inputs], inputs[num_node_inputs:]
        out = None
        for chunk in chunks.chunks:
            rows = layer(chunk.num_receivers, chunk.edge_index, *_chunk_inputs(chunk, nodes, edges))
            if out is None:
                out = rows.new_empty((chunks.num_nodes,) + tuple(rows.shape[1:]))
            out.index_copy_(0, chunk.receivers, rows)
        ctx.layer, ctx.chunks, ctx.num_node_inputs = layer, chunks, num_node_inputs
        ctx.save_for_backward(*inputs)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        inputs = ctx.saved_tensors
        nodes, edges = inputs[: ctx.num_node_inputs], inputs[ctx.num_node_inputs :]
        needs_grad = list(ctx.needs_input_grad[3:])
        grads = [torch.zeros_like(x) if need else None for x, need in zip(inputs, needs_grad)]
        for chunk in ctx.chunks.chunks:
            with torch.enable_grad():
                leaves = _chunk_inputs(chunk, nodes, edges, needs_grad)
                rows = ctx.layer(chunk.num_receivers, chunk.edge_index, *leaves)
                wanted = [leaf for leaf, need in zip(leaves, needs_grad) if need]
                chunk_grads = iter(
                    torch.autograd.grad(rows, wanted, grad_out.index_select(0, chunk.receivers), allow_unused=True)
                )
            for k, need in enumerate(needs_grad):
                if not need:
                    continue
                g = next(chunk_grads)
                if g is None:
                    continue
                if k < ctx.num_node_inputs:
                    grads[k].index_add_(0, chunk.nodes, g)
                else:
                    grads[k][chunk.start : chunk.stop] += g
        return (None, None, None, *grads)
