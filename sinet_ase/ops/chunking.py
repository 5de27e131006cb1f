"""Neighbour sums over chunks of edges, for systems whose per-edge tensors do not fit in memory.

A message-passing layer keeps several ``(E, c, (L+1)^2)`` tensors for the
backward pass; at 100,000 atoms with 42 neighbours each and ``c = 64, L = 2``
one of them is ~10 GB. :func:`edge_chunked_sum` evaluates the layer's
neighbour sum on slices of the edge list under :func:`torch.utils.checkpoint`:
the forward pass keeps only each chunk's inputs (views of the whole-graph
tensors) and the backward pass recomputes the chunk's activations. The result
and its gradients are the same as without chunks (up to summation order);
peak memory is that of one chunk plus the node features.
"""

from typing import Callable, Optional, Sequence

import torch
from torch.utils.checkpoint import checkpoint


def edge_chunked_sum(aggregate: Callable[..., torch.Tensor], nodes: Sequence[torch.Tensor],
                     edge_index: torch.Tensor, edge_tensors: Sequence[Optional[torch.Tensor]],
                     chunk_size: Optional[int] = None) -> torch.Tensor:
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
        part = checkpoint(aggregate, *nodes, edge_index[:, start:stop],
                          *(None if t is None else t[start:stop] for t in edge_tensors), use_reentrant=False)
        total = part if total is None else total + part
    return total
