"""Potentials shipped inside the package (``sinet_ase/potentials/*.pt``).

Each shipped file has a model card ``<name>.md`` beside it in ``potentials/``
of the repository; the registry here only maps names to files.
"""

from pathlib import Path
from typing import List

_POTENTIAL_DIR = Path(__file__).resolve().parent / "potentials"


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
