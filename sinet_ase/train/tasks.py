"""What a training run learns: the *task* interface, and the energy + force task.

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
                               dataclass (``data``: :class:`DataConfig` for
                               the energy task)
``own_training_keys``          ``training`` keys only this task reads
                               (other tasks refuse them)
``resumable_section_keys``     keys of its section a resumed run may change
``model_keys()``               the keys its ``model`` section takes
``prepare_section(raw)``       normalise the raw section before type checks
``validate_config(config)``    the task's checks of a whole config
``describe_best(summary)``     one line about a finished run's best epoch
=============================  ==============================================

Tasks register themselves (:func:`sinet_ase.registry.register_task`) and the
config's ``task`` key selects one: ``energy`` (default; energy + force
potentials, this module), ``qm9`` (:class:`sinet_ase.qm9.task.QM9Task`) and ``nbody``
(:class:`sinet_ase.nbody.task.NBodyTask`).
"""

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import register_task, task_class, task_classes


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

    @classmethod
    def model_keys(cls) -> List[str]:
        """The keys the config's ``model`` section may hold."""
        raise NotImplementedError

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


@dataclass
class DataConfig:
    """The ``data`` section of the energy task (:mod:`sinet_ase.train.config` explains it)."""

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
    stress_convention: str = "ase"  # ase (eV/Å^3) | vasp_kbar (raw VASP kB, see labels)
    config_type_key: str = "config_type"
    atomic_energies: Union[str, Dict[str, float]] = "fit"
    config_type_weights: Optional[Dict[str, float]] = None


#: energy/force/stress weights: only the energy task has them
ENERGY_ONLY_TRAINING_KEYS = (
    "energy_weight",
    "forces_weight",
    "stress_weight",
    "stage2_start",
    "stage2_energy_weight",
    "stage2_forces_weight",
    "stage2_stress_weight",
    "loss",
    "huber_delta",
)


@register_task
class EnergyForceTask(Task):
    """Energy + force (+ stress) potentials from extxyz / ASE files: the ``SINet`` energy model.

    Loss per batch (``n_s`` atoms in structure ``s``, ``c_s`` its config-type weight,
    ``s(i)`` the structure of atom ``i``)::

        L = w_E mean_s c_s rho((E_s - E_s^ref) / n_s) + w_F mean_{i,a} c_s(i) rho(F_ia - F_ia^ref)
            + w_S mean_{s,ab} c_s rho(sigma_sab - sigma_sab^ref)

    with ``rho(r) = r^2`` (``training.loss: mse``) or the Huber function of
    ``training.huber_delta`` (``huber``). ``c_s`` comes from ``data.config_type_weights``
    (1 by default). The weights ``(w_E, w_F, w_S)`` switch to the ``stage2_*`` ones once the
    fraction ``training.stage2_start`` of the schedule is done (a larger ``w_E`` there
    tightens energies once forces are learned, as in MACE's final stage).

    E0s (``stats["atomic_energies"]``) follow ``data.atomic_energies``: an explicit mapping
    or isolated-atoms file, else the training files' isolated-atom frames, with the
    elements still missing fitted by least squares (:mod:`sinet_ase.data.atomic`).

    ``model.init_from`` starts from a model file or shipped potential, whose architecture,
    ``avg_num_neighbors``, ``energy_scale`` and weights the run keeps; new elements get
    fresh rows; ``training.freeze: [backbone]`` trains the energy head only
    (:mod:`sinet_ase.train.finetune`).
    """

    name = "energy"
    metric_keys = ("e_mae_mev_atom", "f_mae_mev_a")
    section, section_type = "data", DataConfig
    own_training_keys = ENERGY_ONLY_TRAINING_KEYS
    #: the model-file dictionary of ``model.init_from`` (set by :meth:`setup`), or None
    init = None
    #: statistics of the training data, exported with the model (:meth:`export_metadata`)
    domain = None

    # --- config ---
    @classmethod
    def model_keys(cls) -> List[str]:
        """:class:`~sinet_ase.SINet` keywords but those set from the data, plus ``elements``
        and ``init_from`` (fine-tuning)."""
        from ..model import SINet

        fitted = ("self", "elements", "atomic_energies", "energy_scale", "avg_num_neighbors")
        params = inspect.signature(SINet.__init__).parameters
        return [k for k in params if k not in fitted] + ["elements", "init_from"]

    @classmethod
    def prepare_section(cls, section: Dict[str, Any]) -> Dict[str, Any]:
        section = dict(section)
        for key in ("train", "valid", "test"):
            if isinstance(section.get(key), str):
                section[key] = [section[key]]
        return section

    @classmethod
    def validate_config(cls, config) -> None:
        """The files, label keys, E0s, per-config-type weights and loss of the energy task."""
        d, t = config.data, config.training
        if not d.train:
            raise ConfigError("data.train lists no files")
        if t.loss not in ("mse", "huber"):
            raise ConfigError(f"training.loss must be 'mse' or 'huber', got {t.loss!r}")
        if not (isinstance(t.huber_delta, (int, float)) and t.huber_delta > 0):
            raise ConfigError(f"training.huber_delta must be a positive number, got {t.huber_delta!r}")
        for key in ("energy_key", "forces_key", "stress_key", "virials_key", "config_type_key"):
            if not isinstance(getattr(d, key), str) or not getattr(d, key):
                raise ConfigError(f"data.{key} must be a non-empty string, got {getattr(d, key)!r}")
        if d.stress_convention not in ("ase", "vasp_kbar"):
            raise ConfigError(
                f"data.stress_convention must be 'ase' (eV/Å^3) or 'vasp_kbar' "
                f"(VASP's raw kB, xx yy zz xy yz zx), got {d.stress_convention!r}"
            )
        e0 = d.atomic_energies
        if isinstance(e0, dict):
            bad = {k: v for k, v in e0.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
            if bad:
                raise ConfigError(f"data.atomic_energies: values must be numbers (eV), got {bad}")
        elif not isinstance(e0, str) or not e0:
            raise ConfigError(
                "data.atomic_energies must be 'fit', a mapping {symbol: eV} or the "
                f"path of an isolated-atoms file, got {e0!r}"
            )
        weights = d.config_type_weights
        if weights is not None:
            if not isinstance(weights, dict) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in weights.values()
            ):
                raise ConfigError(
                    "data.config_type_weights must map config types to numbers "
                    f">= 0, e.g. {{Default: 1.0, slab: 0.1}}; got {weights!r}"
                )

    @classmethod
    def describe_best(cls, summary: Dict) -> str:
        best = summary.get("best", {})
        return f"valid F MAE {best.get('valid_f_mae_mev_a', float('nan')):.1f} meV/Å"

    def setup(self, quiet: bool = False) -> None:
        from ..data.atomic import average_num_neighbors, elements_of, force_rms, load_splits, to_graphs
        from ..labels import LabelKeys

        config, t, d = self.config, self.config.training, self.config.data
        self.init = None  # the model file of model.init_from, read before the data
        if config.model.get("init_from") is not None:
            from .finetune import read_init_model

            self.init = read_init_model(config.model["init_from"], config.model)
        keys = LabelKeys.from_config(d)
        frames, self.split_record = load_splits(
            d.train,
            d.valid,
            d.test,
            d.valid_size,
            d.test_size,
            config.seed,
            require_forces=t.forces_weight > 0,
            require_stress=d.require_stress or t.stress_weight > 0,
            keys=keys,
        )
        elements = config.model.get("elements") or elements_of(frames["train"])
        if self.init is not None:
            from .finetune import merged_elements

            elements = merged_elements(self.init, elements)
            new = [s for s in elements if s not in self.init["elements"]]
            if new and "backbone" in t.freeze:
                raise ConfigError(
                    f"training.freeze: [backbone] would keep the embedding of {', '.join(new)} "
                    f"(new to {self.init['path']}) at its random start; train the backbone "
                    "(no freeze) when the data brings new elements"
                )
        missing = set(elements_of(frames["train"])) - set(elements)
        if missing:
            raise ConfigError(f"model.elements lacks {sorted(missing)}, present in the training data")
        self.elements = list(elements)
        from ..hparams import DEFAULTS

        cutoff = float(self.model_keywords().get("cutoff", DEFAULTS.cutoff))
        self.graphs = {
            k: to_graphs(frames[k], cutoff, elements, keys, d.config_type_weights) for k in ("train", "valid", "test")
        }
        self.stats = {
            "atomic_energies": self.atomic_energies(frames, keys),
            "energy_scale": force_rms(frames["train"], keys) if t.forces_weight > 0 else 1.0,
            "avg_num_neighbors": average_num_neighbors(self.graphs["train"]),
        }
        if self.init is not None:  # they are part of the function the file's weights compute
            from .finetune import KEPT_FROM_FILE

            self.stats.update({k: float(self.init["config"][k]) for k in KEPT_FROM_FILE})
        self.stage = 1
        self.weights = self.loss_weights(1)

    def atomic_energies(self, frames: Dict, keys) -> Dict[str, float]:
        """E0 (eV) of each model element, as ``data.atomic_energies`` says (class docstring)."""
        from ..data.atomic import elements_of, fit_atomic_energies, isolated_atom_energies, read_atomic_energies

        spec = self.config.data.atomic_energies
        kept = {}  # fine-tuning: the file's E0s of elements the training data lacks
        if self.init is not None:
            present = set(elements_of(frames["train"]))
            kept = {s: float(e) for s, e in self.init["config"].get("atomic_energies", {}).items() if s not in present}
        if spec == "fit":
            known = isolated_atom_energies(frames["isolated_atom"], keys, "data.train")
            known = {s: e for s, e in known.items() if s in self.elements}
            return fit_atomic_energies(frames["train"], self.elements, keys, fixed={**kept, **known})
        given = {**kept, **read_atomic_energies(spec, keys)}
        lacking = [s for s in self.elements if s not in given]
        if lacking:
            raise ConfigError(f"data.atomic_energies gives no E0 for {', '.join(lacking)}")
        return {s: given[s] for s in self.elements}

    def check_resume(self, state: Dict) -> None:
        if state["stats"]["atomic_energies"].keys() != self.stats["atomic_energies"].keys():
            raise ConfigError("the checkpoint was trained on other elements than this config's data")
        before = state.get("config", {})
        for section, key, default in (("model", "init_from", None), ("training", "freeze", [])):
            then = before.get(section, {}).get(key, default)
            now = self.config.to_dict()[section].get(key, default)
            if then != now:
                raise ConfigError(
                    f"the checkpoint was trained with {section}.{key} {then!r}, "
                    f"this config has {now!r}; resume with the same value"
                )

    def model_keywords(self) -> Dict:
        """SINet keywords besides elements and the data statistics: the config's model
        keys, or the architecture of the ``model.init_from`` file."""
        if self.init is not None:
            from .finetune import architecture

            return architecture(self.init)
        return {k: v for k, v in self.config.model.items() if k != "elements"}

    def build_model(self) -> torch.nn.Module:
        from ..model import SINet

        model = SINet(
            elements=self.elements,
            avg_num_neighbors=self.stats["avg_num_neighbors"],
            atomic_energies=self.stats["atomic_energies"],
            energy_scale=self.stats["energy_scale"],
            **self.model_keywords(),
        )
        if self.init is not None:
            from .finetune import transfer_weights

            transfer_weights(model, self.init)
        if self.config.training.freeze:
            from .finetune import freeze

            freeze(model, self.config.training.freeze)
        return model

    def loss_weights(self, stage: int) -> Dict[str, float]:
        """``{"energy", "forces", "stress"}`` loss weights of loss stage 1 or 2."""
        t = self.config.training
        weights = {"energy": t.energy_weight, "forces": t.forces_weight, "stress": t.stress_weight}
        if stage == 2:
            for key in weights:
                stage2 = getattr(t, f"stage2_{key}_weight")
                if stage2 is not None:
                    weights[key] = stage2
        return weights

    def begin_epoch(self, progress: float) -> bool:
        start = self.config.training.stage2_start
        stage = 2 if start is not None and progress >= start else 1
        changed = stage != self.stage
        self.stage, self.weights = stage, self.loss_weights(stage)
        return changed

    def state_dict(self) -> Dict:
        return {"stage": self.stage}

    def load_state_dict(self, state: Dict) -> None:
        self.stage = int(state.get("stage", 1))
        self.weights = self.loss_weights(self.stage)

    def train_forward(self, model, batch):
        t = self.config.training
        return model(batch, compute_forces=t.forces_weight > 0, compute_stress=t.stress_weight > 0, training=True)

    def _penalty(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Elementwise ``rho(pred - ref)``: squared error, or Huber (``training.loss``)."""
        t = self.config.training
        if t.loss == "huber":
            return torch.nn.functional.huber_loss(pred, ref, reduction="none", delta=t.huber_delta)
        return (pred - ref) ** 2

    def loss(self, out, batch) -> torch.Tensor:
        t = self.config.training
        w = self.weights
        n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(torch.float64)
        c = getattr(batch, "weight", None)
        c = torch.ones_like(n_atoms) if c is None else c.to(torch.float64)
        loss = w["energy"] * (c * self._penalty(out["energy"] / n_atoms, batch.energy / n_atoms)).mean()
        if t.forces_weight > 0:
            loss = loss + w["forces"] * (c[batch.batch, None] * self._penalty(out["forces"], batch.forces)).mean()
        if t.stress_weight > 0:
            loss = loss + w["stress"] * (c[:, None, None] * self._penalty(out["stress"], batch.stress)).mean()
        return loss

    def evaluate(self, model, batches, keep: bool = False) -> Dict:
        """Loss and MAEs: energy per atom (meV/atom), forces (meV/Å)."""
        t = self.config.training
        sums = {"loss": 0.0, "e": 0.0, "f": 0.0, "n_struct": 0, "n_f": 0}
        kept = {"f_ref": [], "f_pred": []}
        for batch in batches:
            out = model(batch, compute_forces=True, compute_stress=t.stress_weight > 0)
            out = {k: v.detach() for k, v in out.items()}
            n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(torch.float64)
            sums["loss"] += float(self.loss(out, batch)) * batch.num_graphs
            sums["e"] += float(((out["energy"] - batch.energy).abs() / n_atoms).sum())
            sums["n_struct"] += batch.num_graphs
            if hasattr(batch, "forces") and batch.forces is not None:
                sums["f"] += float((out["forces"] - batch.forces).abs().sum())
                sums["n_f"] += batch.forces.numel()
                if keep:
                    kept["f_ref"].append(batch.forces.cpu().numpy())
                    kept["f_pred"].append(out["forces"].cpu().numpy())
        result = {
            "loss": sums["loss"] / max(sums["n_struct"], 1),
            "e_mae_mev_atom": 1000 * sums["e"] / max(sums["n_struct"], 1),
            "f_mae_mev_a": 1000 * sums["f"] / max(sums["n_f"], 1),
        }
        if keep:
            result["kept"] = {k: np.concatenate(v) if v else np.zeros((0, 3)) for k, v in kept.items()}
        return result

    def progress(self, valid: Dict) -> str:
        return f"valid E MAE {valid['e_mae_mev_atom']:.2f} meV/atom  F MAE {valid['f_mae_mev_a']:.1f} meV/Å"

    def export_metadata(self) -> Dict:
        """The training domain, which the calculator checks structures against."""
        if self.domain is None:
            from ..domain import training_domain

            self.domain = training_domain(self.graphs["train"], self.stats.get("atomic_energies"))
        return {"training_domain": self.domain}

    def export(self, model, path: Path, metadata: Dict) -> None:
        from ..io import save_model

        save_model(model, path, metadata=metadata)

    def load_exported(self, path: Path) -> torch.nn.Module:
        from ..io import load_model

        return load_model(path, task="potential")

    def report(self, run_dir: Path, history, kept, which: str) -> None:
        from .report import plot_force_parity, plot_learning_curve

        plot_learning_curve(history, run_dir / "learning_curve.png")
        plot_force_parity(kept["f_ref"], kept["f_pred"], run_dir / "force_parity.png", f"best model, {which} set")


def describe_best(summary: Dict) -> str:
    """One line about the best epoch of a finished run, for the command line."""
    cls = task_class(summary.get("task", "energy")) or Task
    return cls.describe_best(summary)
