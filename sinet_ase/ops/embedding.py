"""Layer 0: the one scalar-by-harmonic tensor product that creates ``l > 0`` features.

Scalar Interaction recombines the type-``l`` fragments its inputs already
contain, so it cannot create a degree that is absent. The embedding creates
them once (paper, Sec. 5):

``h_i^{l,k} = delta_{l0} z_i^k + (1/n_avg) sum_j u(r_ij) R_k^l(r_ij) z_j^k Y^l(r_ij)``

with ``z = Embed(Z)`` (``c`` channels), ``R = MLP(phi(r))`` giving ``c (L+1)``
radial weights and ``u`` the envelope. Its cost is that of a linear layer:
a product of a scalar with a harmonic, no Clebsch-Gordan coefficients.
"""

from typing import Optional

import torch

from .chunking import edge_chunked_sum

from .layout import SphericalLayout
from .mlp import mlp
from .neighbour_sum import gather_rows, sum_rows


class SphericalEmbedding(torch.nn.Module):
    """Species embedding lifted to all degrees.

    forward(species (N,), edge_index (2, E), Y (E, M), phi (E, n_basis), u (E,),
    edge_chunk_size=None) -> h (N, c, M). ``edge_index[0]`` is the receiving atom ``i``, ``edge_index[1]``
    the neighbour ``j``.
    """

    def __init__(self, num_species: int, layout: SphericalLayout, num_basis: int,
                 radial_hidden: int = 64, avg_num_neighbors: float = 1.0):
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

    def aggregate(self, z, edge_index, Y, phi, u):
        """``sum_j u(r_ij) R^l(r_ij) z_j Y^l_ij`` for every node, channels last:
        ``z (N, c)`` -> ``(N, M, c)``."""
        c, L = self.layout.channels, self.layout.lmax
        receiver, sender = edge_index[0], edge_index[1]
        last = self.radial[-1]
        radial = torch.nn.functional.linear(self.radial[:-1](phi), last.weight.index_select(0, self.radial_rows),
                                            last.bias.index_select(0, self.radial_rows))
        weights = radial.view(-1, L + 1, c) * (u.view(-1, 1, 1) * gather_rows(z, sender).unsqueeze(1))
        # (E, L+1, c) -> one row per spherical column (E, M, c), times Y^l_m: channels
        # innermost, so both steps vectorise over c
        messages = self.layout.per_degree_channels_last(weights) * Y.unsqueeze(-1)
        return sum_rows(messages, receiver, z.shape[0])

    def forward(self, species, edge_index, Y, phi, u, edge_chunk_size: Optional[int] = None):
        z = self.species_embedding(species)  # (N, c)
        h = edge_chunked_sum(self.aggregate, z, edge_index, (Y, phi, u), edge_chunk_size)
        h = h.transpose(1, 2).contiguous()  # (N, c, M)
        h = h / self.avg_num_neighbors
        h[:, :, 0] = h[:, :, 0] + z
        return h
