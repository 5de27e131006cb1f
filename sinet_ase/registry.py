"""Model registry: the one table from a model file's ``model_type`` to the class that rebuilds it.

A model file (:mod:`sinet_ase.io`) names its class (``"model_type": "SINet"``) and
stores the constructor keywords (``"config"``); loading calls ``cls(**config)`` on the
class registered under that name and loads the weights. Each model class registers
itself where it is defined::

    @register_model(task="qm9")
    class QM9ScalarModel(torch.nn.Module):
        ...

so a new model kind is one decorator in its own module, and nothing here names a
module of a task. The ``task`` says what a model is for (``"potential"``: an energy
model the ASE calculator runs; ``"qm9"``; ``"nbody"``), so that a loader that needs
one kind (the calculator needs a potential) refuses the others with a clear error.

The model modules of this package are imported on the first lookup
(:data:`BUILTIN_MODULES`): :mod:`sinet_ase.io` can read any model file without
importing every model at start-up, and no model module has to import another.
A class registered by a plugin module works the same, once its module is imported.
"""

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

#: modules that register the model kinds of this package when imported
BUILTIN_MODULES = ("sinet_ase.model", "sinet_ase.qm9.model", "sinet_ase.nbody.model")


@dataclass(frozen=True)
class ModelKind:
    """A registered model class: ``name`` (the file's ``model_type``), the class, its task."""

    name: str
    cls: type
    task: str


_KINDS: Dict[str, ModelKind] = {}
_builtins_loaded = False


def register_model(cls: Optional[type] = None, *, task: str,
                   name: Optional[str] = None) -> Callable[[type], type]:
    """Class decorator: model files with ``model_type == name`` (default the class name)
    are rebuilt by ``cls(**config)``. The class must keep ``config`` (its constructor
    keywords as plain values), ``dtype`` and, for models of chemical elements,
    ``elements``. Registering another class under a taken name is an error."""

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise TypeError(f"register_model takes a torch.nn.Module class, got {cls!r}")
        key = name or cls.__name__
        known = _KINDS.get(key)
        if known is not None and known.cls is not cls and not _same_class(known.cls, cls):
            raise ValueError(f"model type {key!r} is registered already (by "
                             f"{known.cls.__module__}.{known.cls.__qualname__})")
        _KINDS[key] = ModelKind(key, cls, str(task))
        return cls

    return decorate if cls is None else decorate(cls)


def _same_class(a: type, b: type) -> bool:
    # a module imported twice (python -m of a model module) defines the class twice
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def model_kinds() -> Dict[str, ModelKind]:
    """Every registered model kind, by ``model_type``."""
    _load_builtins()
    return dict(_KINDS)


def lookup(model_type: str) -> Optional[ModelKind]:
    """The kind registered as ``model_type``, or ``None``."""
    _load_builtins()
    return _KINDS.get(model_type)


def kind_of(model: torch.nn.Module) -> ModelKind:
    """The registered kind of a model object (its class, not a subclass); ``TypeError``
    for a class that is not registered (a model file could not rebuild it)."""
    _load_builtins()
    for kind in _KINDS.values():
        if type(model) is kind.cls:
            return kind
    raise TypeError(f"cannot save a {type(model).__name__}: it is not a registered model type "
                    f"(known: {', '.join(sorted(_KINDS))}; see sinet_ase.registry)")
