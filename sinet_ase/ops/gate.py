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
        # degree l of each column m >= 1, shifted to index the L gate blocks
        self.register_buffer("gate_of_m", layout.degree_of_m[1:] - 1, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scalars = h[:, :, 0]
        out0 = torch.nn.functional.silu(scalars).unsqueeze(-1)
        if self.gates is None:
            return out0
        c, L = self.layout.channels, self.layout.lmax
        g = torch.sigmoid(self.gates(scalars)).view(-1, c, L).index_select(-1, self.gate_of_m)
        return torch.cat([out0, h[:, :, 1:] * g], dim=-1)
