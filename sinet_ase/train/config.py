"""One YAML file per run, checked before anything else happens.

Sections and keys (defaults in the dataclasses below)::

    run_dir: runs/my_potential       # checkpoints, logs, plots, best_model.pt
    seed: 0
    task: energy                     # energy (default) | qm9 | nbody
    data:   {train: [files], valid: [files] | null, test: [files] | null,
             valid_size: 0.05, test_size: 0.0, require_stress: false,
             energy_key: energy, forces_key: forces, stress_key: stress, virials_key: virials,
             stress_convention: ase, config_type_key: config_type,
             atomic_energies: fit, config_type_weights: null}
    model:  {cutoff: 5.0, lmax: 2, channels: 64, num_layers: 2, ...}  # SINet keywords
            # or {init_from: sinet-xtb-md17 | path/model.pt}: fine-tune (below)
    training: {epochs: 100, batch_size: 8, lr: 1e-3, loss: mse, huber_delta: 0.01,
               freeze: [], tensorboard: false, ...}

``sinet-train --print-config`` prints every key with its default and a comment
(:mod:`sinet_ase.train.template`). ``training.tensorboard: true`` also logs the per-epoch
metrics for TensorBoard (:mod:`sinet_ase.train.tensorboard_log`; needs ``pip install
tensorboard``).

The ``data`` section of the default energy task (label keys, E0s, per-config-type
weights) and fine-tuning (``model.init_from``, ``training.freeze``) are explained in
:mod:`sinet_ase.potential.task`, beside the code that reads them.

The ``task`` key picks a registered training task (:func:`sinet_ase.registry.task_classes`),
which owns one section and says which ``model`` and ``training`` keys it reads
(:class:`~sinet_ase.train.tasks.Task`): the energy task owns ``data``
(:class:`~sinet_ase.potential.task.DataConfig`); ``task: qm9`` (:mod:`sinet_ase.qm9.task`)
owns a ``qm9`` section (:class:`~sinet_ase.qm9.task.QM9Config`: target, split, subsets,
atom references) instead, takes the QM9 model keywords in ``model`` (backbone keywords
plus ``pooling`` and ``head_hidden``), and has no energy/force/stress weights in
``training`` (its loss is the L1 error of the standardised target); ``task: nbody``
(:mod:`sinet_ase.nbody.task`) owns an ``nbody`` section (data set sizes and seed, extra
training pairs) and takes :class:`~sinet_ase.nbody.model.NBodySINet`'s keywords in
``model``. This module names no task.

Optimiser and schedule (every task): ``training.optimizer`` is ``adamw`` (decoupled weight
decay, default) or ``adam`` (weight decay added to the gradient, as the N-body protocol's
Adam); ``training.scheduler: constant`` keeps ``lr`` after the warm-up (``warmup_epochs: 0``
for none). ``training.valid_every`` validates every that many epochs and at the last one;
``patience`` counts validations.

A key that does not exist is a :class:`ConfigError` that lists the valid
ones; so is a section or key that belongs to another task, and a value
whose type does not match the dataclass field (:func:`_check_types`). Command-line
overrides use dotted keys (``training.epochs=5``).
"""

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from ..errors import ConfigError
from ..registry import DEFAULT_TASK, task_class, task_classes


@dataclass
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 8
    valid_batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adamw (decoupled weight decay) | adam (L2 in the gradient)
    scheduler: str = "cosine"  # cosine (over epochs) | cosine_time / cosine_cpu (over
    # max_minutes of wall / CPU time) | plateau | constant
    warmup_epochs: int = 1
    min_lr: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    ema_decay: float = 0.99
    energy_weight: float = 1.0  # on (energy error per atom)^2, eV^2
    forces_weight: float = 100.0  # on force component error^2, (eV/Å)^2
    stress_weight: float = 0.0
    loss: str = "mse"  # "mse" or "huber" (on the same residuals)
    huber_delta: float = 0.01  # Huber threshold, in the residual's unit (eV, eV/Å)
    # second loss stage once this fraction of the schedule (of the epochs, or of max_minutes
    # with cosine_time) is done, as MACE's SWA stage raises the energy weight; a stage2
    # weight left at null keeps the first stage's weight; over the stage2_ramp fraction of
    # the schedule after stage2_start the weights move geometrically from stage 1's to
    # stage 2's (0: a step)
    stage2_start: Optional[float] = None
    stage2_ramp: float = 0.0
    stage2_energy_weight: Optional[float] = None
    stage2_forces_weight: Optional[float] = None
    stage2_stress_weight: Optional[float] = None
    grad_clip: float = 10.0
    patience: int = 50  # early stopping: validations without gain
    valid_every: int = 1  # validate every this many epochs (and at the last)
    max_minutes: Optional[float] = None  # stop after this wall time (resume later)
    dtype: str = "float32"
    device: str = "cpu"
    num_threads: Optional[int] = None
    freeze: List[str] = field(default_factory=list)  # [backbone]: train the energy head only
    tensorboard: bool = False  # also log metrics.csv's numbers to run_dir/tensorboard
    # the fused edge kernels on the CPU (sinet_ase.ops.fused): auto builds them where the
    # machine can (a C++ compiler and ninja) and uses them; same numbers, fewer seconds
    fused_kernels: Union[bool, str] = "auto"


SCHEDULERS = ("cosine", "cosine_time", "cosine_cpu", "plateau", "constant")
OPTIMIZERS = ("adamw", "adam")
#: top-level keys of every config (besides the sections of the tasks)
_TOP_KEYS = ("run_dir", "seed", "task", "model", "training")


def _foreign_training_keys(task: str) -> Dict[str, str]:
    """``{training key: the task that owns it}`` for the keys other tasks own."""
    own = task_class(task).own_training_keys
    return {
        key: name
        for name, cls in task_classes().items()
        if name != task
        for key in cls.own_training_keys
        if key not in own
    }


@dataclass
class TrainConfig:
    """A checked run config. ``section`` is the task's own section (an instance of its
    ``section_type``), also reachable under the section's name (``config.data``,
    ``config.qm9``)."""

    run_dir: str = "runs/sinet"
    seed: int = 0
    model: Dict[str, Any] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    task: str = DEFAULT_TASK
    section: Any = None

    def __post_init__(self):
        cls = task_class(self.task)
        if cls is None:
            raise ConfigError(f"task must be one of {', '.join(sorted(task_classes()))}, got {self.task!r}")
        if self.section is None and cls.section_type is not None:
            self.section = cls.section_type()

    def __getattr__(self, name: str) -> Any:
        # only called for names that are not attributes: the task's section by its name
        state = self.__dict__
        if not name.startswith("__") and "task" in state:
            cls = task_class(state["task"])
            if cls is not None and cls.section == name:
                return state.get("section")
            raise AttributeError(f"a config of task {state['task']!r} has no {name!r} section")
        raise AttributeError(name)

    def resumable_keys(self) -> Tuple[str, ...]:
        """The task's section keys a resumed run may change, dotted (``"qm9.test_subset"``)."""
        cls = task_class(self.task)
        return tuple(f"{cls.section}.{key}" for key in cls.resumable_section_keys)

    def to_dict(self) -> Dict[str, Any]:
        """The sections this task reads (a config ``from_dict`` accepts again)."""
        out = {"run_dir": self.run_dir, "seed": self.seed, "task": self.task}
        cls = task_class(self.task)
        if cls.section is not None:
            out[cls.section] = dataclasses.asdict(self.section)
        out["model"] = dict(self.model)
        training = dataclasses.asdict(self.training)
        for key in _foreign_training_keys(self.task):
            training.pop(key)
        out["training"] = training
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(raw, dict):
            raise ConfigError("the config must be a YAML mapping (key: value)")
        tasks = task_classes()
        owners = {t.section: name for name, t in tasks.items() if t.section is not None}
        _check_keys(raw, list(_TOP_KEYS[:3]) + list(owners) + list(_TOP_KEYS[3:]), "")
        task = raw.get("task", DEFAULT_TASK)
        if task not in tasks:
            raise ConfigError(f"task must be one of {', '.join(sorted(tasks))}, got {task!r}")
        task_cls = tasks[task]
        for section in list(owners) + ["model", "training"]:
            if raw.get(section) is not None and not isinstance(raw[section], dict):
                raise ConfigError(f"{section} must be a section (key: value pairs), got {raw[section]!r}")
        for section, owner in owners.items():
            if section in raw and owner != task:
                raise ConfigError(
                    f"the {section} section is read only with 'task: {owner}'; "
                    f"remove the {section} section or set 'task: {owner}'"
                )
        training = dict(raw.get("training") or {})
        model = dict(raw.get("model") or {})
        foreign = _foreign_training_keys(task)
        misplaced = [k for k in training if k in foreign]
        if misplaced:
            owner = foreign[misplaced[0]]
            raise ConfigError(
                f"{', '.join('training.' + k for k in misplaced)} only apply to "
                f"'task: {owner}'; task {task} does not read them"
            )
        _check_keys(
            training, [f.name for f in dataclasses.fields(TrainingConfig) if f.name not in foreign], "training."
        )
        _check_keys(model, task_cls.model_keys(), "model.")
        section = None
        if task_cls.section is not None:
            own = task_cls.prepare_section(dict(raw.get(task_cls.section) or {}))
            prefix = f"{task_cls.section}."
            _check_keys(own, [f.name for f in dataclasses.fields(task_cls.section_type)], prefix)
            section = task_cls.section_type(**_check_types(own, task_cls.section_type, prefix))
        if isinstance(training.get("freeze"), str):
            training["freeze"] = [training["freeze"]]
        model_types = task_cls.model_key_types()
        if model_types is not None:  # e.g. lmax a whole number, zbl true or false
            model = _check_types(model, model_types, "model.")
        training = _check_types(training, TrainingConfig, "training.")
        _check_types({k: raw[k] for k in ("run_dir", "seed") if k in raw}, cls, "")
        config = cls(
            run_dir=str(raw.get("run_dir", cls.run_dir)),
            seed=int(raw.get("seed", 0)),
            model=model,
            training=TrainingConfig(**training),
            task=task,
            section=section,
        )
        config.validate()
        return config

    def validate(self) -> None:
        t = self.training
        self._validate_freeze()
        task_class(self.task).validate_config(self)
        if t.scheduler not in SCHEDULERS:
            raise ConfigError(f"training.scheduler must be one of {', '.join(SCHEDULERS)}, got {t.scheduler!r}")
        if t.scheduler.startswith("cosine_") and not (t.max_minutes and t.max_minutes > 0):
            raise ConfigError(
                f"training.scheduler {t.scheduler!r} decays the learning rate over "
                "the training-time budget: set training.max_minutes (> 0)"
            )
        if t.optimizer not in OPTIMIZERS:
            raise ConfigError(f"training.optimizer must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
        if t.valid_every < 1:
            raise ConfigError(f"training.valid_every must be >= 1, got {t.valid_every}")
        if t.valid_every > 1 and t.scheduler == "plateau":
            raise ConfigError(
                "training.scheduler plateau steps on every epoch's validation loss: use valid_every: 1 with it"
            )
        if t.dtype not in ("float32", "float64"):
            raise ConfigError(f"training.dtype must be 'float32' or 'float64', got {t.dtype!r}")
        if t.epochs < 1 or t.batch_size < 1:
            raise ConfigError("training.epochs and training.batch_size must be >= 1")
        if t.stage2_start is not None and not 0 < t.stage2_start < 1:
            raise ConfigError(
                "training.stage2_start is the fraction of the schedule after which "
                f"the second loss stage starts: between 0 and 1, got {t.stage2_start}"
            )
        if not 0.0 <= t.stage2_ramp < 1.0 or (t.stage2_start or 0.0) + t.stage2_ramp > 1.0:
            raise ConfigError(
                "training.stage2_ramp is the fraction of the schedule over which the loss weights move "
                "from stage 1's to stage 2's: at least 0, and stage2_start + stage2_ramp at most 1; "
                f"got stage2_start {t.stage2_start}, stage2_ramp {t.stage2_ramp}"
            )
        if t.fused_kernels not in (True, False, "auto"):
            raise ConfigError(f"training.fused_kernels must be true, false or auto, got {t.fused_kernels!r}")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ConfigError(f"training.ema_decay must be in [0, 1), got {t.ema_decay}")
        if t.tensorboard:
            from .tensorboard_log import check_tensorboard

            check_tensorboard()

    def _validate_freeze(self) -> None:
        """``training.freeze`` names only parts the task can freeze (:attr:`Task.freezable`)."""
        freeze, freezable = self.training.freeze, task_class(self.task).freezable
        if not isinstance(freeze, list) or any(part not in freezable for part in freeze):
            if not freezable:
                raise ConfigError(
                    f"task {self.task} freezes no part of its model: training.freeze must be [], got {freeze!r}"
                )
            raise ConfigError(f"training.freeze must be a list of {', '.join(freezable)}, got {freeze!r}")


def _check_keys(section: Dict[str, Any], allowed: List[str], prefix: str) -> None:
    unknown = [k for k in section if k not in allowed]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys here: "
            f"{', '.join(prefix + k for k in allowed)}"
        )


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _conform(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int, float, str, bool, List[...], Optional/Union of these),
    or raise ``TypeError``. Whole numbers are floats too, and a float field takes a number
    written as a string (YAML 1.1 reads ``1e-3`` without a dot as text)."""
    origin = typing.get_origin(hint)
    if origin is Union:
        for option in typing.get_args(hint):
            try:
                return _conform(value, option)
            except TypeError:
                pass
        raise TypeError
    if hint is type(None):
        if value is None:
            return None
        raise TypeError
    if origin in (list, List):
        if not isinstance(value, list):
            raise TypeError
        (item,) = typing.get_args(hint) or (Any,)
        return [_conform(v, item) for v in value]
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    return value  # a type this check does not know: left to validate()


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Union:
        args = typing.get_args(hint)
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, List):
        (item,) = typing.get_args(hint) or (Any,)
        return "a list of " + ("strings" if item is str else _type_name(item))
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _check_types(section: Dict[str, Any], cls, prefix: str) -> Dict[str, Any]:
    """The values of ``section`` conformed to the field types of dataclass ``cls`` (or the
    annotated parameters of a function);
    a :class:`ConfigError` names the key, the value and the expected type otherwise."""
    hints = typing.get_type_hints(cls)
    out = dict(section)
    for key, value in section.items():
        if key not in hints:
            continue
        try:
            out[key] = _conform(value, hints[key])
        except TypeError:
            raise ConfigError(
                f"{prefix}{key} = {value!r} ({type(value).__name__}): expected {_type_name(hints[key])}"
            ) from None
    return out


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(raw: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        target = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        target[parts[-1]] = _parse_value(value)
    return raw


def load_config(path: Union[str, Path], overrides: Optional[List[str]] = None) -> TrainConfig:
    """Read a YAML config, apply overrides, check every key; relative data paths
    are taken relative to the current directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    return TrainConfig.from_dict(apply_overrides(raw, overrides or []))
