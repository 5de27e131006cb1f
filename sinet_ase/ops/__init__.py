"""Equivariant building blocks: radial basis, embedding, Scalar Interaction, gate,
equivariant layer norm, SiFormer (scalar-interaction transformer) layer.

Features travel in the *channel-major spherical layout* ``(n, c, (L+1)^2)``:
``c`` channels of every degree ``l = 0..L``, the last axis running over
``(l, m)`` in e3nn's order (``l^2 + l + m``). :func:`to_e3nn` and
:func:`from_e3nn` convert to e3nn's ``c x 0e + c x 1o + ...`` layout.
"""

from .layout import SphericalLayout
from .radial import BesselBasis, PolynomialEnvelope, RadialEmbedding
from .embedding import SphericalEmbedding
from .scalar_interaction import ScalarInteraction, ScalarInteractionLayer
from .gate import ScalarGate
from .norm import EquivariantLayerNorm, EquivariantRMSNorm
from .siformer import SiFormerLayer, cutoff_softmax

__all__ = [
    "SphericalLayout",
    "BesselBasis",
    "PolynomialEnvelope",
    "RadialEmbedding",
    "SphericalEmbedding",
    "ScalarInteraction",
    "ScalarInteractionLayer",
    "ScalarGate",
    "EquivariantLayerNorm",
    "EquivariantRMSNorm",
    "SiFormerLayer",
    "cutoff_softmax",
]
