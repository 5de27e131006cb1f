"""One YAML file per run, checked before anything else happens.

Sections and keys (defaults in the dataclasses below)::

    run_dir: runs/my_potential       # checkpoints, logs, plots, best_model.pt
    seed: 0
    task: energy                     # energy (default) | qm9
    data:   {train: [files], valid: [files] | null, test: [files] | null,
             valid_size: 0.05, test_size: 0.0, require_stress: false,
             energy_key: energy, forces_key: forces, stress_key: stress, virials_key: virials,
             stress_convention: ase, config_type_key: config_type,
             atomic_energies: fit, config_type_weights: null}
    model:  {cutoff: 5.0, lmax: 2, channels: 64, num_layers: 2, ...}  # SINet keywords
            # or {init_from: sinet-xtb-md17 | path/model.pt}: fine-tune (below)
    training: {epochs: 100, batch_size: 8, lr: 1e-3, loss: mse, huber_delta: 0.01,
               freeze: [], ...}

Data labels (energy task; :mod:`sinet_ase.labels`): ``energy_key``, ``forces_key``,
``stress_key`` and ``virials_key`` name the labels, looked up in the calculator results,
then ``atoms.info``, then ``atoms.arrays`` (defaults: ASE's names; a MACE-style file takes
``REF_energy``, ``REF_forces``, ``REF_stress`` / ``REF_virials``). Virials (eV) are read
where a structure has no stress and become ``stress = -virials / volume``.

``atomic_energies`` sets the per-element energy shift ``E0`` (eV): ``fit`` (least squares
over the training structures), a mapping ``{H: -13.57, C: -1025.3}``, or the path of an
extxyz of isolated atoms (one atom per frame). Frames whose ``config_type`` is
``isolated_atom`` inside the data files are never trained on; those of the training files
give the E0s of their elements unless an explicit mapping or file is set (``fit`` then fits
only the elements they lack).

``config_type_weights`` (``{Default: 1.0, some_type: 0.1}``) multiplies the energy, force
and stress terms of each structure by the weight of its ``atoms.info["config_type"]``
(``Default`` for the types not listed, 1 when ``Default`` is not listed either).
``training.loss: huber`` replaces each squared residual ``r^2`` by
``huber_delta``'s Huber function (``r^2 / 2`` for ``|r| <= delta``, ``delta (|r| - delta / 2)``
beyond; ``torch.nn.functional.huber_loss``) of the same residuals (energy per atom in eV,
force and stress components in eV/Å and eV/Å^3).

Fine-tuning (energy task; :mod:`sinet_ase.train.finetune`): ``model.init_from`` names a
model file or a shipped potential (``sinet-xtb-md17``). The run starts from its weights and
takes its architecture (model keys given beside it must equal the file's, except
``elements``) and its ``avg_num_neighbors`` and ``energy_scale`` (they define the function
the weights compute). Elements of the data that the file lacks are added, with the rows of a
newly built model; the known elements keep theirs. The E0s follow ``data.atomic_energies``
on the new data as for a fresh model (``fit`` refits them; elements absent from the new
training data keep the file's). ``training.freeze: [backbone]`` (needs ``init_from``; not
with new elements) trains only the energy head: the backbone's parameters are not trained.

``task: qm9`` (:mod:`sinet_ase.qm9`) replaces the ``data`` section by a
``qm9`` section (:class:`QM9Config`: target, split, subsets, atom
references), takes the QM9 model keywords in ``model`` (backbone keywords
plus ``pooling`` and ``head_hidden``), and has no energy/force/stress
weights in ``training`` (its loss is the L1 error of the standardised target).

A key that does not exist is a :class:`ConfigError` that lists the valid
ones; so is a section or key that belongs to the other task, and a value
whose type does not match the dataclass field (:func:`_check_types`). Command-line
overrides use dotted keys (``training.epochs=5``).
"""

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from ..errors import ConfigError


@dataclass
class DataConfig:
    train: List[str] = field(default_factory=list)
    valid: Optional[List[str]] = None
    test: Optional[List[str]] = None
    valid_size: Union[int, float] = 0.05
    test_size: Union[int, float] = 0.0
    require_stress: bool = False
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    virials_key: str = "virials"
    stress_convention: str = "ase"       # ase (eV/Å^3) | vasp_kbar (raw VASP kB, see labels)
    config_type_key: str = "config_type"
    atomic_energies: Union[str, Dict[str, float]] = "fit"
    config_type_weights: Optional[Dict[str, float]] = None


@dataclass
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 8
    valid_batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "cosine"            # cosine (over epochs) | cosine_time / cosine_cpu (over
                                          # max_minutes of wall / CPU time) | plateau
    warmup_epochs: int = 1
    min_lr: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    ema_decay: float = 0.99
    energy_weight: float = 1.0            # on (energy error per atom)^2, eV^2
    forces_weight: float = 100.0          # on force component error^2, (eV/Å)^2
    stress_weight: float = 0.0
    loss: str = "mse"                     # "mse" or "huber" (on the same residuals)
    huber_delta: float = 0.01             # Huber threshold, in the residual's unit (eV, eV/Å)
    # second loss stage once this fraction of the schedule (of the epochs, or of max_minutes
    # with cosine_time) is done, as MACE's SWA stage raises the energy weight; a stage2
    # weight left at null keeps the first stage's weight
    stage2_start: Optional[float] = None
    stage2_energy_weight: Optional[float] = None
    stage2_forces_weight: Optional[float] = None
    stage2_stress_weight: Optional[float] = None
    grad_clip: float = 10.0
    patience: int = 50                    # early stopping: epochs without validation gain
    max_minutes: Optional[float] = None   # stop after this wall time (resume later)
    dtype: str = "float32"
    device: str = "cpu"
    num_threads: Optional[int] = None
    freeze: List[str] = field(default_factory=list)  # [backbone]: train the energy head only


@dataclass
class QM9Config:
    """The ``qm9`` section of a ``task: qm9`` config."""

    target: str = "gap"                   # one of sinet_ase.data.qm9.TARGET_NAMES
    split: str = "paper"                  # paper (110k/10k/10,831) | egnn (100k/17,748/13,083)
    split_seed: int = 0                   # seed of the split permutation (0: Cormorant's)
    train_subset: Optional[int] = None    # train on this many molecules of the training split
    valid_subset: Optional[int] = None    # validate every epoch on this many of the valid split
    test_subset: Optional[int] = None     # test the best model at the end on this many (None: all)
    atomref: str = "auto"                 # auto | fit | dataset | none (per-element references)
    cache_dir: Optional[str] = None       # QM9 cache folder (default: load_qm9's)


#: energy/force/stress weights: only the energy task has them
ENERGY_ONLY_TRAINING_KEYS = ("energy_weight", "forces_weight", "stress_weight", "stage2_start",
                             "stage2_energy_weight", "stage2_forces_weight", "stage2_stress_weight",
                             "loss", "huber_delta")
TASK_NAMES = ("energy", "qm9")
SCHEDULERS = ("cosine", "cosine_time", "cosine_cpu", "plateau")
QM9_ATOMREF = ("auto", "fit", "dataset", "none")

_SINET_KEYS = None


def _sinet_keys():
    global _SINET_KEYS
    if _SINET_KEYS is None:
        from ..model import SINet

        params = inspect.signature(SINet.__init__).parameters
        _SINET_KEYS = [k for k in params if k not in ("self", "elements", "atomic_energies",
                                                        "energy_scale", "avg_num_neighbors")]
    return _SINET_KEYS


def _qm9_model_keys():
    from ..qm9.model import HEAD_KEYS, backbone_keys

    return [k for k in backbone_keys() if k != "avg_num_neighbors"] + list(HEAD_KEYS)


@dataclass
class TrainConfig:
    run_dir: str = "runs/sinet"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: Dict[str, Any] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    task: str = "energy"
    qm9: QM9Config = field(default_factory=QM9Config)

    def to_dict(self) -> Dict[str, Any]:
        """The sections this task reads (a config ``from_dict`` accepts again)."""
        out = {"run_dir": self.run_dir, "seed": self.seed, "task": self.task}
        if self.task == "qm9":
            out["qm9"] = dataclasses.asdict(self.qm9)
        else:
            out["data"] = dataclasses.asdict(self.data)
        out["model"] = dict(self.model)
        training = dataclasses.asdict(self.training)
        if self.task != "energy":
            for key in ENERGY_ONLY_TRAINING_KEYS:
                training.pop(key)
        out["training"] = training
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(raw, dict):
            raise ConfigError("the config must be a YAML mapping (key: value)")
        _check_keys(raw, ["run_dir", "seed", "task", "data", "qm9", "model", "training"], "")
        task = raw.get("task", "energy")
        if task not in TASK_NAMES:
            raise ConfigError(f"task must be one of {', '.join(TASK_NAMES)}, got {task!r}")
        for section in ("data", "qm9", "model", "training"):
            if raw.get(section) is not None and not isinstance(raw[section], dict):
                raise ConfigError(f"{section} must be a section (key: value pairs), "
                                  f"got {raw[section]!r}")
        data = dict(raw.get("data") or {})
        qm9 = dict(raw.get("qm9") or {})
        training = dict(raw.get("training") or {})
        model = dict(raw.get("model") or {})
        training_keys = [f.name for f in dataclasses.fields(TrainingConfig)]
        if task == "energy":
            if "qm9" in raw:
                raise ConfigError("the qm9 section is read only with 'task: qm9'; remove it or "
                                  "add 'task: qm9'")
            _check_keys(data, [f.name for f in dataclasses.fields(DataConfig)], "data.")
            _check_keys(training, training_keys, "training.")
            _check_keys(model, _sinet_keys() + ["elements", "init_from"], "model.")
        else:
            if "data" in raw:
                raise ConfigError("'task: qm9' takes its molecules from the qm9 section "
                                  "(target, split, train_subset, ...); remove the data section, "
                                  "which is for energy+force files")
            _check_keys(qm9, [f.name for f in dataclasses.fields(QM9Config)], "qm9.")
            energy_only = [k for k in training if k in ENERGY_ONLY_TRAINING_KEYS]
            if energy_only:
                raise ConfigError(
                    f"{', '.join('training.' + k for k in energy_only)} only apply to 'task: energy'; "
                    "a qm9 run minimises the L1 error of its standardised target")
            _check_keys(training, [k for k in training_keys if k not in ENERGY_ONLY_TRAINING_KEYS],
                        "training.")
            _check_keys(model, _qm9_model_keys(), "model.")
        for key in ("train", "valid", "test"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        if isinstance(training.get("freeze"), str):
            training["freeze"] = [training["freeze"]]
        if task == "energy":  # the types of SINet's keywords (lmax a whole number, zbl true or false, ...)
            from ..model import SINet

            model = _check_types(model, SINet.__init__, "model.")
        data = _check_types(data, DataConfig, "data.")
        training = _check_types(training, TrainingConfig, "training.")
        qm9 = _check_types(qm9, QM9Config, "qm9.")
        _check_types({k: raw[k] for k in ("run_dir", "seed") if k in raw}, cls, "")
        config = cls(run_dir=str(raw.get("run_dir", cls.run_dir)), seed=int(raw.get("seed", 0)),
                     data=DataConfig(**data), model=model, training=TrainingConfig(**training),
                     task=task, qm9=QM9Config(**qm9))
        config.validate()
        return config

    def validate(self) -> None:
        t = self.training
        if self.task == "qm9":
            self._validate_qm9()
        elif not self.data.train:
            raise ConfigError("data.train lists no files")
        if t.scheduler not in SCHEDULERS:
            raise ConfigError(f"training.scheduler must be one of {', '.join(SCHEDULERS)}, "
                              f"got {t.scheduler!r}")
        if t.scheduler.startswith("cosine_") and not (t.max_minutes and t.max_minutes > 0):
            raise ConfigError(f"training.scheduler {t.scheduler!r} decays the learning rate over "
                              "the training-time budget: set training.max_minutes (> 0)")
        if t.dtype not in ("float32", "float64"):
            raise ConfigError(f"training.dtype must be 'float32' or 'float64', got {t.dtype!r}")
        if t.epochs < 1 or t.batch_size < 1:
            raise ConfigError("training.epochs and training.batch_size must be >= 1")
        if t.stage2_start is not None and not 0 < t.stage2_start < 1:
            raise ConfigError("training.stage2_start is the fraction of the schedule after which "
                              f"the second loss stage starts: between 0 and 1, got {t.stage2_start}")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ConfigError(f"training.ema_decay must be in [0, 1), got {t.ema_decay}")
        if self.task == "energy":
            self._validate_energy_data()
        self._validate_finetune()

    def _validate_finetune(self) -> None:
        """``model.init_from`` and ``training.freeze`` (:mod:`sinet_ase.train.finetune`)."""
        from .finetune import FREEZABLE

        init, freeze = self.model.get("init_from"), self.training.freeze
        if init is not None and (not isinstance(init, str) or not init):
            raise ConfigError("model.init_from must be the path of a model file or the name of "
                              f"a shipped potential, got {init!r}")
        if not isinstance(freeze, list) or any(part not in FREEZABLE for part in freeze):
            raise ConfigError(f"training.freeze must be a list of {', '.join(FREEZABLE)}, "
                              f"got {freeze!r}")
        if freeze and self.task != "energy":
            raise ConfigError("training.freeze applies to fine-tuning an energy model "
                              "(model.init_from), not to task " + self.task)
        if freeze and init is None:
            raise ConfigError("training.freeze keeps trained weights fixed: it needs "
                              "model.init_from (freezing a new model's random backbone "
                              "would leave it untrained)")

    def _validate_energy_data(self) -> None:
        """The label keys, E0s, per-config-type weights and loss of the energy task."""
        d, t = self.data, self.training
        if t.loss not in ("mse", "huber"):
            raise ConfigError(f"training.loss must be 'mse' or 'huber', got {t.loss!r}")
        if not (isinstance(t.huber_delta, (int, float)) and t.huber_delta > 0):
            raise ConfigError(f"training.huber_delta must be a positive number, got {t.huber_delta!r}")
        for key in ("energy_key", "forces_key", "stress_key", "virials_key", "config_type_key"):
            if not isinstance(getattr(d, key), str) or not getattr(d, key):
                raise ConfigError(f"data.{key} must be a non-empty string, got {getattr(d, key)!r}")
        if d.stress_convention not in ("ase", "vasp_kbar"):
            raise ConfigError(f"data.stress_convention must be 'ase' (eV/Å^3) or 'vasp_kbar' "
                              f"(VASP's raw kB, xx yy zz xy yz zx), got {d.stress_convention!r}")
        e0 = d.atomic_energies
        if isinstance(e0, dict):
            bad = {k: v for k, v in e0.items()
                   if isinstance(v, bool) or not isinstance(v, (int, float))}
            if bad:
                raise ConfigError(f"data.atomic_energies: values must be numbers (eV), got {bad}")
        elif not isinstance(e0, str) or not e0:
            raise ConfigError("data.atomic_energies must be 'fit', a mapping {symbol: eV} or the "
                              f"path of an isolated-atoms file, got {e0!r}")
        weights = d.config_type_weights
        if weights is not None:
            if not isinstance(weights, dict) or any(
                    isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                    for v in weights.values()):
                raise ConfigError("data.config_type_weights must map config types to numbers "
                                  f">= 0, e.g. {{Default: 1.0, slab: 0.1}}; got {weights!r}")


    def _validate_qm9(self) -> None:
        from ..data.qm9 import ATOMREF_COLUMNS, SPLIT_SCHEMES, TARGET_NAMES, TARGETS
        from ..qm9.model import POOLING

        q, m = self.qm9, self.model
        if q.target not in TARGET_NAMES:
            raise ConfigError(f"qm9.target must be one of {', '.join(TARGET_NAMES)}, got {q.target!r}")
        if q.split not in SPLIT_SCHEMES:
            raise ConfigError(f"qm9.split must be one of {', '.join(SPLIT_SCHEMES)}, got {q.split!r}")
        for key in ("train_subset", "valid_subset", "test_subset"):
            value = getattr(q, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"qm9.{key} must be a positive whole number or null, got {value!r}")
        if q.atomref not in QM9_ATOMREF:
            raise ConfigError(f"qm9.atomref must be one of {', '.join(QM9_ATOMREF)}, got {q.atomref!r}")
        target = TARGETS[q.target]
        if q.atomref == "dataset" and (target.raw_name not in ATOMREF_COLUMNS or target.atomref):
            raise ConfigError(
                f"qm9.atomref: dataset has no free-atom reference to add for {q.target!r} "
                "(the QM9 atomref table covers zpve, U0, U, H, G and Cv, and U0/U/H/G are already "
                "atomisation energies); use fit, none or auto")
        if q.target == "mu":
            if m.get("pooling") is not None:
                raise ConfigError("model.pooling does not apply to target mu (the dipole model "
                                  "sums charges times positions and atomic dipoles)")
            if q.atomref not in ("auto", "none"):
                raise ConfigError("qm9.atomref does not apply to target mu; use auto or none")
            if int(m.get("lmax", 2)) < 1:
                raise ConfigError("target mu needs type-1 features for the atomic dipoles: "
                                  "model.lmax must be >= 1")
        elif m.get("pooling") is not None and m["pooling"] not in POOLING:
            raise ConfigError(f"model.pooling must be one of {', '.join(POOLING)}, got {m['pooling']!r}")


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
        hint, getattr(hint, "__name__", str(hint)))


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
            raise ConfigError(f"{prefix}{key} = {value!r} ({type(value).__name__}): expected "
                              f"{_type_name(hints[key])}") from None
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
