"""Model files: weights + the hyperparameters to rebuild the model, no pickled code.

A model file is a ``torch.save`` of a plain dictionary::

    {"format": "sinet-ase-model", "format_version": 2, "model_type": "SINet",
     "config": {...constructor keywords...}, "elements": [...],
     "dtype": "float32", "state_dict": {...tensors...}, "metadata": {...strings and numbers...}}

``model_type`` names a class of the model registry (:mod:`sinet_ase.registry`: the
energy model ``SINet``, with either backbone, the QM9 heads, the N-body network), and
the model is ``cls(**config)`` with the stored weights; ``elements`` is empty for a
model without chemical species (N-body). One reader serves every kind:
:func:`load_model` loads any model file, and ``load_model(path, task="potential")``
refuses the models of another task with an error that names the file's kind.

It loads with ``torch.load(weights_only=True)``, which refuses anything but
tensors and plain containers, so a model file from a stranger cannot run code.
Writes are atomic (temporary file in the same folder, then ``os.replace``):
a crash mid-write never leaves a half-written file under the final name.
Metadata is converted to plain Python types first (:func:`plain_metadata`:
NumPy numbers and arrays, paths, dates), because the safe load refuses
anything else, and :func:`save_model` loads the temporary file back before
the rename, so a file that would not load never replaces a good one.

Format versions and their migrations (:data:`MIGRATIONS`, applied in turn by the
reader, so a file of any earlier version loads as the current one):

1. energy and QM9 models as ``"sinet-ase-model"``; N-body models as
   ``"sinet-ase-nbody-model"`` without ``elements``. Configs left out keys whose
   value was the constructor default of that time: ``backbone`` and ``num_heads``
   (files of the Scalar Interaction backbone), and the N-body options
   ``coulomb_scalars``, ``node_charges``, ``orbit_scalars``, ``galilean_horizon``
   when off.
2. one format name for every kind, ``elements`` always present, and ``config``
   holding every constructor keyword, so a later change of a default never
   changes the model of an existing file.
3. energy models' ``zbl`` and ``zbl_cutoff_factor`` (the optional ZBL core
   repulsion, :mod:`sinet_ase.ops.zbl`); earlier files have none: ``zbl`` off.
"""

import datetime
import io
import zipfile
from pathlib import Path, PurePath
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from . import registry
from .errors import ModelFileError
from .files import atomic_write

FORMAT_NAME = "sinet-ase-model"
FORMAT_VERSION = 3

#: format name of the N-body model files of format version 1
NBODY_V1_FORMAT = "sinet-ase-nbody-model"

#: training checkpoints (not model files): the file to load instead, for the error message
_CHECKPOINT_FORMATS = {"sinet-ase-checkpoint": "best_model.pt", "sinet-ase-nbody-checkpoint": "best.pt"}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def atomic_torch_save(obj: Any, path: Union[str, Path], verify=None) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over it
    (:func:`~sinet_ase.files.atomic_write`, which also runs ``verify`` on the temporary file).

    The bytes are serialised in memory first and then written, so a full disk raises
    :class:`~sinet_ase.files.DiskFullError` instead of torch's "unexpected pos" error.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getbuffer()), verify=verify)


def plain_metadata(value: Any, key: str = "metadata") -> Any:
    """``value`` as the plain types a safe load accepts (str, int, float, bool, None, lists,
    dicts with string keys, tensors); NumPy numbers and arrays become Python numbers and
    lists, paths strings, dates ISO strings. Anything else is a ``TypeError`` naming ``key``."""
    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (np.generic, np.ndarray)):
        return plain_metadata(value.tolist(), key)
    for plain in (str, int, float):  # subclasses: np.float64 is a float, an IntEnum an int
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [plain_metadata(v, f"{key}[{k}]") for k, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{key}: keys must be strings, got {k!r} ({type(k).__name__})")
            out[k] = plain_metadata(v, f"{key}[{k!r}]")
        return out
    raise TypeError(
        f"{key} = {value!r} is a {type(value).__module__}.{type(value).__name__}, which a model "
        "file cannot hold (a safe load refuses pickled objects); store it as a string, number, "
        "list or dict"
    )


def model_to_dict(model: torch.nn.Module, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The dictionary stored in a model file (weights in the model's own dtype). ``model``
    must be of a registered class (:mod:`sinet_ase.registry`); ``TypeError`` otherwise."""
    kind = registry.kind_of(model)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_type": kind.name,
        "config": dict(model.config),
        "elements": list(getattr(model, "elements", [])),
        "dtype": str(model.dtype).replace("torch.", ""),
        "state_dict": state,
        "metadata": plain_metadata(dict(metadata or {})),
    }


def save_model(model: torch.nn.Module, path: Union[str, Path], metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` to ``path`` atomically. ``metadata``: strings, numbers, lists, dicts
    (model card; see :func:`plain_metadata`). The written file is loaded back before it
    replaces ``path``: an existing good file is never replaced by one that does not load."""
    atomic_torch_save(model_to_dict(model, metadata), path, verify=_verify_model_file)


def _verify_model_file(path: Path) -> None:
    try:
        model_from_dict(read_model_file(path), str(path))
    except ModelFileError as err:
        raise ModelFileError(
            f"the model file just written does not load back, so it was not "
            f"saved (an existing file is unchanged): {err}"
        ) from err


def _migrate_1_to_2(payload: Dict[str, Any]) -> Dict[str, Any]:
    """Format 1 -> 2 (module docstring): one format name, ``elements`` for every kind, and
    the keys a version-1 config left out, with the values the version-1 reader used."""
    config = dict(payload.get("config") or {})
    omitted = {"backbone": "sinet", "num_heads": 4}
    if payload.get("model_type") == "NBodySINet":
        omitted.update(coulomb_scalars=False, node_charges=True, orbit_scalars=False, galilean_horizon=None)
    for key, value in omitted.items():
        config.setdefault(key, value)
    payload = dict(payload, format=FORMAT_NAME, config=config)
    if payload.get("model_type") == "NBodySINet":
        payload["elements"] = []
    return payload


def _migrate_2_to_3(payload: Dict[str, Any]) -> Dict[str, Any]:
    """Format 2 -> 3 (module docstring): energy models without the ZBL term say so."""
    if payload.get("model_type") != "SINet":
        return payload
    config = dict(payload.get("config") or {})
    config.setdefault("zbl", False)
    config.setdefault("zbl_cutoff_factor", 0.6)
    return dict(payload, config=config)


#: ``version -> function`` that turns a payload of that format version into the next one
MIGRATIONS: Dict[int, Callable[[Dict[str, Any]], Dict[str, Any]]] = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def _checkpoint_message(source: str, model_name: str) -> str:
    """What to load instead of the training checkpoint ``source``: the run's model file
    beside it, or, before the run has written one, how to get it."""
    folder = Path(source).parent
    model = folder / model_name
    text = (
        f"{source} is a training checkpoint (the state that sinet-train --resume continues "
        "from: weights, optimiser, data split), not a model file; "
    )
    if model.is_file():
        return text + f"load the run's exported model instead: {model}"
    config = folder / "config.json"
    resume = f"sinet-train {config} --resume" if config.is_file() else "sinet-train <its config> --resume"
    return text + (
        f"the run exports its model as {model}, which does not exist yet (it is "
        f"written at the first validation and whenever it improves): let the run go "
        f"on, or continue it with `{resume}`"
    )


def check_payload(payload: Any, source: str = "model") -> Dict[str, Any]:
    """A model-file dictionary of any format version, checked and migrated to the current
    one (:data:`MIGRATIONS`); a clear :class:`ModelFileError` for anything else."""
    if not isinstance(payload, dict):
        raise ModelFileError(f"{source} is a torch file but not a sinet-ase model file")
    name = payload.get("format")
    if name in _CHECKPOINT_FORMATS:
        raise ModelFileError(_checkpoint_message(source, _CHECKPOINT_FORMATS[name]))
    if name not in (FORMAT_NAME, NBODY_V1_FORMAT):
        raise ModelFileError(f"{source} is a torch file but not a sinet-ase model file")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"{source} has an invalid model format version {version!r} (a positive integer is "
            "expected); the file is damaged or was not written by sinet-ase"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{source} has model format version {version}, newer than this sinet-ase reads "
            f"({FORMAT_VERSION}); upgrade sinet-ase (pip install -U sinet-ase)"
        )
    if name == NBODY_V1_FORMAT and version != 1:
        raise ModelFileError(f"{source}: the format name {name!r} exists in version 1 only; the file is damaged")
    for key in ("model_type", "config", "state_dict"):
        if key not in payload:
            raise ModelFileError(f"{source} lacks the field {key!r}; the file is damaged")
    while version < FORMAT_VERSION:
        payload = MIGRATIONS[version](payload)
        version += 1
        payload["format_version"] = version
    if "elements" not in payload:
        raise ModelFileError(f"{source} lacks the field 'elements'; the file is damaged")
    return payload


def read_model_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Load and check the dictionary of a model file, with clear errors for bad files;
    a file of an earlier format version comes back migrated to the current one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise ModelFileError(
            f"{path} is not a readable sinet-ase model file (truncated, corrupt, or another "
            f"format): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    except Exception as err:  # weights_only refuses pickled objects with UnpicklingError
        raise ModelFileError(
            f"{path} holds objects that a safe load refuses (it is not a sinet-ase model "
            f"file; sinet-ase never unpickles code): {type(err).__name__}"
        ) from err
    return check_payload(payload, str(path))


def model_from_dict(payload: Dict[str, Any], source: str = "model", task: Optional[str] = None) -> torch.nn.Module:
    """Rebuild a model from a model-file dictionary (any format version; eval mode, CPU,
    ``metadata`` attribute set). ``task``: refuse a model of another task
    (:mod:`sinet_ase.registry`), e.g. ``"potential"`` where an energy model is needed."""
    payload = check_payload(payload, source)
    model_type = payload["model_type"]
    kind = registry.lookup(model_type)
    if kind is None:
        raise ModelFileError(f"{source}: unknown model type {model_type!r}; known: {sorted(registry.model_kinds())}")
    if task is not None and kind.task != task:
        raise ModelFileError(f"{source} holds a {model_type}, a {kind.task} model; a {task} model is needed here")
    dtype = _DTYPES.get(payload.get("dtype", "float32"))
    if dtype is None:
        raise ModelFileError(f"{source}: unsupported dtype {payload.get('dtype')!r}")
    try:
        model = kind.cls(**payload["config"])
    except TypeError as err:  # a keyword this version does not know
        raise ModelFileError(
            f"{source}: the stored {model_type} config does not fit this "
            f"sinet-ase ({err}); the file was written by another version"
        ) from err
    model = model.to(dtype)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ModelFileError(f"{source}: weights do not match the stored hyperparameters: {err}") from err
    model.eval()
    model.metadata = dict(payload.get("metadata") or {})
    return model


def load_model(path: Union[str, Path], task: Optional[str] = None) -> torch.nn.Module:
    """Rebuild the model stored at ``path`` (any registered kind; eval mode, on the CPU).

    ``task`` (``"potential"``, ``"qm9"``, ``"nbody"``): refuse a file of another task
    with a :class:`ModelFileError` that names what the file holds.
    """
    return model_from_dict(read_model_file(path), str(path), task=task)
