"""Training checkpoints: everything needed to continue a run exactly.

Written every epoch with :func:`sinet_ase.io.atomic_torch_save` (temporary
file + rename), so a run killed at any moment leaves the previous complete
checkpoint; it loses at most the epoch in progress. Loaded with
``weights_only=True`` like model files.
"""

from pathlib import Path
from typing import Any, Dict

import torch

from ..errors import ModelFileError
from ..io import atomic_torch_save

CHECKPOINT_FORMAT = "sinet-ase-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume (start without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelFileError(f"checkpoint {path} cannot be read (corrupt or truncated): {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a sinet-ase training checkpoint")
    if state.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ModelFileError(f"{path} was written by a newer sinet-ase; upgrade to resume it")
    return state
