"""Training checkpoints: everything needed to continue a run exactly.

Written every epoch with :func:`sinet_ase.io.atomic_torch_save` (temporary
file + rename), so a run killed at any moment leaves the previous complete
checkpoint; it loses at most the epoch in progress. Loaded with
``weights_only=True`` like model files. :func:`config_changes` says which
config changes a resumed run may make.
"""

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

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


#: config keys a resumed run may change: they set how long and where it runs, not what it
#: learns from (every change is recorded in the run's resume log)
RESUMABLE_KEYS = (
    "run_dir",
    "training.epochs",
    "training.max_minutes",
    "training.device",
    "training.num_threads",
    "training.patience",
    "training.valid_batch_size",
    "training.tensorboard",
    "training.fused_kernels",
)
#: prefixes of resumable keys: the second loss stage may be set or moved while a run goes on
RESUMABLE_PREFIXES = ("training.stage2_",)

_MISSING = "<not set>"


def _flatten(section: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(section, dict):
        return {prefix: section}
    out: Dict[str, Any] = {}
    for key, value in section.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def config_changes(
    stored: Dict[str, Any], new: Dict[str, Any], resumable: Sequence[str] = ()
) -> Tuple[List[str], List[str]]:
    """Compare a checkpoint's config with the config of a resumed run (both ``to_dict()``).

    Returns ``(allowed, refused)``: lines ``"key: old -> new"`` for the changed keys that a
    resume may change (:data:`RESUMABLE_KEYS`, :data:`RESUMABLE_PREFIXES`, and the task's
    ``resumable``, dotted like ``"qm9.test_subset"``) and for those it may not (model,
    data, seed, dtype, task, learning rate, ...: continuing with them would compare losses
    of different setups and keep a best model of the old one).
    """
    old_flat, new_flat = _flatten(stored), _flatten(new)
    allowed, refused = [], []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, now = old_flat.get(key, _MISSING), new_flat.get(key, _MISSING)
        if old == now:
            continue
        line = f"{key}: {old!r} -> {now!r}"
        if key in RESUMABLE_KEYS or key in resumable or key.startswith(RESUMABLE_PREFIXES):
            allowed.append(line)
        else:
            refused.append(line)
    return allowed, refused
