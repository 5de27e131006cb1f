"""Model files: weights + the hyperparameters to rebuild the model, no pickled code.

A model file is a ``torch.save`` of a plain dictionary::

    {"format": "sinet-ase-model", "format_version": 1, "model_type": "SINet",
     "config": {...constructor keywords...}, "elements": [...],
     "state_dict": {...tensors...}, "metadata": {...strings and numbers...}}

It loads with ``torch.load(weights_only=True)``, which refuses anything but
tensors and plain containers, so a model file from a stranger cannot run code.
Writes are atomic (temporary file in the same folder, then ``os.replace``):
a crash mid-write never leaves a half-written file under the final name.
Metadata is converted to plain Python types first (:func:`plain_metadata`:
NumPy numbers and arrays, paths, dates), because the safe load refuses
anything else, and :func:`save_model` loads the temporary file back before
the rename, so a file that would not load never replaces a good one.
"""

import datetime
import io
import zipfile
from pathlib import Path, PurePath
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from .errors import ModelFileError
from .files import atomic_write

FORMAT_NAME = "sinet-ase-model"
FORMAT_VERSION = 1


def _model_registry():
    from .model import SINet

    return {"SINet": SINet}


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
        "list or dict")


def model_to_dict(model: torch.nn.Module, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The dictionary stored in a model file (weights in the model's own dtype)."""
    model_type = type(model).__name__
    if model_type not in _model_registry():
        raise TypeError(f"cannot save a {model_type}; known model types: {sorted(_model_registry())}")
    return model_payload(model, metadata)


def model_payload(model: torch.nn.Module, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The model-file dictionary of any model with ``config``, ``elements`` and ``dtype``
    (the caller checks that its type is one the loader knows)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_type": type(model).__name__,
        "config": dict(model.config),
        "elements": list(model.elements),
        "dtype": str(model.dtype).replace("torch.", ""),
        "state_dict": state,
        "metadata": plain_metadata(dict(metadata or {})),
    }


def save_model(model: torch.nn.Module, path: Union[str, Path],
               metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` to ``path`` atomically. ``metadata``: strings, numbers, lists, dicts
    (model card; see :func:`plain_metadata`). The written file is loaded back before it
    replaces ``path``: an existing good file is never replaced by one that does not load."""
    atomic_torch_save(model_to_dict(model, metadata), path, verify=_verify_model_file)


def _verify_model_file(path: Path) -> None:
    try:
        model_from_dict(read_model_file(path), str(path))
    except ModelFileError as err:
        raise ModelFileError(f"the model file just written does not load back, so it was not "
                             f"saved (an existing file is unchanged): {err}") from err


def read_model_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Load and check the dictionary of a model file, with clear errors for bad files."""
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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is a torch file but not a sinet-ase model file")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"{path} has an invalid model format version {version!r} (a positive integer is "
            "expected); the file is damaged or was not written by sinet-ase")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, newer than this sinet-ase reads "
            f"({FORMAT_VERSION}); upgrade sinet-ase (pip install -U sinet-ase)"
        )
    for key in ("model_type", "config", "state_dict", "elements"):
        if key not in payload:
            raise ModelFileError(f"{path} lacks the field {key!r}; the file is damaged")
    return payload


def model_from_dict(payload: Dict[str, Any], source: str = "model") -> torch.nn.Module:
    """Rebuild a model from a model-file dictionary."""
    registry = _model_registry()
    model_type = payload["model_type"]
    if model_type not in registry:
        raise ModelFileError(f"{source}: unknown model type {model_type!r}; known: {sorted(registry)}")
    model = registry[model_type](**payload["config"])
    state = payload["state_dict"]
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(payload.get("dtype", "float32"))
    if dtype is None:
        raise ModelFileError(f"{source}: unsupported dtype {payload.get('dtype')!r}")
    model = model.to(dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{source}: weights do not match the stored hyperparameters: {err}") from err
    model.eval()
    return model


def load_model(path: Union[str, Path]) -> torch.nn.Module:
    """Rebuild the model stored at ``path`` (in eval mode, on the CPU)."""
    payload = read_model_file(path)
    model = model_from_dict(payload, str(path))
    model.metadata = payload.get("metadata", {})
    return model
