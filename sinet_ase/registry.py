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

Training tasks register the same way (:func:`register_task`, on a subclass of
:class:`~sinet_ase.train.tasks.Task`): the config's ``task`` key names one, and the
task brings its own config section, model keys and checks, so neither the trainer nor
the config reader names a task (:data:`BUILTIN_TASK_MODULES` are imported on the first
task lookup).
"""

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

#: modules that register the model kinds of this package when imported
BUILTIN_MODULES = ("sinet_ase.model", "sinet_ase.qm9.model", "sinet_ase.nbody.model")
#: modules that register the training tasks of this package when imported
BUILTIN_TASK_MODULES = ("sinet_ase.potential.task", "sinet_ase.qm9.task", "sinet_ase.nbody.task")
#: the task of a config without a ``task`` key (and of runs recorded before the key existed)
DEFAULT_TASK = "energy"


@dataclass(frozen=True)
class ModelKind:
    """A registered model class: ``name`` (the file's ``model_type``), the class, its task."""

    name: str
    cls: type
    task: str


_KINDS: Dict[str, ModelKind] = {}
_TASKS: Dict[str, type] = {}
_loaded = set()


def register_model(cls: Optional[type] = None, *, task: str, name: Optional[str] = None) -> Callable[[type], type]:
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
            raise ValueError(
                f"model type {key!r} is registered already (by {known.cls.__module__}.{known.cls.__qualname__})"
            )
        _KINDS[key] = ModelKind(key, cls, str(task))
        return cls

    return decorate if cls is None else decorate(cls)


def _same_class(a: type, b: type) -> bool:
    # a module imported twice (python -m of a model module) defines the class twice
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _load_builtins(modules=BUILTIN_MODULES) -> None:
    if modules not in _loaded:
        for module in modules:
            importlib.import_module(module)
        _loaded.add(modules)


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
    raise TypeError(
        f"cannot save a {type(model).__name__}: it is not a registered model type "
        f"(known: {', '.join(sorted(_KINDS))}; see sinet_ase.registry)"
    )


# --- training tasks -------------------------------------------------------------------------


def register_task(cls: type) -> type:
    """Class decorator: ``task: <cls.name>`` in a training config selects ``cls``
    (a :class:`~sinet_ase.train.tasks.Task` subclass)."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a task class needs a name (the config's task key), {cls!r} has none")
    known = _TASKS.get(name)
    if known is not None and known is not cls and not _same_class(known, cls):
        raise ValueError(f"task {name!r} is registered already (by {known.__module__}.{known.__qualname__})")
    _TASKS[name] = cls
    return cls


def task_classes() -> Dict[str, type]:
    """Every registered training task, by name, in registration order."""
    _load_builtins(BUILTIN_TASK_MODULES)
    return dict(_TASKS)


def task_class(name: str) -> Optional[type]:
    """The task registered as ``name``, or ``None``."""
    return task_classes().get(name)
