"""Potentials shipped inside the package (``sinet_ase/potentials/*.pt``).

Each shipped file ``<name>.pt`` has a machine-readable card ``<name>.json``
beside it (its training data and test-slice errors; the test slice ships
too) and a readable card ``<name>.md`` in ``potentials/`` of the repository.
The registry here only maps names to files; every file it reads must match
the package-data globs in ``pyproject.toml`` (``tests/test_packaging.py``).
"""

from pathlib import Path
from typing import List

_STRUCTURES = "structures.extxyz"

_POTENTIAL_DIR = Path(__file__).resolve().parent / "potentials"

#: the potential ``sinet-md`` runs when none is named
DEFAULT_POTENTIAL = "sinet-xtb-md17"


def list_pretrained() -> List[str]:
    """Names accepted by :meth:`SINetCalculator.from_pretrained`."""
    if not _POTENTIAL_DIR.is_dir():
        return []
    return sorted(p.stem for p in _POTENTIAL_DIR.glob("*.pt"))


def pretrained_path(name: str) -> Path:
    """Path of a shipped potential; a clear error lists the names that exist."""
    path = _POTENTIAL_DIR / f"{name}.pt"
    if not path.is_file():
        names = list_pretrained()
        raise KeyError(
            f"no shipped potential named {name!r}; available: "
            f"{', '.join(names) if names else 'none yet (train one with sinet-train)'}"
        )
    return path


def default_potential() -> str:
    """:data:`DEFAULT_POTENTIAL` when it ships, else the first shipped name."""
    names = list_pretrained()
    if DEFAULT_POTENTIAL in names:
        return DEFAULT_POTENTIAL
    if not names:
        raise KeyError("no shipped potential in this installation; pass --model FILE")
    return names[0]


def potential_card(name: str) -> dict:
    """The model card numbers of a shipped potential (``<name>.json``; empty if none)."""
    import json

    path = pretrained_path(name).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_structure_names() -> List[str]:
    """Molecules whose starting geometry ships with the package (``sinet-md NAME``)."""
    path = _POTENTIAL_DIR / _STRUCTURES
    if not path.is_file():
        return []
    from ase.io import read

    return [a.info["name"] for a in read(str(path), index=":")]


def shipped_structure(name: str):
    """The shipped starting geometry of molecule ``name`` as ``ase.Atoms``."""
    from ase.io import read

    for atoms in read(str(_POTENTIAL_DIR / _STRUCTURES), index=":"):
        if atoms.info.get("name") == name:
            atoms.calc = None
            atoms.info = {"name": name}
            return atoms
    raise KeyError(f"no shipped structure {name!r}; available: {', '.join(shipped_structure_names())}")
