"""Radial basis with a smooth cutoff.

``phi_n(r) = sqrt(2/r_c) sin(n pi r / r_c) / r * u(r)``, ``n = 1..n_basis``
(DimeNet's Bessel basis), times the polynomial envelope

``u(r) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r/r_c``,

which is 1 at ``r = 0`` and goes to zero at ``r_c`` with its first and second
derivatives (``p = 6`` by default), so energies and forces stay continuous
as atoms cross the cutoff.
"""

import math

import torch


class PolynomialEnvelope(torch.nn.Module):
    """``u(r)`` above; zero for ``r >= r_c``. ``(E,) -> (E,)``."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        if p < 2:
            raise ValueError(f"envelope exponent p must be >= 2, got {p}")
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.cutoff
        u = 1.0 - (p + 1) * (p + 2) / 2 * x.pow(p) + p * (p + 2) * x.pow(p + 1) - p * (p + 1) / 2 * x.pow(p + 2)
        return torch.where(x < 1.0, u, torch.zeros_like(u))


class BesselBasis(torch.nn.Module):
    """``sqrt(2/r_c) sin(n pi r / r_c) / r`` for ``n = 1..num_basis``: ``(E,) -> (E, num_basis)``."""

    def __init__(self, cutoff: float, num_basis: int = 8):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        self.register_buffer(
            "frequencies", math.pi / self.cutoff * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        )

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.frequencies * r) / r


class RadialEmbedding(torch.nn.Module):
    """Bessel basis times envelope, and the envelope itself.

    forward: ``r (E,) -> (phi (E, num_basis), u (E,))``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope_p: int = 6):
        super().__init__()
        self.basis = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialEnvelope(cutoff, envelope_p)

    def forward(self, r: torch.Tensor):
        u = self.envelope(r)
        return self.basis(r) * u.unsqueeze(-1), u
