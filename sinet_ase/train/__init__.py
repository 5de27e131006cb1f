"""Training: config, the shared trainer loop, tasks (energy + force potentials, QM9), checkpoints,
reports. A config's ``task`` key picks the task (:mod:`sinet_ase.train.tasks`)."""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "load_config", "Trainer", "train"]
