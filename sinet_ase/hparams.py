"""The hyperparameters of the SINet backbone: names, types and defaults, written once.

Every model built on :class:`~sinet_ase.model.SINetBackbone` (the energy model
:class:`~sinet_ase.SINet`, the QM9 heads) takes these keywords and stores them in its
model file's ``config``. Their defaults are the fields of :class:`BackboneConfig`;
the constructors refer to :data:`DEFAULTS` instead of repeating the numbers, so one
edit here changes every model, and a model file always records the values it was
built with (a later change of a default never changes an existing file's model).

===================  =======  ==========================================================
key                  type     meaning
===================  =======  ==========================================================
cutoff               float    neighbour cutoff radius ``r_c`` (Å)
lmax                 int      highest degree ``L`` of the node features
channels             int      channels ``c`` of every degree
num_layers           int      Scalar Interaction layers (or SiFormer blocks) ``T``
num_radial           int      Bessel functions of the radial basis
radial_hidden        int      width of the embedding's radial MLP
mlp_hidden           int      width of the coefficient (or attention) MLPs
envelope_p           int      exponent of the polynomial cutoff envelope
avg_num_neighbors    float    divides neighbour sums (trainers set it from the data)
backbone             str      ``"sinet"`` (Scalar Interaction) or ``"siformer"``
num_heads            int      attention heads of a SiFormer backbone (divides ``channels``)
===================  =======  ==========================================================

The N-body network (:class:`~sinet_ase.nbody.model.NBodySINet`) has no cutoff graph and
its own keywords; its defaults are those of its constructor.
"""

import dataclasses
from typing import Any, Dict, Tuple


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Backbone hyperparameters (module table); values are cast to the field types,
    so ``BackboneConfig(channels=32.0).channels == 32``. Checks of the values
    (positive cutoff, known backbone, ...) are the backbone's."""

    cutoff: float = 5.0
    lmax: int = 2
    channels: int = 64
    num_layers: int = 2
    num_radial: int = 8
    radial_hidden: int = 64
    mlp_hidden: int = 64
    envelope_p: int = 6
    avg_num_neighbors: float = 12.0
    backbone: str = "sinet"
    num_heads: int = 4

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            cast = {"float": float, "int": int, "str": str}[
                field.type if isinstance(field.type, str) else field.type.__name__
            ]
            try:
                object.__setattr__(self, field.name, cast(value))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{field.name} must be {'an' if cast is int else 'a'} {cast.__name__}, got {value!r}"
                ) from None

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        """The keyword names, in constructor order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def as_dict(self) -> Dict[str, Any]:
        """``{key: value}`` in :meth:`keys` order (what a model stores in its ``config``)."""
        return {key: getattr(self, key) for key in self.keys()}


#: the defaults, for constructor signatures (``lmax: int = DEFAULTS.lmax``)
DEFAULTS = BackboneConfig()
