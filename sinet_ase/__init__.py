"""sinet-ase: the E(3)-equivariant Scalar Interaction Network as an ASE calculator.

Public API::

    SINet(elements=[...], cutoff=5.0, lmax=2, channels=64, num_layers=2, ...)
    SINetCalculator(model_or_path, device="cpu", dtype="float64")
    SINetCalculator([path1, path2, ...] or "runs/c/member_*/best_model.pt")   # committee
    predict(model, list_of_atoms, batch_size=32, properties=("energy", "forces"))
    SINetCalculator.from_pretrained(name), list_pretrained()
    save_model(model, path), load_model(path)
    atoms_to_graph(atoms, cutoff), batch_graphs(graphs)
"""

from .calculator import SINetCalculator
from .errors import (
    ConfigError,
    InsufficientMemoryError,
    ModelFileError,
    OutOfDomainError,
    SINetInputError,
    UnknownElementError,
)
from .graph import atoms_to_graph, batch_graphs
from .io import load_model, save_model
from .model import SINet, SINetBackbone
from .inference import predict
from .pretrained import list_pretrained

__version__ = "0.1.0"

__all__ = [
    "SINet",
    "SINetBackbone",
    "SINetCalculator",
    "list_pretrained",
    "predict",
    "save_model",
    "load_model",
    "atoms_to_graph",
    "batch_graphs",
    "SINetInputError",
    "UnknownElementError",
    "InsufficientMemoryError",
    "OutOfDomainError",
    "ModelFileError",
    "ConfigError",
]
