"""Moved to :mod:`sinet_ase.qm9`; this module re-exports the QM9 loader so that old imports keep working.

The loader is now split by job: :mod:`sinet_ase.qm9.targets` (units, atom references,
targets), :mod:`sinet_ase.qm9.source` (parsing qm9pack's CSV files),
:mod:`sinet_ase.qm9.cache` (the cache file, :class:`QM9Data`, :func:`load_qm9`) and
:mod:`sinet_ase.qm9.split` (splits and split files). Import from those instead (this path
warns with a :class:`DeprecationWarning`).
"""

import warnings

from ..qm9 import cache as _cache
from ..qm9 import source as _source
from ..qm9 import split as _split
from ..qm9 import targets as _targets
from ..qm9.cache import QM9CacheError, QM9Data, build_qm9_cache, default_cache_dir, load_qm9
from ..qm9.source import parse_qm9pack, qm9pack_data_dir
from ..qm9.split import QM9Split, load_split, qm9_split, save_split, split_sizes
from ..qm9.targets import (
    ATOMREF_HARTREE,
    ATOMREF_SOURCE,
    HARTREE_TO_MEV,
    N_MOLECULES,
    RAW_PROPERTY_NAMES,
    TARGET_NAMES,
    TARGETS,
    QM9Target,
    atomref_sums,
    compute_targets,
)

__all__ = [
    "HARTREE_TO_MEV",
    "ATOMREF_HARTREE",
    "ATOMREF_SOURCE",
    "TARGETS",
    "TARGET_NAMES",
    "RAW_PROPERTY_NAMES",
    "N_MOLECULES",
    "QM9Target",
    "QM9Data",
    "QM9Split",
    "QM9CacheError",
    "load_qm9",
    "build_qm9_cache",
    "parse_qm9pack",
    "atomref_sums",
    "split_sizes",
    "default_cache_dir",
    "qm9pack_data_dir",
    "compute_targets",
    "qm9_split",
    "save_split",
    "load_split",
]
warnings.warn(
    "sinet_ase.data.qm9 has moved to sinet_ase.qm9 (cache, split, targets, source)", DeprecationWarning, stacklevel=2
)


def __getattr__(name):
    # every other name of the former module (constants, private helpers)
    for module in (_targets, _source, _cache, _split):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
