"""Names a package re-exports from its modules, imported on first use (PEP 562).

A task folder's ``__init__`` re-exports names of modules that need torch, while some of its
modules (the QM9 parser, the N-body simulator) must import without it::

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {"NBodySINet": "model"})
"""

from importlib import import_module
from typing import Callable, Dict, Tuple


def lazy_exports(package: str, namespace: dict, exports: Dict[str, str]) -> Tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps a name
    to the submodule that defines it; a name, once imported, is kept in ``namespace``."""

    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
