"""Where a structure's reference labels live: the one mapping from data keys to labels.

Training (:mod:`sinet_ase.potential.data`, :func:`sinet_ase.graph.atoms_to_graph`) and
evaluation (:mod:`sinet_ase.evaluate`) read energy, forces and stress through
:func:`get_energy`, :func:`get_forces` and :func:`get_stress` with one
:class:`LabelKeys`. A key is looked up, in this order, in

1. ``atoms.calc.results`` (``ase.io.read`` puts ``energy=``, ``forces`` and ``stress=`` there),
2. ``atoms.info`` (per-structure values extxyz does not know, e.g. MACE's ``REF_energy``),
3. ``atoms.arrays`` (per-atom columns extxyz does not know, e.g. ``REF_forces``).

So the default keys read ASE's calculator results, and a MACE-style file needs
``energy_key: REF_energy``, ``forces_key: REF_forces`` and ``stress_key: REF_stress`` or
``virials_key: REF_virials``.

Shapes and units: energy a scalar (eV); forces ``(N, 3)`` (eV/Å); stress ``(3, 3)``,
``(9,)`` or Voigt ``(6,)`` in ASE's order ``xx yy zz yz xz xy`` (eV/Å^3, ASE's sign:
``sigma = (1/V) dE/d(strain)``). Virials ``W`` (eV, ``(3, 3)``, ``(9,)`` or Voigt ``(6,)``,
``W = -dE/d(strain)``) are read when a structure has no stress label, and converted to
``sigma = -W / V`` with ``V = |det(cell)|``. ``stress_convention: vasp_kbar`` reads stress
labels written as VASP prints them (kB, compression positive, order ``xx yy zz xy yz zx``;
the ``virial_stress_raw`` of the mlearn files) and converts them to ASE's:
``sigma_ase = -0.1 GPa * raw`` (1 kB = 0.1 GPa), reordered to ``xx yy zz yz xz xy``.

``atoms.info[config_type_key]`` (``config_type`` unless set, e.g. ``group`` for mlearn) names a structure's kind (``"Default"`` when absent);
:data:`ISOLATED_ATOM_TYPES` mark single-atom reference frames whose energy is the
element's ``E0``.
"""

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from ase import Atoms, units
from ase.stress import voigt_6_to_full_3x3_stress

from .errors import ConfigError

#: config_type values of an isolated-atom (E0) frame: BOTNet/rMD17 files and MACE's name
ISOLATED_ATOM_TYPES = ("isolated_atom", "IsolatedAtom")
#: config_type of a structure without one (and the fallback of per-type loss weights)
DEFAULT_CONFIG_TYPE = "Default"
#: how stress labels are written: ASE's eV/Å^3 (tension positive) or VASP's raw kB
STRESS_CONVENTIONS = ("ase", "vasp_kbar")
#: VASP's Voigt order xx yy zz xy yz zx, as indices into it for ASE's xx yy zz yz xz xy
_VASP_TO_ASE_VOIGT = (0, 1, 2, 4, 5, 3)


@dataclass(frozen=True)
class LabelKeys:
    """Names of the reference labels (see the module docstring for where they are looked up)."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    virials: str = "virials"
    stress_convention: str = "ase"
    config_type: str = "config_type"

    def __post_init__(self):
        if self.stress_convention not in STRESS_CONVENTIONS:
            raise ConfigError(f"stress convention must be one of {STRESS_CONVENTIONS}, got {self.stress_convention!r}")

    @classmethod
    def from_config(cls, data) -> "LabelKeys":
        """The keys of a ``data`` config section (:class:`sinet_ase.potential.task.DataConfig`)."""
        return cls(
            energy=data.energy_key,
            forces=data.forces_key,
            stress=data.stress_key,
            virials=data.virials_key,
            stress_convention=data.stress_convention,
            config_type=data.config_type_key,
        )


def lookup(atoms: Atoms, key: str) -> Optional[Any]:
    """The value stored under ``key`` in calc results, then info, then arrays; None if absent."""
    calc = atoms.calc
    results = getattr(calc, "results", None) if calc is not None else None
    if results and results.get(key) is not None:
        return results[key]
    if atoms.info.get(key) is not None:
        return atoms.info[key]
    if key in atoms.arrays and key not in ("numbers", "positions"):
        return atoms.arrays[key]
    return None


def _full_3x3(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (6,):
        return voigt_6_to_full_3x3_stress(array)
    if array.shape in ((9,), (3, 3)):
        return array.reshape(3, 3)
    raise ConfigError(f"{name} has shape {array.shape}; expected (3, 3), (9,) or Voigt (6,)")


def get_energy(atoms: Atoms, keys: LabelKeys = LabelKeys()) -> Optional[float]:
    """Reference energy (eV) under ``keys.energy``, or None."""
    value = lookup(atoms, keys.energy)
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ConfigError(f"energy label {keys.energy!r} has shape {array.shape}; expected a number")
    return float(array.reshape(()))


def get_forces(atoms: Atoms, keys: LabelKeys = LabelKeys()) -> Optional[np.ndarray]:
    """Reference forces ``(N, 3)`` (eV/Å) under ``keys.forces``, or None."""
    value = lookup(atoms, keys.forces)
    if value is None:
        return None
    forces = np.asarray(value, dtype=np.float64)
    if forces.shape != (len(atoms), 3):
        raise ConfigError(f"forces label {keys.forces!r} has shape {forces.shape}; expected ({len(atoms)}, 3)")
    return forces


def get_stress(atoms: Atoms, keys: LabelKeys = LabelKeys()) -> Optional[np.ndarray]:
    """Reference stress ``(3, 3)`` (eV/Å^3): ``keys.stress``, else ``-virials / volume``; or None."""
    value = lookup(atoms, keys.stress)
    if value is not None:
        if keys.stress_convention == "vasp_kbar":
            raw = np.asarray(value, dtype=np.float64)
            if raw.shape != (6,):
                raise ConfigError(
                    f"stress label {keys.stress!r} has shape {raw.shape}; "
                    "stress_convention vasp_kbar expects 6 values xx yy zz xy yz zx"
                )
            value = -0.1 * units.GPa * raw[list(_VASP_TO_ASE_VOIGT)]
        return _full_3x3(value, f"stress label {keys.stress!r}")
    value = lookup(atoms, keys.virials)
    if value is None:
        return None
    virials = _full_3x3(value, f"virials label {keys.virials!r}")
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    if volume < 1e-12:
        raise ConfigError(
            f"virials label {keys.virials!r} on a structure without a cell: "
            "stress = -virials / volume needs the cell volume"
        )
    return -virials / volume


def config_type(atoms: Atoms, keys: LabelKeys = LabelKeys()) -> str:
    """``atoms.info[keys.config_type]`` as a string, :data:`DEFAULT_CONFIG_TYPE` when absent."""
    value = atoms.info.get(keys.config_type)
    return DEFAULT_CONFIG_TYPE if value is None else str(value)


def is_isolated_atom(atoms: Atoms, keys: LabelKeys = LabelKeys()) -> bool:
    """Whether a frame is an isolated-atom (E0) reference (by its config_type)."""
    return config_type(atoms) in ISOLATED_ATOM_TYPES or config_type(atoms, keys) in ISOLATED_ATOM_TYPES
