r"""The ``nbody`` training task: the charged N-body benchmark on the shared trainer.

Selected by ``task: nbody`` in a training config (``sinet-train training/nbody.yaml``);
the shared :class:`~sinet_ase.train.trainer.Trainer` brings the optimiser, schedule, EMA,
checkpoints and exact resume, early stopping, ``max_minutes``, the CSV log and plots.
This module supplies (see :mod:`sinet_ase.train.tasks`):

* data: :func:`~sinet_ase.nbody.dataset.load_nbody_dataset` with the ``nbody`` section's
  sizes and ``dataset_seed`` (3,000 / 2,000 / 2,000 trajectories, seed 42: the benchmark).
  A sample is one system at frame 30, ``x, v (5, 3)``, ``q (5,)``, and its displacement to
  frame 40, ``dx = target - x`` (formed in float64, then cast to ``training.dtype``).
  ``nbody.input_frames: [k, ...]`` trains on the pairs frame ``k`` -> ``k + 10`` of the
  training trajectories instead (:func:`~sinet_ase.nbody.dataset.training_frame_pairs`);
  ``nbody.time_reversal`` appends the training pairs run backwards
  (:func:`~sinet_ase.nbody.dataset.time_reversed`). Validation and test stay frame 30 -> 40.
* model: :class:`~sinet_ase.nbody.model.NBodySINet` with the ``model`` section as keywords.
* loss: the MSE over all coordinates of the predicted displacement,
  ``mean_{s,i,a} (dx_pred - dx)^2`` (the EGNN / SEGNN protocol); the logged metric
  ``valid_mse`` is the same MSE summed in float64 (the benchmark's number).
* export: ``best_model.pt`` in the :mod:`sinet_ase.io` format
  (:func:`~sinet_ase.nbody.model.load_nbody_model`); ``sinet-eval best_model.pt test.npz``
  scores it (:mod:`sinet_ase.nbody.evaluate`).

The protocol's optimiser is Adam with a constant learning rate and no EMA or gradient
clipping: ``training.optimizer: adam``, ``scheduler: constant``, ``warmup_epochs: 0``,
``ema_decay: 0``, ``grad_clip: 0`` (``training/nbody.yaml``). With those, one epoch
equals one epoch of the former N-body loop up to the order of the samples (the shared
trainer draws epoch ``k``'s order from ``seed + k``; the former loop drew it from a torch
generator seeded with ``seed + 1``; ``tests/nbody_former_loop.py`` keeps that loop as the
reference the task is tested against); :func:`config_from_legacy` translates a config of
that loop (``python -m sinet_ase.nbody.train``, deprecated, runs recipes of its format).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import register_task
from ..train.tasks import Task
from . import simulator as sim
from .model import NBodySINet, load_nbody_model, save_nbody_model

__all__ = ["NBodyConfig", "NBodyTask", "NBodySamples", "NBodyBatch", "LEGACY_DEFAULTS", "config_from_legacy"]


@dataclass
class NBodyConfig:
    """The ``nbody`` section of a ``task: nbody`` config."""

    cache_dir: Optional[str] = None  # data cache (default $SINET_ASE_CACHE/nbody or ~/.cache/sinet_ase/nbody)
    dataset_seed: int = 42  # the benchmark's data set (with the sizes below)
    n_train: int = 3000
    n_valid: int = 2000
    n_test: int = 2000
    time_reversal: bool = False  # also train on the training pairs run backwards
    input_frames: Optional[List[int]] = field(default=None)  # training pairs k -> k + 10 (None: 30 only)


@dataclass
class NBodyBatch:
    """Systems of one batch: ``x, v, dx (B, n, 3)``, ``q (B, n)``."""

    x: torch.Tensor
    v: torch.Tensor
    q: torch.Tensor
    dx: torch.Tensor

    def to(self, device) -> "NBodyBatch":
        return NBodyBatch(*(t.to(device) for t in (self.x, self.v, self.q, self.dx)))


class NBodySamples:
    """One split as tensors (``x, v, dx (N, n, 3)``, ``q (N, n)``): ``len()`` systems,
    indexed by :meth:`batch`."""

    def __init__(self, split: Dict[str, np.ndarray], dtype: torch.dtype):
        from .evaluate import split_to_tensors

        t = split_to_tensors(split, dtype)
        self.x, self.v, self.q, self.dx = t["x"], t["v"], t["q"], t["dx"]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, indices) -> NBodyBatch:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return NBodyBatch(self.x[idx], self.v[idx], self.q[idx], self.dx[idx])


def _model_keys() -> List[str]:
    import inspect

    return [k for k in inspect.signature(NBodySINet.__init__).parameters if k != "self"]


@register_task
class NBodyTask(Task):
    name = "nbody"
    metric_keys = ("mse",)
    section, section_type = "nbody", NBodyConfig
    resumable_section_keys = ("cache_dir",)

    # --- config ---
    @classmethod
    def model_keys(cls) -> List[str]:
        """:class:`~sinet_ase.nbody.model.NBodySINet`'s keywords."""
        return _model_keys()

    @classmethod
    def validate_config(cls, config) -> None:
        n = config.nbody
        for key in ("n_train", "n_valid", "n_test"):
            value = getattr(n, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"nbody.{key} must be a positive whole number, got {value!r}")
        if n.input_frames is not None:
            horizon, last = sim.TARGET_FRAME - sim.INPUT_FRAME, sim.N_FRAMES - 1
            frames = n.input_frames
            if not frames or any(
                not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= last - horizon for k in frames
            ):
                raise ConfigError(
                    f"nbody.input_frames must list frames k with 0 <= k <= "
                    f"{last - horizon} (the target k + {horizon} must be recorded), "
                    f"got {frames!r}"
                )
        try:  # a few milliseconds; every keyword's type and value checked by the model itself
            NBodySINet(**config.model)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model: {err}") from None

    @classmethod
    def describe_best(cls, summary: Dict) -> str:
        best = summary.get("best", {})
        return f"valid MSE {best.get('valid_mse', float('nan')):.6f}"

    # --- data ---
    def setup(self, quiet: bool = False) -> None:
        from .dataset import load_nbody_dataset, time_reversed, training_frame_pairs

        n = self.config.nbody
        dtype = {"float32": torch.float32, "float64": torch.float64}[self.config.training.dtype]
        data = load_nbody_dataset(n.cache_dir, n.n_train, n.n_valid, n.n_test, n.dataset_seed, verbose=not quiet)
        train = data["train"]
        if n.input_frames is not None:
            train = training_frame_pairs(n.input_frames, n.dataset_seed, n.n_train)
        if n.time_reversal:
            back = time_reversed(train)
            train = {k: np.concatenate([train[k], back[k]]) for k in ("x", "v", "q", "target")}
        self.graphs = {
            "train": NBodySamples(train, dtype),
            "valid": NBodySamples(data["valid"], dtype),
            "test": NBodySamples(data["test"], dtype),
        }
        self.split_record = {
            "format": "sinet_ase.nbody_split/1",
            "dataset_seed": n.dataset_seed,
            "n_train": n.n_train,
            "n_valid": n.n_valid,
            "n_test": n.n_test,
            "input_frames": n.input_frames,
            "time_reversal": n.time_reversal,
            "train_samples": len(self.graphs["train"]),
        }
        self.stats = {}

    def collate(self, samples: NBodySamples, indices) -> NBodyBatch:
        return samples.batch(indices)

    # --- model ---
    def build_model(self) -> torch.nn.Module:
        model = NBodySINet(**self.config.model)
        self.num_parameters = model.num_parameters()
        return model

    # --- loss and metrics ---
    def train_forward(self, model, batch: NBodyBatch):
        if isinstance(model, NBodySINet):
            return {"dx": model.displacement(batch.x, batch.v, batch.q)}
        # a DistributedDataParallel wrapper: its forward (positions) keeps the gradients in sync
        return {"dx": model(batch.x, batch.v, batch.q) - batch.x}

    def loss(self, out, batch: NBodyBatch) -> torch.Tensor:
        return torch.nn.functional.mse_loss(out["dx"], batch.dx)

    def evaluate(self, model, batches, keep: bool = False) -> Dict:
        """``loss`` and ``mse``: the MSE over all coordinates, summed in float64."""
        total, count = 0.0, 0
        kept = {"ref": [], "pred": []}
        with torch.no_grad():
            for batch in batches:
                pred = model.displacement(batch.x, batch.v, batch.q).double()
                total += float(((pred - batch.dx.double()) ** 2).sum())
                count += pred.numel()
                if keep:
                    kept["ref"].append(batch.dx.double().cpu().numpy().ravel())
                    kept["pred"].append(pred.cpu().numpy().ravel())
        mse = total / max(count, 1)
        result = {"loss": mse, "mse": mse}
        if keep:
            result["kept"] = {k: np.concatenate(v) if v else np.zeros(0) for k, v in kept.items()}
        return result

    def progress(self, valid: Dict) -> str:
        return f"valid MSE {valid['mse']:.6f}"

    # --- files and reports ---
    def export(self, model, path: Path, metadata: Dict) -> None:
        save_nbody_model(model, path, metadata)

    def load_exported(self, path: Path) -> torch.nn.Module:
        return load_nbody_model(path)

    def summary_extra(self) -> Dict:
        return {"num_parameters": getattr(self, "num_parameters", None)}

    def report(self, run_dir: Path, history, kept, which: str) -> None:
        from ..train.report import plot_learning_curve, plot_parity

        plot_learning_curve(history, run_dir / "learning_curve.png", panels=[("valid_mse", "valid MSE")])
        plot_parity(
            kept["ref"],
            kept["pred"],
            run_dir / "parity.png",
            f"best model, {which} set",
            quantity="displacement component",
            unit="length",
        )


#: the former loop's config (sections ``model``, ``data``, ``train``) where a recipe of its
#: format leaves an entry out; :func:`config_from_legacy` fills them in
LEGACY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "model": dict(
        lmax=1,
        channels=16,
        num_layers=2,
        num_radial=8,
        radial_cutoff=10.0,
        radial_hidden=16,
        mlp_hidden=32,
        avg_num_neighbors=4.0,
    ),
    "data": dict(cache_dir=None, seed=42, n_train=3000, n_valid=2000, n_test=2000),
    "train": dict(
        seed=0,
        lr=5e-4,
        weight_decay=1e-12,
        batch_size=100,
        epochs=1000,
        eval_every=5,
        dtype="float32",
        threads=1,
        device="cpu",
        max_minutes=None,
        lr_schedule="constant",
        schedule_epochs=None,
        lr_min=0.0,
        ema_decay=None,
        time_reversal=False,
        input_frames=None,
    ),
}

#: ``train`` keys of the former loop that the shared trainer reads under another name
_LEGACY_TRAINING = {
    "lr": "lr",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "eval_every": "valid_every",
    "dtype": "dtype",
    "threads": "num_threads",
    "max_minutes": "max_minutes",
    "lr_min": "min_lr",
}


def config_from_legacy(legacy: Dict[str, Any], run_dir: Optional[str] = None) -> Dict[str, Any]:
    """A raw ``sinet-train`` config (``task: nbody``) that trains what ``legacy``, a config
    of the former loop (sections ``model``, ``data``, ``train``; entries left out take
    :data:`LEGACY_DEFAULTS`), trained: Adam, its schedule without warm-up, no gradient
    clipping, EMA only with ``train.ema_decay``, no early stopping."""
    from .evaluate import resolve_device

    model, data, train = ({**LEGACY_DEFAULTS[k], **(legacy.get(k) or {})} for k in ("model", "data", "train"))
    unknown = sorted(set(train) - set(LEGACY_DEFAULTS["train"]))
    if unknown:
        raise ConfigError(f"train.{unknown[0]} has no counterpart in sinet-train")
    training = {new: train[old] for old, new in _LEGACY_TRAINING.items() if train.get(old) is not None}
    schedule = train.get("lr_schedule") or "constant"
    if schedule == "cosine" and train.get("schedule_epochs") not in (None, train.get("epochs")):
        raise ConfigError(
            "train.schedule_epochs other than train.epochs: sinet-train's cosine schedule decays over training.epochs"
        )
    training.update(
        optimizer="adam",
        scheduler=schedule,
        warmup_epochs=0,
        grad_clip=0.0,
        ema_decay=float(train.get("ema_decay") or 0.0),
        min_lr=float(train.get("lr_min") or 0.0),
        device=str(resolve_device(train.get("device"))),
        valid_batch_size=int(train.get("batch_size", 100)),
        patience=int(train.get("epochs", 1000)),
    )  # the former loop never stopped early
    nbody = {
        "cache_dir": data.get("cache_dir"),
        "dataset_seed": data.get("seed", 42),
        **{k: data[k] for k in ("n_train", "n_valid", "n_test") if k in data},
        "time_reversal": bool(train.get("time_reversal", False)),
        "input_frames": train.get("input_frames"),
    }
    raw = {"task": "nbody", "seed": int(train.get("seed", 0)), "model": model, "nbody": nbody, "training": training}
    if run_dir is not None:
        raw["run_dir"] = str(run_dir)
    return raw
