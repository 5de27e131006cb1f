"""Test helpers shipped with the package, so every head and model inherits them.

``random_orthogonal(parity)`` draws a rotation (times -1 for an improper one);
``rotate_features`` applies the Wigner matrices ``D^l`` of a layout to
``(n, c, M)`` features; ``small_model`` builds a quick model for tests.
"""

import contextlib

import torch
from e3nn import o3

from .ops import SphericalLayout


@contextlib.contextmanager
def default_dtype(dtype):
    """Temporarily set torch's default dtype (e3nn builds Wigner matrices from
    constants in the default dtype, so float64 checks need it), then restore it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def wigner_D(irreps, R: torch.Tensor) -> torch.Tensor:
    """Block-diagonal ``D(R)`` of ``irreps``, computed in float64."""
    with default_dtype(torch.float64):
        return irreps.D_from_matrix(R.detach().to(torch.float64))


def random_orthogonal(parity: bool, dtype=torch.float64) -> torch.Tensor:
    """A random rotation matrix, multiplied by -1 when ``parity`` (an improper rotation)."""
    with default_dtype(torch.float64):
        R = o3.rand_matrix()
    R = R.to(dtype)
    return -R if parity else R


def rotate_features(layout: SphericalLayout, h: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``h^l -> D^l(R) h^l`` for every degree, including parity ``(-1)^l`` when det R = -1."""
    D = wigner_D(layout.irreps, R).to(h.dtype)
    return layout.from_e3nn(layout.to_e3nn(h) @ D.T)


def rotate_harmonics(layout: SphericalLayout, Y: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``Y^l -> D^l(R) Y^l`` for spherical harmonics ``(E, M)``."""
    return Y @ wigner_D(layout.sh_irreps, R).to(Y.dtype).T


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max(max|b|, tiny)`` in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
