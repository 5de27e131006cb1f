"""Training: config, the shared trainer loop, the task contract, checkpoints, committees,
reports. A config's ``task`` key picks a registered task (:mod:`sinet_ase.train.tasks`); the
tasks themselves live in their folders (:mod:`sinet_ase.potential`, :mod:`sinet_ase.qm9`,
:mod:`sinet_ase.nbody`)."""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "load_config", "Trainer", "train"]
