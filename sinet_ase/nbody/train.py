"""``python -m sinet_ase.nbody.train``: the former N-body command, deprecated.

::

    python -m sinet_ase.nbody.train RECIPE [--out DIR] [--seed S] [--epochs E] [--eval-every N]
        [--lmax L] [--n-train N] [--device DEV] [--max-minutes M]
        [--set SECTION.KEY=VALUE] [--resume]

says it is deprecated (:data:`DEPRECATION`) and runs the recipe through ``sinet-train``, the
package's one trainer (the ``nbody`` task, :mod:`sinet_ase.nbody.task`). ``RECIPE`` is a
``sinet-train`` config (``training/nbody.yaml``; flags and ``--set`` become its dotted
overrides) or a recipe of the former loop's format (sections ``model``, ``data``,
``train``; :func:`sinet_ase.nbody.task.config_from_legacy` translates it, filling in that
loop's defaults). The benchmark's MSE and tensor helpers are in
:mod:`sinet_ase.nbody.evaluate`.
"""

from __future__ import annotations

import argparse
import json

from .evaluate import resolve_device

__all__ = ["DEPRECATION", "main"]


#: ``--set train.KEY`` of the former command -> the sinet-train key
_SET_KEYS = {
    "seed": "seed",
    "time_reversal": "nbody.time_reversal",
    "input_frames": "nbody.input_frames",
    "device": "training.device",
    "ema_decay": "training.ema_decay",
    "lr": "training.lr",
    "weight_decay": "training.weight_decay",
    "batch_size": "training.batch_size",
    "epochs": "training.epochs",
    "eval_every": "training.valid_every",
    "dtype": "training.dtype",
    "threads": "training.num_threads",
    "max_minutes": "training.max_minutes",
    "lr_min": "training.min_lr",
}

DEPRECATION = (
    "python -m sinet_ase.nbody.train is deprecated: N-body runs use the shared "
    "trainer, `sinet-train training/nbody.yaml run_dir=DIR seed=S [--resume]` "
    "(outputs best_model.pt, checkpoint.pt, metrics.csv, summary.json; evaluate with "
    "`sinet-eval DIR/best_model.pt test.npz`). Running this recipe through sinet-train."
)


def _sinet_train_config(a) -> dict:
    """The raw sinet-train config of the former command's arguments ``a``."""
    import yaml

    from ..errors import ConfigError
    from .task import config_from_legacy

    recipe = {}
    if a.recipe is not None:
        with open(a.recipe) as handle:
            recipe = yaml.safe_load(handle) or {}
    sets = []
    for item in a.set:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("model", "data", "train"):
            raise ConfigError(f"--set expects SECTION.KEY=VALUE with SECTION in model/data/train, got {item!r}")
        sets.append((section, name, yaml.safe_load(value)))
    if "task" not in recipe:  # a recipe of the former format: sections model, data, train
        overrides = {"model": {}, "data": {}, "train": {}}
        for section, name, value in sets:
            overrides[section][name] = value
        for flag, section, name in (
            ("seed", "train", "seed"),
            ("epochs", "train", "epochs"),
            ("eval_every", "train", "eval_every"),
            ("lmax", "model", "lmax"),
            ("n_train", "data", "n_train"),
            ("device", "train", "device"),
            ("max_minutes", "train", "max_minutes"),
        ):
            if getattr(a, flag) is not None:
                overrides[section][name] = getattr(a, flag)
        legacy = {section: {**(recipe.get(section) or {}), **overrides[section]} for section in overrides}
        return config_from_legacy(legacy, a.out or recipe.get("out_dir") or "runs/nbody")
    dotted = []
    for section, name, value in sets:
        if section == "model":
            key = f"model.{name}"
        elif section == "data":
            key = "nbody.dataset_seed" if name == "seed" else f"nbody.{name}"
        elif name in _SET_KEYS:
            key = _SET_KEYS[name]
        else:
            raise ConfigError(
                f"--set train.{name}: set the training key in the YAML file (sinet-train's training section)"
            )
        dotted.append((key, value))
    for flag, key in (
        ("out", "run_dir"),
        ("seed", "seed"),
        ("epochs", "training.epochs"),
        ("eval_every", "training.valid_every"),
        ("lmax", "model.lmax"),
        ("n_train", "nbody.n_train"),
        ("device", "training.device"),
        ("max_minutes", "training.max_minutes"),
    ):
        if getattr(a, flag) is not None:
            value = getattr(a, flag)
            if flag == "device":
                value = str(resolve_device(value))
            dotted.append((key, value))
    for key, value in dotted:  # section.key -> value, as sinet-train's overrides
        *sections, name = key.split(".")
        target = recipe
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    return recipe


def main(argv=None) -> int:
    """The former command line, run through ``sinet-train`` (deprecated, see :data:`DEPRECATION`)."""
    import sys

    p = argparse.ArgumentParser(
        prog="python -m sinet_ase.nbody.train",
        description="Deprecated: use sinet-train training/nbody.yaml. Trains NBodySINet through sinet-train.",
    )
    p.add_argument("recipe", nargs="?", default=None, help="YAML recipe, e.g. training/nbody.yaml")
    p.add_argument("--out", default=None, help="output folder (sinet-train's run_dir)")
    p.add_argument("--seed", type=int, default=None, help="training seed (init + shuffling)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--lmax", type=int, default=None, help="override model.lmax (L ablation)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe entry, e.g. --set model.channels=16 (YAML value)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    a = p.parse_args(argv)
    print(DEPRECATION, file=sys.stderr)
    from ..errors import ConfigError
    from ..train import TrainConfig
    from ..train import train as shared_train

    try:
        config = TrainConfig.from_dict(_sinet_train_config(a))
        summary = shared_train(config, resume=a.resume)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary.get(k) for k in ("epochs_done", "best", "test")}, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
