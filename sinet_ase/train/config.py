"""One YAML file per run, checked before anything else happens.

Sections and keys (defaults in the dataclasses below)::

    run_dir: runs/my_potential       # checkpoints, logs, plots, best_model.pt
    seed: 0
    data:   {train: [files], valid: [files] | null, test: [files] | null,
             valid_size: 0.05, test_size: 0.0, require_stress: false}
    model:  {cutoff: 5.0, lmax: 2, channels: 64, num_layers: 2, ...}  # SINet keywords
    training: {epochs: 100, batch_size: 8, lr: 1e-3, ...}

A key that does not exist is a :class:`ConfigError` that lists the valid
ones; command-line overrides use dotted keys (``training.epochs=5``).
"""

import dataclasses
import inspect
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


@dataclass
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 8
    valid_batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "cosine"            # "cosine" (after linear warm-up) or "plateau"
    warmup_epochs: int = 1
    min_lr: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    ema_decay: float = 0.99
    energy_weight: float = 1.0            # on (energy error per atom)^2, eV^2
    forces_weight: float = 100.0          # on force component error^2, (eV/Å)^2
    stress_weight: float = 0.0
    grad_clip: float = 10.0
    patience: int = 50                    # early stopping: epochs without validation gain
    max_minutes: Optional[float] = None   # stop after this wall time (resume later)
    dtype: str = "float32"
    device: str = "cpu"
    num_threads: Optional[int] = None


_SINET_KEYS = None


def _sinet_keys():
    global _SINET_KEYS
    if _SINET_KEYS is None:
        from ..model import SINet

        params = inspect.signature(SINet.__init__).parameters
        _SINET_KEYS = [k for k in params if k not in ("self", "elements", "atomic_energies",
                                                        "energy_scale", "avg_num_neighbors")]
    return _SINET_KEYS


@dataclass
class TrainConfig:
    run_dir: str = "runs/sinet"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: Dict[str, Any] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(raw, dict):
            raise ConfigError("the config must be a YAML mapping (key: value)")
        _check_keys(raw, [f.name for f in dataclasses.fields(cls)], "")
        data = raw.get("data") or {}
        training = raw.get("training") or {}
        model = raw.get("model") or {}
        _check_keys(data, [f.name for f in dataclasses.fields(DataConfig)], "data.")
        _check_keys(training, [f.name for f in dataclasses.fields(TrainingConfig)], "training.")
        _check_keys(model, _sinet_keys() + ["elements"], "model.")
        for key in ("train", "valid", "test"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        config = cls(run_dir=str(raw.get("run_dir", cls.run_dir)), seed=int(raw.get("seed", 0)),
                     data=DataConfig(**data), model=dict(model), training=TrainingConfig(**training))
        config.validate()
        return config

    def validate(self) -> None:
        t = self.training
        if not self.data.train:
            raise ConfigError("data.train lists no files")
        if t.scheduler not in ("cosine", "plateau"):
            raise ConfigError(f"training.scheduler must be 'cosine' or 'plateau', got {t.scheduler!r}")
        if t.dtype not in ("float32", "float64"):
            raise ConfigError(f"training.dtype must be 'float32' or 'float64', got {t.dtype!r}")
        if t.epochs < 1 or t.batch_size < 1:
            raise ConfigError("training.epochs and training.batch_size must be >= 1")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ConfigError(f"training.ema_decay must be in [0, 1), got {t.ema_decay}")


def _check_keys(section: Dict[str, Any], allowed: List[str], prefix: str) -> None:
    unknown = [k for k in section if k not in allowed]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys here: "
            f"{', '.join(prefix + k for k in allowed)}"
        )


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
