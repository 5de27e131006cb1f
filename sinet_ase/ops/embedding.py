"""Layer 0: the one scalar-by-harmonic tensor product that creates ``l > 0`` features.

Scalar Interaction recombines the type-``l`` fragments its inputs already
contain, so it cannot create a degree that is absent. The embedding creates
them once (paper, Sec. 5):

``h_i^{l,k} = delta_{l0} z_i^k + (1/n_avg) sum_j u(r_ij) R_k^l(r_ij) z_j^k Y^l(r_ij)``

with ``z = Embed(Z)`` (``c`` channels), ``R = MLP(phi(r))`` giving ``c (L+1)``
radial weights and ``u`` the envelope. Its cost is that of a linear layer:
a product of a scalar with a harmonic, no Clebsch-Gordan coefficients.
"""

import functools
from typing import Optional

import torch

from . import fused
from .chunking import edge_chunked_sum
from .layout import SphericalLayout
from .mlp import mlp
from .neighbour_sum import gather_rows, sum_rows


class SphericalEmbedding(torch.nn.Module):
    """Species embedding lifted to all degrees.

    forward(species (N,), edge_index (2, E), Y (E, M), phi (E, n_basis), u (E,),
    edge_chunk_size=None, num_receivers=None) -> h (N, c, M). ``edge_index[0]`` is the receiving
    atom ``i``, ``edge_index[1]`` the neighbour ``j``. With ``num_receivers = n``, only the first
    ``n`` nodes receive (every edge points into one of them) and the output is their rows,
    ``(n, c, M)``: a chunk of receivers with its halo (:mod:`sinet_ase.ops.chunking`).

    Two forms of the same sum (:attr:`fold_species`, chosen at construction):

    * per edge: ``R_ij = W_2 a_ij + b_2`` (``a``: the radial MLP's hidden activations) for
      every edge, times ``u_ij z_j`` and ``Y_ij``, summed;
    * species-folded: ``R`` is linear in ``[a, 1]`` and ``z_j`` depends only on the species
      ``s_j``, so ``sum_j u R_ij^{l,k} z_j^k Y_ij^m = sum_s z_s^k sum_a W_2[lk, a] T_{i,s}[m, a]``
      with ``T_{i,s} = sum_{j: s_j = s} u_ij [a_ij, 1] Y_ij^m``, an ``(N, S, M, hidden + 1)`` node
      tensor: ``W_2``'s product moves from ``E`` edges to ``N S`` (node, species) pairs.
      It is used when ``S (L+1) <= avg_num_neighbors``, where that is the cheaper side.
    """

    #: the species-folded sum through the fused kernels where they are built (as ScalarInteraction)
    use_fused = False

    def __init__(
        self,
        num_species: int,
        layout: SphericalLayout,
        num_basis: int,
        radial_hidden: int = 64,
        avg_num_neighbors: float = 1.0,
    ):
        super().__init__()
        self.layout = layout
        self.avg_num_neighbors = float(avg_num_neighbors)
        c, L = layout.channels, layout.lmax
        self.species_embedding = torch.nn.Embedding(num_species, c)
        self.radial = mlp([num_basis, radial_hidden, c * (L + 1)])
        # the stored last layer writes R in (c, L+1) order; reading its rows in (L+1, c) order
        # gives (E, L+1, c) weights directly, channels innermost, without a transpose per edge
        by_degree = torch.arange(c * (L + 1)).view(c, L + 1).t().reshape(-1)
        self.register_buffer("radial_rows", by_degree, persistent=False)
        # per edge W_2 costs (L+1) c hidden products; folded, N S M (hidden+1) c at the nodes
        self.fold_species = num_species * (L + 1) <= self.avg_num_neighbors

    def _radial_last_layer(self):
        """``W_2`` and ``b_2`` with rows in ``(L+1, c)`` order."""
        last = self.radial[-1]
        return last.weight.index_select(0, self.radial_rows), last.bias.index_select(0, self.radial_rows)

    def _aggregate_per_edge(self, z, edge_index, Y, phi, u, num_receivers=None):
        """``sum_j u(r_ij) R^l(r_ij) z_j Y^l_ij`` for every receiver, channels last, with ``R`` per edge:
        ``z (N, c)`` -> ``(num_receivers or N, M, c)``."""
        c, L = self.layout.channels, self.layout.lmax
        receiver, sender = edge_index[0], edge_index[1]
        radial = torch.nn.functional.linear(self.radial[:-1](phi), *self._radial_last_layer())
        weights = radial.view(-1, L + 1, c) * (u.view(-1, 1, 1) * gather_rows(z, sender).unsqueeze(1))
        # (E, L+1, c) -> one row per spherical column (E, M, c), times Y^l_m: channels
        # innermost, so both steps vectorise over c
        messages = self.layout.per_degree_channels_last(weights) * Y.unsqueeze(-1)
        return sum_rows(messages, receiver, z.shape[0] if num_receivers is None else num_receivers)

    def _radial_sums(self, species, edge_index, Y, phi, u, num_receivers=None):
        """``T_{i,s} = sum_{j: s_j = s} u_ij [a_ij, 1] Y_ij^m``: ``(n S, M, hidden + 1)`` for the
        ``n = num_receivers or N`` receivers, linear in the set of edges (the species-folded
        form's edge step)."""
        receiver, sender = edge_index[0], edge_index[1]
        hidden = self.radial[:-1](phi)
        hidden_ext = torch.cat([hidden, hidden.new_ones(hidden.shape[0], 1)], dim=1) * u.unsqueeze(-1)
        S = self.species_embedding.num_embeddings
        rows = receiver * S + species.index_select(0, sender)  # (node i, species of j)
        n = species.shape[0] if num_receivers is None else num_receivers
        # the same sum in one pass where the fused kernels are built and switched on
        if fused.kernels_for(hidden_ext, self.use_fused) is not None:
            return fused.outer_scatter(Y, hidden_ext, rows, n * S)
        return sum_rows(Y.unsqueeze(-1) * hidden_ext.unsqueeze(1), rows, n * S)

    def _from_radial_sums(self, T, num_nodes):
        """``sum_s z_s^k sum_a W_2[lk, a] T_{i,s}[m, a]``: ``(N S, M, hidden + 1)`` -> ``(N, M, c)``."""
        c, L, M = self.layout.channels, self.layout.lmax, self.layout.num_m
        S = self.species_embedding.num_embeddings
        weight, bias = self._radial_last_layer()
        w_ext = torch.cat([weight, bias.unsqueeze(-1)], dim=1).view(L + 1, c, -1)
        w_ext = w_ext.index_select(0, self.layout.degree_of_m)  # (M, c, hidden + 1)
        radial_sums = torch.einsum("nma,mca->nmc", T, w_ext).view(num_nodes, S, M, c)
        return torch.einsum("nsmc,sc->nmc", radial_sums, self.species_embedding.weight)

    def forward(
        self, species, edge_index, Y, phi, u, edge_chunk_size: Optional[int] = None, num_receivers: Optional[int] = None
    ):
        z = self.species_embedding(species)  # (N, c)
        n = species.shape[0] if num_receivers is None else num_receivers  # may be symbolic (export)
        if self.fold_species:  # only the edge step runs per chunk
            T = edge_chunked_sum(
                functools.partial(self._radial_sums, num_receivers=n),
                (species,),
                edge_index,
                (Y, phi, u),
                edge_chunk_size,
            )
            h = self._from_radial_sums(T, n)
        else:
            h = edge_chunked_sum(
                functools.partial(self._aggregate_per_edge, num_receivers=n),
                (z,),
                edge_index,
                (Y, phi, u),
                edge_chunk_size,
            )
        h = h.transpose(1, 2).contiguous()  # (n, c, M)
        h = h / self.avg_num_neighbors
        h[:, :, 0] = h[:, :, 0] + z[:n]
        return h
