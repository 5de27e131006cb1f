"""Training of energy + force potentials: config, trainer loop, checkpoints, reports."""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "load_config", "Trainer", "train"]
