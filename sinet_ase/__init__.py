"""sinet-ase: the E(3)-equivariant Scalar Interaction Network as an ASE calculator."""

__version__ = "0.1.0"
