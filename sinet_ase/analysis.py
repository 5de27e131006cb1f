r"""Completeness of the node-feature basis (paper Sec. 5.2, Figure 3c/3d).

Scalar Interaction builds a type-``l`` output from the type-``l`` fragments its
inputs already hold, so it can only produce directions of ``V^l`` that those
fragments span. For a node ``i`` and degree ``l`` collect its ``c`` channels as
columns, ``H_i^l = (h_i^{l,1}, ..., h_i^{l,c}) \in R^{(2l+1) x c}``, and measure

``r_i(l) = rank(H_i^l) / (2l + 1)``,

the fraction of ``V^l`` the channels span (1 = a complete basis). The paper
reports its mean and spread over atoms for the features entering each layer.

Numerical rank: the number of singular values of ``H_i^l`` above
``tol * s_ref(i)``, where ``s_ref(i)`` is the largest singular value of node
``i`` over *all* its degrees. Relative to the node, not to each ``H_i^l`` alone:
a degree whose features vanish by symmetry (e.g. every ``l = 1, 2, 3`` block of
an atom in perfect fcc copper) holds only round-off, which a per-matrix
relative tolerance would count as full rank. A node with only zero features
has rank 0. Singular values are computed in float64 whatever the model's dtype.

The default ``tol`` is 1e-5. In float32 the round-off of symmetry-forbidden
blocks measured 1e-10 to 1e-7 of ``s_ref`` (random-weight models, fcc Cu,
ethanol, up to 3 layers), while genuine but small singular values (a cell
rattled by 0.05 Å) went down to ~1e-6; a trained model's ``l > 0`` features are
not bound to the scale of its scalars. The rank of nearly degenerate features
depends on ``tol`` by nature: check a result at a few values (the
``benchmarks/completeness.py`` table does).
"""

from typing import Dict, Tuple

import numpy as np
import torch

from .model import edge_vectors, graph_batch

#: default relative singular-value tolerance of the numerical rank (see the module docstring)
DEFAULT_TOL = 1e-5


def rank_ratio(h: torch.Tensor, tol: float = DEFAULT_TOL) -> torch.Tensor:
    """``r_i(l) = rank(H_i^l) / (2l+1)`` for every node and degree.

    Args:
        h: node features ``(N, c, (L+1)^2)`` in SINet's layout (use
            :meth:`SphericalLayout.from_e3nn` for e3nn-layout features).
        tol: singular values at most ``tol`` times the node's largest singular
            value (over all degrees) count as zero.

    Returns:
        ``(N, L+1)`` float64 tensor of ratios in ``[0, 1]``.
    """
    if h.dim() != 3:
        raise ValueError(f"expected node features (N, c, (L+1)^2), got shape {tuple(h.shape)}")
    num_m = h.shape[-1]
    lmax = int(round(num_m**0.5)) - 1
    if (lmax + 1) ** 2 != num_m:
        raise ValueError(f"the last axis must have (L+1)^2 entries, got {num_m}")
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    h = h.detach().to(torch.float64)
    singular = [torch.linalg.svdvals(h[:, :, l * l : (l + 1) ** 2].transpose(1, 2)) for l in range(lmax + 1)]
    reference = torch.stack([s[:, 0] for s in singular], dim=-1).amax(dim=-1, keepdim=True)  # (N, 1)
    ranks = torch.stack([(s > tol * reference).sum(dim=-1) for s in singular], dim=-1)  # (N, L+1)
    dims = 2.0 * torch.arange(lmax + 1, dtype=torch.float64, device=h.device) + 1.0
    return ranks.to(torch.float64) / dims


def _capture_layer_features(layers, last, run) -> Dict[int, torch.Tensor]:
    """Run ``run()`` with hooks that keep the input of every module in ``layers`` and the
    output of ``last``: ``{t: input of layers[t]}`` and ``{len(layers): output of last}``."""
    captured: Dict[int, torch.Tensor] = {}

    def keep_input(t):
        def hook(module, args, kwargs):
            captured[t] = (args[0] if args else kwargs["h"]).detach()

        return hook

    def keep_output(t):
        def hook(module, args, output):
            captured[t] = output.detach()

        return hook

    handles = [layer.register_forward_pre_hook(keep_input(t), with_kwargs=True) for t, layer in enumerate(layers)]
    handles.append(last.register_forward_hook(keep_output(len(layers))))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return dict(sorted(captured.items()))


def features_by_layer(model: torch.nn.Module, graph) -> Dict[int, torch.Tensor]:
    """Node features entering every Scalar Interaction layer, captured with hooks.

    ``model`` is a :class:`~sinet_ase.SINet` or a :class:`~sinet_ase.SINetBackbone`.
    Returns ``{t: (N, c, (L+1)^2)}`` for ``t = 0..T``: ``t < T`` is the input of
    ``backbone.layers[t]`` (``t = 0``: the embedding output), ``t = T`` the
    backbone's output (what the heads read). The model is not changed; no
    gradients are computed.
    """
    backbone = getattr(model, "backbone", model)
    layers = list(backbone.layers)
    dtype = next(backbone.parameters()).dtype
    device = next(backbone.parameters()).device
    graph = graph.to(device)

    def run():
        positions = graph.pos.to(torch.float64)
        cell = graph.cell.to(torch.float64)
        vectors = edge_vectors(graph, positions, cell, graph_batch(graph)).to(dtype)
        backbone(graph, vectors)

    return _capture_layer_features(layers, layers[-1] if layers else backbone.embedding, run)


def nbody_features_by_layer(
    model: torch.nn.Module, x: torch.Tensor, v: torch.Tensor, q: torch.Tensor
) -> Dict[int, torch.Tensor]:
    """:func:`features_by_layer` for a :class:`~sinet_ase.nbody.NBodySINet`.

    ``x, v (B, n, 3)``, ``q (B, n)``; returns ``{t: (B n, c, (L+1)^2)}`` with ``t = 0``
    the embedding (charges, ``|v|``, the harmonics of ``x - mean(x)`` and ``v``, and the
    neighbour sum of the edge harmonics), ``t < T`` the input of layer ``t + 1`` and
    ``t = T`` the features the vector head reads.
    """
    layers = list(model.layers)
    if not layers:
        raise ValueError("the model has no interaction layers to look into")
    device = next(model.parameters()).device
    return _capture_layer_features(layers, layers[-1], lambda: model.features(x.to(device), v.to(device), q.to(device)))


def completeness(model: torch.nn.Module, graph, tol: float = DEFAULT_TOL) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
    """Mean and standard deviation over atoms of ``r(l)`` for the features entering each layer.

    Args:
        model: a :class:`~sinet_ase.SINet` (or its backbone), any dtype and device.
        graph: from :func:`~sinet_ase.atoms_to_graph` or :func:`~sinet_ase.batch_graphs`
            (all atoms of all structures are pooled).
        tol: relative singular-value tolerance of the numerical rank (module docstring).

    Returns:
        ``{t: (mean (L+1,), std (L+1,))}`` as float64 numpy arrays, with ``t`` as in
        :func:`features_by_layer` (0 = embedding output, ``T`` = backbone output).
    """
    out = {}
    for t, h in features_by_layer(model, graph).items():
        r = rank_ratio(h, tol)
        out[t] = (r.mean(dim=0).cpu().numpy(), r.std(dim=0, unbiased=False).cpu().numpy())
    return out
