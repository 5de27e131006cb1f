"""``sinet-train --print-config``: a commented default config of the energy (potential) task.

Every section and key that :class:`~sinet_ase.train.config.TrainConfig` reads for the
energy task, with its default value (from the dataclasses and ``SINet``'s signature, so
the printed values cannot drift from the code) and a comment from :data:`KEY_HELP`
(a key without a comment there fails ``tests/test_train_template.py``). Keys whose
default is set from the data (``model.elements``) or that switch a feature on
(``model.init_from``) are printed commented out. The text is accepted back by
``sinet-train`` once ``data.train`` names a file.
"""

import inspect
import textwrap
from typing import Any, Dict, List

import yaml

#: one comment per key, ``section.key`` (top-level keys without a section)
KEY_HELP: Dict[str, str] = {
    "run_dir": "checkpoints, metrics.csv, plots, best_model.pt",
    "seed": "weights, data split and batch order",
    "task": "energy (this template) | qm9 (training/qm9_*.yaml)",
    # data (energy task)
    "data.train": "extxyz / ASE db / any ase.io file with energies and forces; file@0:100 selects frames",
    "data.valid": "validation files, or null: valid_size of each training file",
    "data.test": "test files, or null: test_size of each training file",
    "data.valid_size": "fraction (< 1) or number of frames held out for validation",
    "data.test_size": "fraction or number of frames held out for the final test",
    "data.require_stress": "refuse frames without a stress (or virials) label",
    "data.energy_key": "label names, looked up in calc results, info, arrays (MACE-style files: REF_energy)",
    "data.forces_key": "e.g. REF_forces",
    "data.stress_key": "eV/Å^3 (ASE); e.g. REF_stress",
    "data.virials_key": "eV; read where a frame has no stress: stress = -virials / volume",
    "data.stress_convention": "ase (eV/Å^3) | vasp_kbar (raw VASP kB, xx yy zz xy yz zx)",
    "data.config_type_key": "info key grouping frames (weights, tables, isolated_atom E0s)",
    "data.atomic_energies": "E0 per element: fit (least squares) | {H: -13.57, C: -1025.3} | isolated-atoms file",
    "data.config_type_weights": "{Default: 1.0, some_type: 0.1} multiplies each frame's loss",
    # model (SINet keywords; the fitted ones are not keys)
    "model.cutoff": "neighbour cutoff r_c, Å",
    "model.lmax": "highest degree L of the node features",
    "model.channels": "channels c of every degree",
    "model.num_layers": "Scalar Interaction layers T",
    "model.num_radial": "Bessel functions of the radial basis",
    "model.radial_hidden": "width of the radial MLP",
    "model.mlp_hidden": "width of the coefficient MLP",
    "model.envelope_p": "exponent of the polynomial cutoff envelope",
    "model.backbone": "sinet (Scalar Interaction) | siformer (scalar-interaction transformer)",
    "model.num_heads": "attention heads of siformer (must divide channels)",
    "model.zbl": "add ZBL nuclear repulsion at short range",
    "model.zbl_cutoff_factor": "where ZBL ends, in sums of covalent radii",
    "model.elements": "default: the elements of the training data",
    "model.init_from": "fine-tune: a model file or shipped potential (sinet-xtb-md17); its architecture wins",
    # training
    "training.epochs": "passes over the training data",
    "training.batch_size": "structures per optimiser step",
    "training.valid_batch_size": "structures per validation batch",
    "training.optimizer": "adamw (decoupled weight decay) | adam (L2 in the gradient)",
    "training.lr": "learning rate",
    "training.weight_decay": "weight decay (see optimizer)",
    "training.scheduler": "cosine (over epochs) | cosine_time / cosine_cpu (over max_minutes) | plateau | constant",
    "training.valid_every": "validate every this many epochs (and at the last one)",
    "training.warmup_epochs": "linear warm-up of the learning rate",
    "training.min_lr": "end of the cosine schedule",
    "training.plateau_factor": "plateau: learning-rate factor",
    "training.plateau_patience": "plateau: epochs without gain before a step",
    "training.ema_decay": "exponential moving average of the weights (0: off)",
    "training.energy_weight": "on (energy error per atom)^2, eV^2",
    "training.forces_weight": "on (force component error)^2, (eV/Å)^2",
    "training.stress_weight": "on (stress component error)^2, (eV/Å^3)^2",
    "training.loss": "mse | huber (on the same residuals)",
    "training.huber_delta": "Huber threshold in the residual's unit (eV, eV/Å)",
    "training.stage2_start": "fraction of the schedule where the second loss stage starts (null: none)",
    "training.stage2_ramp": "fraction of the schedule over which the weights move to stage 2's (0: a step)",
    "training.stage2_energy_weight": "second stage weights; null keeps the first stage's",
    "training.stage2_forces_weight": "second stage force weight (null: keep)",
    "training.stage2_stress_weight": "second stage stress weight (null: keep)",
    "training.grad_clip": "gradient norm clip",
    "training.patience": "early stopping: epochs without validation gain",
    "training.max_minutes": "stop after this wall time (resume later with --resume)",
    "training.dtype": "float32 | float64",
    "training.device": "cpu | cuda | cuda:N",
    "training.num_threads": "torch threads (null: torch's default)",
    "training.freeze": "[backbone]: train the energy head only (needs model.init_from)",
    "training.tensorboard": "also log the metrics for TensorBoard in run_dir/tensorboard (pip install tensorboard)",
    "training.fused_kernels": "fused C++ edge kernels on the CPU: auto (built where a compiler is), true, false",
}

#: model keys printed commented out, with an example value (their default comes from elsewhere)
_COMMENTED_MODEL_KEYS = {"elements": ["H", "C", "O"], "init_from": "sinet-xtb-md17"}


def _value(value: Any) -> str:
    """One YAML value in flow style (``[]``, ``null``, ``0.001``, ``fit``)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.strip()


def default_model_section() -> Dict[str, Any]:
    """The energy task's model keys with ``SINet``'s defaults (the fitted keys are left out)."""
    from ..model import SINet
    from ..registry import DEFAULT_TASK, task_class

    params = inspect.signature(SINet.__init__).parameters
    return {
        key: params[key].default
        for key in task_class(DEFAULT_TASK).model_keys()
        if key in params and params[key].default is not inspect.Parameter.empty
    }


def template_sections() -> Dict[str, Any]:
    """The default config as a dict (``data.train`` empty): what :func:`default_config_yaml`
    prints, minus the commented-out keys."""
    from .config import TrainConfig

    sections = TrainConfig().to_dict()
    sections["model"] = default_model_section()
    return sections


def _lines(key: str, value: Any, indent: str, prefix: str, width: int) -> List[str]:
    entry = f"{indent}{key}: {_value(value)}"
    comment = KEY_HELP.get(prefix + key, "")
    return [f"{entry.ljust(width)}  # {comment}" if comment else entry]


def default_config_yaml(train_file: str = "train.extxyz") -> str:
    """The commented default config of the energy task, ``data.train: [train_file]``."""
    sections = template_sections()
    sections["data"]["train"] = [train_file]
    width = 34
    out = [
        "# sinet-train config of an energy + force potential (sinet-train --print-config).",
        "# Every key with its default; delete the ones you keep at their default.",
        "# Unknown keys are errors. docs/training.md explains each section.",
    ]
    for key, value in sections.items():
        if isinstance(value, dict):
            out.append(f"{key}:")
            for sub, subvalue in value.items():
                out += _lines(sub, subvalue, "  ", f"{key}.", width)
            if key == "model":
                for sub, example in _COMMENTED_MODEL_KEYS.items():
                    entry = f"  # {sub}: {_value(example)}"
                    out.append(f"{entry.ljust(width)}  # {KEY_HELP['model.' + sub]}")
        else:
            out += _lines(key, value, "", "", width)
    return "\n".join(out) + "\n"


def config_sections_help(width: int = 88) -> str:
    """``sinet-train --help``'s list of the config sections and their keys (energy task)."""
    sections = template_sections()
    rows = [("top level", [k for k, v in sections.items() if not isinstance(v, dict)])]
    rows += [
        (key, list(value) + (list(_COMMENTED_MODEL_KEYS) if key == "model" else []))
        for key, value in sections.items()
        if isinstance(value, dict)
    ]
    lines = ["config sections and keys (sinet-train --print-config prints each with its default and a comment):"]
    for name, keys in rows:
        lines.append(
            textwrap.fill(", ".join(keys), width=width, initial_indent=f"  {name}: ", subsequent_indent="      ")
        )
    lines.append("  (task: qm9 reads a qm9 section instead of data: docs/qm9.md)")
    return "\n".join(lines)


def check_template_keys() -> List[str]:
    """Keys of the default config without a comment in :data:`KEY_HELP` (should be none)."""
    missing = []
    for key, value in template_sections().items():
        if isinstance(value, dict):
            missing += [f"{key}.{sub}" for sub in value if not KEY_HELP.get(f"{key}.{sub}")]
        elif not KEY_HELP.get(key):
            missing.append(key)
    return missing
