"""Moved to :mod:`sinet_ase.potential.data`; this module re-exports it so that old imports keep working.

Import from ``sinet_ase.potential.data`` instead (this path warns with a :class:`DeprecationWarning`).
"""

import warnings

from ..potential.data import *  # noqa: F401,F403
from ..potential import data as _moved

warnings.warn(
    "sinet_ase.data.atomic has moved to sinet_ase.potential.data; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name):
    # the names that import * leaves out (those with a leading underscore)
    try:
        return getattr(_moved, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
