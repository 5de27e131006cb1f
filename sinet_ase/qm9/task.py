r"""The ``qm9`` training task: one QM9 target, L1 loss on the standardised target.

Selected by ``task: qm9`` in a training config (``sinet-train
training/qm9_gap.yaml``); the shared :class:`~sinet_ase.train.trainer.Trainer`
brings EMA, schedule, checkpoints and exact resume, the CSV log, progress and
plots. This module supplies (see :mod:`sinet_ase.train.tasks`):

* data: :func:`~sinet_ase.qm9.cache.load_qm9`, the ``qm9.split`` split
  (``paper``: 110,000 / 10,000 / 10,831) with seed ``qm9.split_seed``;
  ``qm9.train_subset`` / ``valid_subset`` / ``test_subset`` draw that many
  molecules of each part (seeded by the run ``seed``); graphs with the run's
  cutoff, the target as ``y`` in the units of Table 1 (meV, bohr^3, D).
* statistics of the *training* molecules: per-element atom references
  (``qm9.atomref``: ``auto`` = least-squares fit for sum-pooled targets,
  none for the mean-pooled orbital energies; ``fit``; ``dataset`` = the QM9
  free-atom table, where it has the target; ``none``), the mean and standard
  deviation of the target minus its references, the average neighbour count.
* model: :class:`~sinet_ase.qm9.model.QM9ScalarModel` (pooling ``model.pooling``,
  default ``mean`` for homo/lumo/gap and ``sum`` otherwise), or
  :class:`~sinet_ase.qm9.model.QM9DipoleModel` for ``mu`` (the prediction is
  ``|mu|``).
* loss: ``mean_s |y_pred,s - y_s| / target_std``, the L1 error of the
  standardised target; the logged metric ``valid_mae`` is the MAE in the
  target's unit.
* export: ``best_model.pt`` in the :mod:`sinet_ase.io` format
  (:func:`~sinet_ase.qm9.model.load_qm9_model`), metadata naming target,
  unit and split; ``python -m sinet_ase.qm9.evaluate RUN_DIR`` tests it on
  the full test split.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .split import qm9_split
from .targets import TARGETS
from ..errors import ConfigError
from ..hparams import DEFAULTS
from ..registry import register_task
from ..train.tasks import Task
from .data import (
    dataset_atom_refs,
    element_counts,
    fit_atom_refs,
    qm9_dataset,
    qm9_graphs,
    residual_statistics,
    subset_rows,
)
from .model import HEAD_KEYS, POOLING, QM9_ELEMENTS, backbone_keys, build_qm9_model, default_pooling, load_qm9_model

#: the part of the config a checkpoint must share to be resumed
_RESUME_KEYS = ("target", "split", "split_seed", "train_subset", "atomref")
QM9_ATOMREF = ("auto", "fit", "dataset", "none")


@dataclass
class QM9Config:
    """The ``qm9`` section of a ``task: qm9`` config."""

    target: str = "gap"  # one of sinet_ase.qm9.targets.TARGET_NAMES
    split: str = "paper"  # paper (110k/10k/10,831) | egnn (100k/17,748/13,083)
    split_seed: int = 0  # seed of the split permutation (0: Cormorant's)
    train_subset: Optional[int] = None  # train on this many molecules of the training split
    valid_subset: Optional[int] = None  # validate every epoch on this many of the valid split
    test_subset: Optional[int] = None  # test the best model at the end on this many (None: all)
    atomref: str = "auto"  # auto | fit | dataset | none (per-element references)
    cache_dir: Optional[str] = None  # QM9 cache folder (default: load_qm9's)


@register_task
class QM9Task(Task):
    name = "qm9"
    metric_keys = ("mae",)
    section, section_type = "qm9", QM9Config
    resumable_section_keys = ("test_subset", "cache_dir")

    # --- config ---
    @classmethod
    def model_keys(cls) -> List[str]:
        """Backbone keywords (``avg_num_neighbors`` is set from the data) and head keywords."""
        return [k for k in backbone_keys() if k != "avg_num_neighbors"] + list(HEAD_KEYS)

    @classmethod
    def validate_config(cls, config) -> None:
        from .split import SPLIT_SCHEMES
        from .targets import ATOMREF_COLUMNS, TARGET_NAMES

        q, m = config.qm9, config.model
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
                "atomisation energies); use fit, none or auto"
            )
        if q.target == "mu":
            if m.get("pooling") is not None:
                raise ConfigError(
                    "model.pooling does not apply to target mu (the dipole model "
                    "sums charges times positions and atomic dipoles)"
                )
            if q.atomref not in ("auto", "none"):
                raise ConfigError("qm9.atomref does not apply to target mu; use auto or none")
            if int(m.get("lmax", DEFAULTS.lmax)) < 1:
                raise ConfigError("target mu needs type-1 features for the atomic dipoles: model.lmax must be >= 1")
        elif m.get("pooling") is not None and m["pooling"] not in POOLING:
            raise ConfigError(f"model.pooling must be one of {', '.join(POOLING)}, got {m['pooling']!r}")

    @classmethod
    def describe_best(cls, summary: Dict) -> str:
        best = summary.get("best", {})
        return (
            f"valid {summary.get('target', '')} MAE {best.get('valid_mae', float('nan')):.4g} {summary.get('unit', '')}"
        )

    def __init__(self, config):
        super().__init__(config)
        self.target = config.qm9.target
        self.unit = TARGETS[self.target].unit

    # --- data and statistics ---
    def setup(self, quiet: bool = False) -> None:
        config, q = self.config, self.config.qm9
        data = qm9_dataset(q.cache_dir)
        split = qm9_split(len(data), q.split, q.split_seed)
        rows = {
            "train": subset_rows(split.train, q.train_subset, config.seed),
            "valid": subset_rows(split.valid, q.valid_subset, config.seed + 1),
            "test": subset_rows(split.test, q.test_subset, config.seed + 2),
        }
        cutoff = float(config.model.get("cutoff", DEFAULTS.cutoff))
        self.graphs = {
            k: qm9_graphs(data, v, cutoff, QM9_ELEMENTS, self.target, progress=not quiet, desc=f"QM9 {k} graphs")
            for k, v in rows.items()
        }
        self.split_record = {
            "format": "sinet_ase.qm9_split/1",
            "scheme": q.split,
            "seed": q.split_seed,
            "n_total": len(data),
            "target": self.target,
            "subsets": {
                "train_subset": q.train_subset,
                "valid_subset": q.valid_subset,
                "test_subset": q.test_subset,
                "subset_seed": config.seed,
            },
            "sizes": {k: int(len(v)) for k, v in rows.items()},
            **{k: v.tolist() for k, v in rows.items()},
            **{f"{k}_qm9_index": data.index[v].astype(np.int64).tolist() for k, v in rows.items()},
        }
        edges = sum(int(g.edge_index.shape[1]) for g in self.graphs["train"])
        atoms = sum(int(g.pos.shape[0]) for g in self.graphs["train"])
        values = data.target(self.target)[rows["train"]]
        stats = {"target": self.target, "unit": self.unit, "avg_num_neighbors": max(edges / max(atoms, 1), 1.0)}
        if self.target == "mu":
            stats["target_std"] = float(values.std()) or 1.0
        else:
            pooling = config.model.get("pooling") or default_pooling(self.target)
            mode = q.atomref
            if mode == "auto":
                mode = "fit" if pooling == "sum" else "none"
            counts = element_counts(data, rows["train"], QM9_ELEMENTS)
            if mode == "fit":
                refs = fit_atom_refs(counts, values, QM9_ELEMENTS)
            elif mode == "dataset":
                refs = dataset_atom_refs(self.target, QM9_ELEMENTS)
            else:
                refs = {s: 0.0 for s in QM9_ELEMENTS}
            mean, std = residual_statistics(values, counts, refs, QM9_ELEMENTS)
            stats.update(pooling=pooling, atomref=mode, atom_refs=refs, target_mean=mean, target_std=std)
        self.stats = stats

    def check_resume(self, state: Dict) -> None:
        stored = (state.get("config") or {}).get("qm9") or {}
        now = vars(self.config.qm9)
        diff = [k for k in _RESUME_KEYS if stored.get(k) != now.get(k)]
        if state.get("stats", {}).get("target") != self.target or diff:
            raise ConfigError(
                f"the checkpoint was trained with a different qm9 section ({', '.join(diff) or 'target'}: "
                f"{ {k: stored.get(k) for k in diff} } there, { {k: now.get(k) for k in diff} } here); "
                "resume it with its own config, or start a new run_dir"
            )
        # the model constants are those the checkpoint was trained with
        self.stats = state["stats"]

    # --- model ---
    def model_config(self) -> Dict:
        s = self.stats
        keys = backbone_keys() + ("head_hidden",)
        config = {k: v for k, v in self.config.model.items() if k in keys}
        config.update(
            elements=list(QM9_ELEMENTS),
            target=self.target,
            avg_num_neighbors=s["avg_num_neighbors"],
            target_std=s["target_std"],
        )
        if self.target != "mu":
            config.update(pooling=s["pooling"], target_mean=s["target_mean"], atom_refs=s["atom_refs"])
        return config

    def build_model(self) -> torch.nn.Module:
        return build_qm9_model(self.model_config())

    # --- loss and metrics ---
    def train_forward(self, model, batch):
        return model(batch)

    def loss(self, out, batch) -> torch.Tensor:
        return (out["prediction"] - batch.y).abs().mean() / self.stats["target_std"]

    def evaluate(self, model, batches, keep: bool = False) -> Dict:
        """``loss`` (standardised L1) and ``mae`` (target unit) over ``batches``."""
        abs_sum, count = 0.0, 0
        kept = {"ref": [], "pred": []}
        with torch.no_grad():
            for batch in batches:
                pred = model(batch)["prediction"]
                abs_sum += float((pred - batch.y).abs().sum())
                count += batch.num_graphs
                if keep:
                    kept["ref"].append(batch.y.cpu().numpy())
                    kept["pred"].append(pred.cpu().numpy())
        mae = abs_sum / max(count, 1)
        result = {"loss": mae / self.stats["target_std"], "mae": mae}
        if keep:
            result["kept"] = {k: np.concatenate(v) if v else np.zeros(0) for k, v in kept.items()}
        return result

    def progress(self, valid: Dict) -> str:
        return f"valid {self.target} MAE {valid['mae']:.4g} {self.unit}"

    # --- files and reports ---
    def export(self, model, path: Path, metadata: Dict) -> None:
        from .model import save_qm9_model

        q = self.config.qm9
        metadata = dict(
            metadata,
            target=self.target,
            unit=self.unit,
            split=q.split,
            split_seed=q.split_seed,
            train_subset=q.train_subset,
        )
        metadata.pop("elements", None)  # stored in the file already
        save_qm9_model(model, path, metadata)

    def load_exported(self, path: Path) -> torch.nn.Module:
        return load_qm9_model(path)

    def summary_extra(self) -> Dict:
        return {"target": self.target, "unit": self.unit}

    def report(self, run_dir: Path, history, kept, which: str) -> None:
        from ..train.report import plot_learning_curve, plot_parity

        plot_learning_curve(
            history, run_dir / "learning_curve.png", panels=[("valid_mae", f"valid {self.target} MAE ({self.unit})")]
        )
        plot_parity(
            kept["ref"],
            kept["pred"],
            run_dir / "parity.png",
            f"best model, {which} set",
            quantity=self.target,
            unit=self.unit,
        )


def read_split_record(run_dir: Path) -> Dict:
    """The ``split.json`` a QM9 run wrote (rows it trained, validated and tested on)."""
    return json.loads((Path(run_dir) / "split.json").read_text())
