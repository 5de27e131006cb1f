r"""The former N-body training loop: the reference the ``nbody`` task is checked against.

One epoch of the task (``sinet-train training/nbody.yaml``, :mod:`sinet_ase.nbody.task`)
equals one epoch of this loop up to the order of the samples
(``tests/test_nbody_task.py::test_one_epoch_matches_the_former_loop``);
``tests/test_nbody_model.py`` trains its small models with it. It is a helper module of the
tests (imported as ``nbody_former_loop``: pytest puts ``tests/`` on ``sys.path``), not
shipped with the package; the package keeps what reads its files (the ``checkpoint.pt``
format, :data:`CHECKPOINT_FORMAT`, in :func:`sinet_ase.nbody.model.load_nbody_model` and
``sinet-eval``) and translates its recipes
(:func:`sinet_ase.nbody.task.config_from_legacy`, ``python -m sinet_ase.nbody.train``).

* :func:`train`: the loop with its dict config (:data:`DEFAULT_CONFIG`, sections ``model``,
  ``data``, ``train``; :func:`load_config`), checkpoint (``checkpoint.pt``: model, optimiser,
  torch and shuffling-generator states, best-so-far and its weights, history, written
  atomically at every validation; ``resume=True`` continues exactly) and outputs
  (``best.pt``, ``log.json``).

Protocol (Brandstetter et al. 2022, as used in the SINet paper, Sec. 5.4): MSE over all
coordinates of the predicted positions at frame 40, Adam with learning rate ``5e-4`` and
weight decay ``1e-12``, batch 100, up to 1,000 epochs, validation every 5 epochs, and the
test MSE reported at the epoch of the best validation MSE; 3,000 / 2,000 / 2,000
trajectories (:func:`sinet_ase.nbody.dataset.load_nbody_dataset`).

Options beyond the protocol (off by default): ``train.lr_schedule: cosine`` (from ``lr`` to
``lr_min`` over ``schedule_epochs``, :func:`learning_rate`), ``train.ema_decay``,
``train.time_reversal`` (:func:`~sinet_ase.nbody.dataset.time_reversed`) and
``train.input_frames: [k, ...]`` (:func:`~sinet_ase.nbody.dataset.training_frame_pairs`).
Every tensor in its checkpoint is a plain tensor (RNG states are byte tensors), so it loads
with ``weights_only=True``.
"""

import copy
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sinet_ase.files import atomic_write_text
from sinet_ase.io import atomic_torch_save
from sinet_ase.nbody.evaluate import evaluate_mse, resolve_device, split_to_tensors
from sinet_ase.nbody.model import FORMER_CHECKPOINT_FORMAT as CHECKPOINT_FORMAT
from sinet_ase.nbody.model import NBodySINet, nbody_model_to_dict
from sinet_ase.nbody.task import LEGACY_DEFAULTS

__all__ = ["CHECKPOINT_FORMAT", "DEFAULT_CONFIG", "load_config", "learning_rate", "train"]

#: the loop's defaults: the ones :func:`sinet_ase.nbody.task.config_from_legacy` fills in
DEFAULT_CONFIG: Dict[str, Any] = copy.deepcopy(LEGACY_DEFAULTS)

LR_SCHEDULES = ("constant", "cosine")

#: train-section entries that a ``--resume`` may change (the rest comes from the checkpoint)
RESUME_OVERRIDABLE = ("epochs", "device", "max_minutes", "threads")


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path=None, overrides: Optional[dict] = None) -> dict:
    """``DEFAULT_CONFIG`` updated by a YAML recipe and then by ``overrides``."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        import yaml

        with open(path) as handle:
            config = _merge(config, yaml.safe_load(handle) or {})
    return _merge(config, overrides or {})


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _hardware(device: Optional[torch.device] = None) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    if device is not None and device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (CUDA), " + text
    return text


def learning_rate(tc: dict, epoch: int) -> float:
    """Learning rate of (1-based) ``epoch``: ``lr`` (``constant``, the SEGNN protocol) or
    ``lr_min + (lr - lr_min) (1 + cos(pi (epoch - 1) / schedule_epochs)) / 2`` (``cosine``),
    held at ``lr_min`` after ``schedule_epochs``. A function of the epoch alone, so a
    resumed run continues the schedule without extra state."""
    lr = float(tc["lr"])
    schedule = tc.get("lr_schedule") or "constant"
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return lr
    lr_min, span = float(tc.get("lr_min") or 0.0), int(tc["schedule_epochs"])
    progress = min(max(epoch - 1, 0) / span, 1.0)
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _load_splits(config: dict) -> dict:
    from sinet_ase.nbody.dataset import load_nbody_dataset

    d = config["data"]
    return load_nbody_dataset(d.get("cache_dir"), d["n_train"], d["n_valid"], d["n_test"], d["seed"])


def train(
    config: dict,
    out_dir,
    *,
    resume: bool = False,
    stop_after: Optional[int] = None,
    data: Optional[dict] = None,
    verbose: bool = True,
) -> dict:
    """Run (or resume) the recipe ``config`` (see :data:`DEFAULT_CONFIG`) in ``out_dir``.

    ``stop_after``: return after this epoch (checkpoint written), for a planned
    interruption; ``data``: preloaded ``{"train", "valid", "test"}`` splits
    (else :func:`load_nbody_dataset` with ``config["data"]``).
    Returns the summary dict (also in ``log.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path, log_path = out_dir / "checkpoint.pt", out_dir / "best.pt", out_dir / "log.json"
    tc = config["train"]
    if tc.get("threads"):
        torch.set_num_threads(int(tc["threads"]))
    dtype = _dtype(tc.get("dtype", "float32"))

    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} is not an N-body training checkpoint")
        if state["config"]["model"] != config["model"] or state["config"]["data"] != config["data"]:
            changed = sorted(
                f"{section}.{key}: checkpoint {state['config'][section].get(key)!r}, now {config[section].get(key)!r}"
                for section in ("model", "data")
                for key in set(state["config"][section]) | set(config[section])
                if state["config"][section].get(key) != config[section].get(key)
            )
            raise ValueError(
                f"{ckpt_path} was written with another model/data config ({'; '.join(changed)}); "
                "resume with the recipe and --set overrides of the original run, or use another --out"
            )
        config = _merge(state["config"], {"train": {k: tc.get(k) for k in RESUME_OVERRIDABLE}})
        tc = config["train"]
    elif resume and verbose:
        print(f"no checkpoint in {out_dir}: starting from scratch")

    if state is None and tc.get("schedule_epochs") is None and tc.get("lr_schedule") == "cosine":
        # fixed at the start, so that a --resume with more --epochs keeps the schedule
        config = _merge(config, {"train": {"schedule_epochs": int(tc["epochs"])}})
        tc = config["train"]
    learning_rate(tc, 1)  # checks the schedule's settings before any work
    ema_decay = tc.get("ema_decay")
    if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
        raise ValueError(f"train.ema_decay must be in (0, 1) or null, got {ema_decay!r}")
    device = resolve_device(tc.get("device"))
    max_minutes = tc.get("max_minutes")
    torch.manual_seed(int(tc["seed"]))
    model = NBodySINet(**config["model"]).to(device=device, dtype=dtype)
    # with ema_decay, validation, test and best.pt use an exponential moving average of the
    # weights (torch's AveragedModel, as sinet_ase.train.Trainer uses)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(ema_decay))) if ema_decay is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=float(tc["lr"]), weight_decay=float(tc["weight_decay"]))
    generator = torch.Generator().manual_seed(int(tc["seed"]) + 1)
    epoch, history, train_seconds = 0, [], 0.0
    best = dict(valid_mse=math.inf, epoch=0, test_mse=None)
    best_state = None
    if state is not None:
        model.load_state_dict(state["model"]["state_dict"])  # copies into the on-device parameters
        optimizer.load_state_dict(state["optimizer"])  # moves the Adam moments to the parameters' device
        generator.set_state(state["generator_state"])
        torch.set_rng_state(state["torch_rng_state"])
        epoch, history = int(state["epoch"]), list(state["history"])
        train_seconds = float(state["train_seconds"])
        best = dict(state["best"])
        best_state = state["best_model"]
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if verbose:
            print(f"resumed {ckpt_path} at epoch {epoch} (best valid {best['valid_mse']:.6f} at epoch {best['epoch']})")

    data = data if data is not None else _load_splits(config)
    train_split = data["train"]
    if tc.get("input_frames") is not None:
        from sinet_ase.nbody.dataset import training_frame_pairs

        train_split = training_frame_pairs(tc["input_frames"], config["data"]["seed"], config["data"]["n_train"])
    if tc.get("time_reversal"):
        from sinet_ase.nbody.dataset import time_reversed

        reversed_split = time_reversed(train_split)
        train_split = {k: np.concatenate([train_split[k], reversed_split[k]]) for k in ("x", "v", "q", "target")}
    train_t = split_to_tensors(train_split, dtype, device)
    valid_t = split_to_tensors(data["valid"], dtype, device)
    test_t = split_to_tensors(data["test"], dtype, device)
    n_train, bs = train_t["x"].shape[0], int(tc["batch_size"])
    n_params = model.num_parameters()
    if verbose and state is None:
        print(
            f"NBodySINet {config['model']}: {n_params} parameters; "
            f"{n_train} train / {valid_t['x'].shape[0]} valid / {test_t['x'].shape[0]} test; "
            f"device {device}",
            flush=True,
        )

    def summary() -> dict:
        return dict(
            epochs_done=epoch,
            best_epoch=best["epoch"],
            best_valid_mse=best["valid_mse"],
            test_mse_at_best=best["test_mse"],
            num_parameters=n_params,
            train_seconds=train_seconds,
            hardware=_hardware(device),
        )

    def save_checkpoint():
        payload = dict(
            format=CHECKPOINT_FORMAT,
            format_version=1,
            config=config,
            epoch=epoch,
            model=nbody_model_to_dict(model),
            optimizer=optimizer.state_dict(),
            generator_state=generator.get_state(),
            torch_rng_state=torch.get_rng_state(),
            best=best,
            best_model=best_state,
            history=history,
            train_seconds=train_seconds,
        )
        if ema is not None:
            payload["ema"] = ema.state_dict()  # the averaged weights and the update count
        atomic_torch_save(payload, ckpt_path)
        atomic_write_text(log_path, json.dumps(dict(config=config, summary=summary(), history=history), indent=1))

    epochs = int(tc["epochs"])
    eval_every = int(tc["eval_every"])
    model.train()
    session_start = time.perf_counter()
    while epoch < epochs:
        t0 = time.perf_counter()
        # the permutation comes from a CPU generator on every device, so shuffling
        # does not depend on where the run (or its resumed part) executes
        perm = torch.randperm(n_train, generator=generator).to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(tc, epoch + 1)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, n_train, bs):
            idx = perm[start : start + bs]
            pred = model.displacement(train_t["x"][idx], train_t["v"][idx], train_t["q"][idx])
            loss = torch.nn.functional.mse_loss(pred, train_t["dx"][idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            total += loss.detach().double() * idx.numel()  # no host sync per step
        epoch += 1
        record = dict(epoch=epoch, train_mse=float(total) / n_train)
        if epoch % eval_every == 0 or epoch == epochs:
            scored = ema.module if ema is not None else model
            valid_mse = evaluate_mse(scored, valid_t, bs)
            record["valid_mse"] = valid_mse
            if valid_mse < best["valid_mse"]:
                test_mse = evaluate_mse(scored, test_t, bs)
                record["test_mse"] = test_mse
                best = dict(valid_mse=valid_mse, epoch=epoch, test_mse=test_mse)
                best_state = nbody_model_to_dict(
                    scored,
                    dict(
                        best_epoch=epoch,
                        valid_mse=valid_mse,
                        test_mse=test_mse,
                        seed=int(tc["seed"]),
                        recipe="sinet_ase.nbody.train",
                    ),
                )
        train_seconds += time.perf_counter() - t0
        record["seconds"] = round(train_seconds, 2)
        history.append(record)
        if "valid_mse" in record:
            save_checkpoint()
            if best["epoch"] == epoch:
                atomic_torch_save(best_state, best_path)
            if verbose:
                extra = f"  test {record['test_mse']:.6f} (new best)" if "test_mse" in record else ""
                print(
                    f"epoch {epoch:5d}  train {record['train_mse']:.6f}  valid {valid_mse:.6f}{extra}"
                    f"  [{train_seconds:.0f} s]",
                    flush=True,
                )
        if stop_after is not None and epoch >= stop_after:
            if "valid_mse" not in record:
                save_checkpoint()
            break
        if (
            max_minutes is not None
            and "valid_mse" in record
            and time.perf_counter() - session_start >= 60.0 * float(max_minutes)
        ):
            if verbose:
                print(
                    f"stopping after epoch {epoch}: train.max_minutes={max_minutes} reached (--resume continues)",
                    flush=True,
                )
            break
    if epoch >= epochs:
        save_checkpoint()
    result = summary()
    if verbose:
        print(json.dumps(result, indent=1))
    return result
