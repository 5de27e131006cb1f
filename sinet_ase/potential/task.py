"""The ``energy`` training task: energy + force (+ stress) potentials from extxyz / ASE files.

The config's ``data`` section (:class:`DataConfig`) names the files and their labels;
:mod:`sinet_ase.potential.data` reads, splits and graphs them, and fits the E0s;
:mod:`sinet_ase.potential.finetune` starts a run from a model file (``model.init_from``).
The model is :class:`~sinet_ase.model.SINet` with its energy head; the exported file is the
one :class:`~sinet_ase.SINetCalculator` loads. The contract a task fulfils is
:class:`sinet_ase.train.tasks.Task`.

Data labels (:mod:`sinet_ase.labels`): ``energy_key``, ``forces_key``,
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

Fine-tuning (:mod:`sinet_ase.potential.finetune`): ``model.init_from`` names a
model file or a shipped potential (``sinet-xtb-md17``). The run starts from its weights and
takes its architecture (model keys given beside it must equal the file's, except
``elements``) and its ``avg_num_neighbors`` and ``energy_scale`` (they define the function
the weights compute). Elements of the data that the file lacks are added, with the rows of a
newly built model; the known elements keep theirs. The E0s follow ``data.atomic_energies``
on the new data as for a fresh model (``fit`` refits them; elements absent from the new
training data keep the file's). ``training.freeze: [backbone]`` (needs ``init_from``; not
with new elements) trains only the energy head: the backbone's parameters are not trained.
"""

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import register_task
from ..train.tasks import Task
from .finetune import FREEZABLE


@dataclass
class DataConfig:
    """The ``data`` section of the energy task (the module docstring explains it)."""

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
    "stage2_ramp",
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
    tightens energies once forces are learned, as in MACE's final stage); with
    ``training.stage2_ramp = r`` they move there over the fraction ``r`` of the schedule,
    ``w(f) = w_1^(1-f) w_2^f`` at the ramp's fraction ``f`` done (linear where a weight is 0).
    Validation always weighs with the full weights of the current stage, so that the losses
    of one stage compare from epoch to epoch.

    E0s (``stats["atomic_energies"]``) follow ``data.atomic_energies``: an explicit mapping
    or isolated-atoms file, else the training files' isolated-atom frames, with the
    elements still missing fitted by least squares (:mod:`sinet_ase.potential.data`).

    ``model.init_from`` starts from a model file or shipped potential, whose architecture,
    ``avg_num_neighbors``, ``energy_scale`` and weights the run keeps; new elements get
    fresh rows; ``training.freeze: [backbone]`` trains the energy head only
    (:mod:`sinet_ase.potential.finetune`).
    """

    name = "energy"
    metric_keys = ("e_mae_mev_atom", "f_mae_mev_a")
    section, section_type = "data", DataConfig
    own_training_keys = ENERGY_ONLY_TRAINING_KEYS
    freezable = FREEZABLE
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
    def model_key_types(cls):
        """SINet's constructor: its annotations type the model keys (lmax a whole number,
        zbl true or false, ...)."""
        from ..model import SINet

        return SINet.__init__

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

        cls._validate_finetune(config)

    @classmethod
    def _validate_finetune(cls, config) -> None:
        """``model.init_from`` and ``training.freeze`` (:mod:`sinet_ase.potential.finetune`;
        the config reader has checked that ``freeze`` names only :data:`FREEZABLE` parts)."""
        init, freeze = config.model.get("init_from"), config.training.freeze
        if init is not None and (not isinstance(init, str) or not init):
            raise ConfigError(
                f"model.init_from must be the path of a model file or the name of a shipped potential, got {init!r}"
            )
        if freeze and init is None:
            raise ConfigError(
                "training.freeze keeps trained weights fixed: it needs "
                "model.init_from (freezing a new model's random backbone "
                "would leave it untrained)"
            )

    @classmethod
    def describe_best(cls, summary: Dict) -> str:
        best = summary.get("best", {})
        return f"valid F MAE {best.get('valid_f_mae_mev_a', float('nan')):.1f} meV/Å"

    def setup(self, quiet: bool = False) -> None:
        from .data import average_num_neighbors, elements_of, force_rms, load_splits, to_graphs
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
            require_forces=self.fits("forces"),
            require_stress=d.require_stress or self.fits("stress"),
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
            "energy_scale": force_rms(frames["train"], keys) if self.fits("forces") else 1.0,
            "avg_num_neighbors": average_num_neighbors(self.graphs["train"]),
        }
        if self.init is not None:  # they are part of the function the file's weights compute
            from .finetune import KEPT_FROM_FILE

            self.stats.update({k: float(self.init["config"][k]) for k in KEPT_FROM_FILE})
        self.stage = 1
        self.weights = self.loss_weights(1)

    def atomic_energies(self, frames: Dict, keys) -> Dict[str, float]:
        """E0 (eV) of each model element, as ``data.atomic_energies`` says (class docstring)."""
        from .data import elements_of, fit_atomic_energies, isolated_atom_energies, read_atomic_energies

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

    def fits(self, key: str) -> bool:
        """Whether ``key`` (energy, forces, stress) has a positive loss weight in either stage:
        its labels are then required, and the model computes it in every stage."""
        return self.loss_weights(1)[key] > 0 or self.loss_weights(2)[key] > 0

    def ramped_weights(self, progress: float) -> Dict[str, float]:
        """The training loss weights at ``progress`` (fraction of the schedule done) in stage 2:
        stage 1's moved geometrically to stage 2's over ``training.stage2_ramp``."""
        t = self.config.training
        target = self.loss_weights(2)
        if not t.stage2_ramp:
            return target
        done = min(1.0, max(0.0, (progress - t.stage2_start) / t.stage2_ramp))
        weights = {}
        for key, before in self.loss_weights(1).items():
            after = target[key]
            if before > 0 and after > 0:  # geometric: a 100x step rises by equal factors per epoch
                weights[key] = before ** (1.0 - done) * after**done
            else:
                weights[key] = before + done * (after - before)
        return weights

    def begin_epoch(self, progress: float) -> bool:
        start = self.config.training.stage2_start
        stage = 2 if start is not None and progress >= start else 1
        changed = stage != self.stage
        self.stage = stage
        self.weights = self.ramped_weights(progress) if stage == 2 else self.loss_weights(1)
        return changed

    def state_dict(self) -> Dict:
        return {"stage": self.stage}

    def load_state_dict(self, state: Dict) -> None:
        # the weights of a ramp follow from the progress, which begin_epoch sets before training
        self.stage = int(state.get("stage", 1))
        self.weights = self.loss_weights(self.stage)

    def train_forward(self, model, batch):
        return model(batch, compute_forces=self.fits("forces"), compute_stress=self.fits("stress"), training=True)

    def _penalty(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Elementwise ``rho(pred - ref)``: squared error, or Huber (``training.loss``)."""
        t = self.config.training
        if t.loss == "huber":
            return torch.nn.functional.huber_loss(pred, ref, reduction="none", delta=t.huber_delta)
        return (pred - ref) ** 2

    def loss(self, out, batch, weights: Optional[Dict[str, float]] = None) -> torch.Tensor:
        """The loss of one batch, with ``weights`` (default: this epoch's training weights)."""
        w = self.weights if weights is None else weights
        n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(torch.float64)
        c = getattr(batch, "weight", None)
        c = torch.ones_like(n_atoms) if c is None else c.to(torch.float64)
        loss = w["energy"] * (c * self._penalty(out["energy"] / n_atoms, batch.energy / n_atoms)).mean()
        if self.fits("forces"):
            loss = loss + w["forces"] * (c[batch.batch, None] * self._penalty(out["forces"], batch.forces)).mean()
        if self.fits("stress"):
            loss = loss + w["stress"] * (c[:, None, None] * self._penalty(out["stress"], batch.stress)).mean()
        return loss

    def evaluate(self, model, batches, keep: bool = False) -> Dict:
        """Loss and MAEs: energy per atom (meV/atom), forces (meV/Å)."""
        weights = self.loss_weights(self.stage)  # the stage's full weights, also during a ramp
        sums = {"loss": 0.0, "e": 0.0, "f": 0.0, "n_struct": 0, "n_f": 0}
        kept = {"f_ref": [], "f_pred": []}
        for batch in batches:
            out = model(batch, compute_forces=True, compute_stress=self.fits("stress"))
            out = {k: v.detach() for k, v in out.items()}
            n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(torch.float64)
            sums["loss"] += float(self.loss(out, batch, weights)) * batch.num_graphs
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
        from ..train.report import plot_force_parity, plot_learning_curve

        plot_learning_curve(history, run_dir / "learning_curve.png")
        plot_force_parity(kept["f_ref"], kept["f_pred"], run_dir / "force_parity.png", f"best model, {which} set")
