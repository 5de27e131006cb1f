"""Equivariant non-linearity: SiLU on scalars, sigmoid gates on ``l > 0``.

``h^{0,k} <- silu(h^{0,k})`` and ``h^{l,k} <- sigmoid(g^{l,k}) h^{l,k}`` for
``l > 0``, with the gates ``g = W h^0 + b`` computed from the invariant
channels (e3nn's Gate, with the gate scalars produced by a linear layer of the
scalars instead of being carried as extra channels). Scaling a type-``l``
vector by an invariant keeps it type-``l``, parity included.
"""

import torch

from .layout import SphericalLayout


class ScalarGate(torch.nn.Module):
    """``(N, c, M) -> (N, c, M)``."""

    def __init__(self, layout: SphericalLayout):
        super().__init__()
        self.layout = layout
        c, L = layout.channels, layout.lmax
        self.gates = torch.nn.Linear(c, c * L) if L > 0 else None
        # one-hot (L, M - 1): row l - 1 selects the 2l + 1 columns of degree l >= 1. A product
        # with it broadcasts the gates exactly; unlike index_select along the last axis, its
        # backward is a product too, not a scatter (which torch.compile cannot generate
        # multi-threaded on CPU, see neighbour_sum.py)
        gate_of_m = layout.degree_of_m[1:] - 1
        onehot = torch.nn.functional.one_hot(gate_of_m, max(L, 1)).t().to(torch.get_default_dtype())
        self.register_buffer("gate_onehot", onehot.contiguous(), persistent=False)

    def scalars(self, h: torch.Tensor) -> torch.Tensor:
        """The scalar channels of the output alone, ``silu(h^0)``: ``(N, c, M) -> (N, c)``."""
        return torch.nn.functional.silu(h[:, :, 0])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scalars = h[:, :, 0]
        out0 = self.scalars(h).unsqueeze(-1)
        if self.gates is None:
            return out0
        c, L = self.layout.channels, self.layout.lmax
        g = torch.sigmoid(self.gates(scalars)).view(-1, c, L) @ self.gate_onehot
        return torch.cat([out0, h[:, :, 1:] * g], dim=-1)
