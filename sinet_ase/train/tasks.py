"""What a training run learns: the *task* interface that every task implements.

The :class:`~sinet_ase.train.trainer.Trainer` owns everything that does not
depend on what is learned: process group, devices, the optimiser, the
schedule, the EMA of the weights, batching, the epoch loop, checkpoints and
exact resume, early stopping, the wall-time limit, the CSV log and the
progress bar. A :class:`Task` supplies the rest:

==================  ===========================================================
``setup(quiet)``    read and check the data; fill ``graphs`` (train, valid,
                    test: sequences of labelled samples, by default graphs),
                    ``split_record`` (written
                    to ``split.json``) and ``stats`` (JSON-able numbers that
                    set up the model; stored in the checkpoint and summary)
``check_resume()``  refuse a checkpoint that does not fit this config (and,
                    if the task wants, adopt its ``stats``)
``build_model()``   the model, from the config and ``stats``
``begin_epoch()``   called before each epoch with the fraction of the schedule
                    done; returns True when the loss changes there (a new loss
                    stage: the trainer restarts its best-model tracking, since
                    losses of two stages do not compare)
``state_dict()``    what the task must carry over a resume (checkpointed)
``collate()``       one batch from samples of a split and their indices
                    (default: :func:`~sinet_ase.graph.batch_graphs`); the batch
                    has ``.to(device)``
``train_forward()`` the forward pass of a training step (the model may be
                    wrapped in DDP)
``loss()``          the scalar loss of a batch
``evaluate()``      loss and metrics over batches (``metric_keys`` name the
                    metrics logged per epoch as ``valid_<key>``)
``progress()``      the metric part of the per-epoch line
``export()``        write the exported (best EMA) model file
``load_exported()`` read it back (``finish()`` tests it)
``report()``        plots at the end of a run
==================  ===========================================================

and, as class attributes and class methods, its part of the config
(:mod:`sinet_ase.train.config` reads them; no task is named there):

=============================  ==============================================
``section``, ``section_type``  the config section the task owns and its
                               dataclass (``data`` for the energy task)
``own_training_keys``          ``training`` keys only this task reads
                               (other tasks refuse them)
``resumable_section_keys``     keys of its section a resumed run may change
``model_keys()``               the keys its ``model`` section takes
``model_key_types()``          a callable whose annotations type them (or None)
``freezable``                  the parts ``training.freeze`` may name
``prepare_section(raw)``       normalise the raw section before type checks
``validate_config(config)``    the task's checks of a whole config
``describe_best(summary)``     one line about a finished run's best epoch
=============================  ==============================================

Tasks register themselves (:func:`sinet_ase.registry.register_task`) and the
config's ``task`` key selects one. The tasks of this package live each in its own
folder with its data and model head (:data:`sinet_ase.registry.BUILTIN_TASK_MODULES`):
``energy`` (default; energy + force potentials, :mod:`sinet_ase.potential.task`), ``qm9``
(:mod:`sinet_ase.qm9.task`) and ``nbody`` (:mod:`sinet_ase.nbody.task`). This module
imports none of them.
"""

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from ..errors import ConfigError
from ..registry import DEFAULT_TASK, task_class, task_classes


def make_task(config) -> "Task":
    """The :class:`Task` named by ``config.task``."""
    cls = task_class(config.task)
    if cls is None:
        raise ConfigError(f"unknown task {config.task!r}; choose from {', '.join(sorted(task_classes()))}")
    return cls(config)


class Task:
    """Base class; see the module docstring for the contract."""

    name = ""
    #: keys of :meth:`evaluate`'s result (besides ``loss``) logged as ``valid_<key>``
    metric_keys: Tuple[str, ...] = ()
    #: the config section this task owns and its dataclass (None: no section of its own)
    section: Optional[str] = None
    section_type: Optional[type] = None
    #: ``training`` keys that only this task reads
    own_training_keys: Tuple[str, ...] = ()
    #: keys of :attr:`section` that a resumed run may change (where and how much it tests)
    resumable_section_keys: Tuple[str, ...] = ()
    #: the parts of the model that ``training.freeze`` may name (none: it must stay empty)
    freezable: Tuple[str, ...] = ()

    @classmethod
    def model_keys(cls) -> List[str]:
        """The keys the config's ``model`` section may hold."""
        raise NotImplementedError

    @classmethod
    def model_key_types(cls) -> Optional[Callable]:
        """A callable whose annotated parameters type the ``model`` keys (the config
        reader converts and checks the values against them), or None: no check."""
        return None

    @classmethod
    def prepare_section(cls, section: Dict[str, Any]) -> Dict[str, Any]:
        """The raw :attr:`section` before its type check (e.g. a string where a list is meant)."""
        return section

    @classmethod
    def validate_config(cls, config) -> None:
        """Raise :class:`ConfigError` for a config this task cannot run."""

    @classmethod
    def describe_best(cls, summary: Dict) -> str:
        """One line about the best epoch of a finished run (its ``summary.json``)."""
        best = summary.get("best", {})
        return "  ".join(f"valid {k} {best.get('valid_' + k, float('nan')):.4g}" for k in cls.metric_keys)

    def __init__(self, config):
        self.config = config
        self.graphs: Dict[str, list] = {}
        self.split_record: Dict = {}
        self.stats: Dict = {}

    def setup(self, quiet: bool = False) -> None:
        raise NotImplementedError

    def check_resume(self, state: Dict) -> None:
        """Raise :class:`ConfigError` if the checkpoint ``state`` cannot continue this config."""

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def begin_epoch(self, progress: float) -> bool:
        """Prepare the next epoch (``progress``: fraction of the schedule done, 0 to 1);
        True if the loss function changes here."""
        return False

    def state_dict(self) -> Dict:
        return {}

    def load_state_dict(self, state: Dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def collate(self, samples, indices):
        """The batch of ``samples[i]`` for ``i`` in ``indices`` (an integer array)."""
        from ..graph import batch_graphs

        return batch_graphs([samples[i] for i in indices])

    def train_forward(self, model, batch) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, out: Dict[str, torch.Tensor], batch) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model, batches: Iterable, keep: bool = False) -> Dict:
        """``{"loss": ..., <metric_keys>..., ["kept": arrays for report()]}``."""
        raise NotImplementedError

    def progress(self, valid: Dict) -> str:
        return "  ".join(f"valid {k} {valid[k]:.4g}" for k in self.metric_keys)

    def export(self, model, path: Path, metadata: Dict) -> None:
        raise NotImplementedError

    def load_exported(self, path: Path) -> torch.nn.Module:
        raise NotImplementedError

    def summary_extra(self) -> Dict:
        """Task entries added to ``summary.json``."""
        return {}

    def export_metadata(self) -> Dict:
        """Task entries added to the exported model file's metadata."""
        return {}

    def report(self, run_dir: Path, history, kept, which: str) -> None:
        """Plots at the end of a run (``kept``: what :meth:`evaluate` kept on ``which``)."""


def describe_best(summary: Dict) -> str:
    """One line about the best epoch of a finished run, for the command line."""
    # a summary.json written before the task was recorded is one of the default task
    cls = task_class(summary.get("task", DEFAULT_TASK)) or Task
    return cls.describe_best(summary)


#: names that lived here before the energy task moved to its folder: still importable
#: from this module (found by name, so that this module does not import a task)
_MOVED = {name: "sinet_ase.potential.task" for name in ("EnergyForceTask", "DataConfig", "ENERGY_ONLY_TRAINING_KEYS")}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"sinet_ase.train.tasks.{name} has moved to {_MOVED[name]}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
