"""Evaluate an N-body model file on an ``.npz`` split.

::

    sinet-eval CHECKPOINT DATA.npz [--batch-size 100] [--time] [--json OUT.json]
    sinet-eval A.pt,B.pt,C.pt DATA.npz       # an ensemble

(``sinet-eval`` hands N-body model files to :func:`run`; ``python -m
sinet_ase.nbody.evaluate`` takes the same arguments, with ``--json`` printing one JSON
line.)

``CHECKPOINT``: a model file (``best_model.pt`` of ``sinet-train``, ``best.pt`` of the
former loop) or a checkpoint of the former loop
(``checkpoint.pt``, whose best model is used); several, joined by commas, are
scored as one ensemble (the mean of the members' predicted positions).  ``DATA.npz``: arrays ``x``,
``v`` (N, 5, 3), ``q`` (N, 5) and ``target`` (N, 5, 3) (the format written by
:func:`sinet_ase.nbody.dataset.save_npz_split`; ``python -m
sinet_ase.nbody.generate --out DIR`` writes ``DIR/test.npz``).  Prints the
MSE over all coordinates (the benchmark's test MSE), the constant-velocity
baseline ``x + v`` on the same data and, with ``--time``, the inference time
per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from .dataset import baseline_mse, load_npz_split
from .model import FORMER_CHECKPOINT_FORMAT, NBodySINet, load_nbody_ensemble, load_nbody_model

__all__ = [
    "split_to_tensors",
    "ensemble_displacement",
    "evaluate_mse",
    "resolve_device",
    "evaluate_models",
    "evaluate_file",
    "time_inference",
    "is_nbody_model_file",
    "run",
    "main",
]


def resolve_device(name: Optional[str]) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is not there is an error."""
    name = "cpu" if name in (None, "") else str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA device; use 'cpu' or 'auto'")
    return device


def split_to_tensors(split: dict, dtype=torch.float32, device=None) -> Dict[str, torch.Tensor]:
    """``x, v, q, target`` of a split as tensors on ``device``; ``dx = target - x`` formed in float64."""
    out = {k: torch.as_tensor(np.asarray(split[k]), dtype=torch.float64) for k in ("x", "v", "q", "target")}
    out["dx"] = (out["target"] - out["x"]).to(dtype)
    for k in ("x", "v", "q"):
        out[k] = out[k].to(dtype)
    return {k: t.to(device) for k, t in out.items()} if device is not None else out


def ensemble_displacement(
    models: Sequence[NBodySINet], x: torch.Tensor, v: torch.Tensor, q: torch.Tensor
) -> torch.Tensor:
    """Mean of the models' predicted displacements, in float64: ``(B, n, 3)``."""
    return torch.stack([m.displacement(x, v, q).double() for m in models]).mean(dim=0)


@torch.no_grad()
def evaluate_mse(model: Union[NBodySINet, Sequence[NBodySINet]], split, batch_size: int = 100) -> float:
    """MSE over all coordinates of ``model(x, v, q)`` against ``target`` (float64 sum).

    ``model``: one model, or a list of models scored as an ensemble (the mean of their
    predicted positions, formed in float64).
    ``split``: dict of arrays ``x, v (N, n, 3), q (N, n), target (N, n, 3)``
    (or the output of :func:`split_to_tensors`).
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    device = next(models[0].parameters()).device
    t = split if "dx" in split else split_to_tensors(split, models[0].dtype, device)
    total, count = 0.0, 0
    for start in range(0, t["x"].shape[0], batch_size):
        sl = slice(start, start + batch_size)
        pred = ensemble_displacement(models, t["x"][sl], t["v"][sl], t["q"][sl])
        total += float(((pred - t["dx"][sl].double()) ** 2).sum())
        count += pred.numel()
    for m, mode in zip(models, was_training):
        m.train(mode)
    return total / count


def evaluate_models(models, split: dict, batch_size: int = 100) -> dict:
    """``dict(mse, n, baseline_x_plus_v, num_parameters, metadata)`` of one model or an
    ensemble (a list, scored by the mean of the members' predictions) on a split.

    With several models ``num_parameters`` is the members' total and ``metadata`` a list,
    one per member.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    metadata = [getattr(m, "metadata", {}) for m in models]
    return dict(
        mse=evaluate_mse(models, split, batch_size),
        n=int(split["x"].shape[0]),
        baseline_x_plus_v=baseline_mse(split)["constant_velocity"],
        num_parameters=sum(m.num_parameters() for m in models),
        metadata=metadata[0] if len(models) == 1 else metadata,
    )


def evaluate_file(checkpoint, data_path, batch_size: int = 100) -> dict:
    """:func:`evaluate_models` for model files and an ``.npz``: ``checkpoint`` is one path,
    a string of paths joined by commas, or a list of paths (the last two: an ensemble)."""
    if isinstance(checkpoint, (list, tuple)):
        models = [load_nbody_model(path) for path in checkpoint]
    elif isinstance(checkpoint, str):
        models = load_nbody_ensemble(checkpoint)
    else:
        models = [load_nbody_model(checkpoint)]
    return evaluate_models(models, load_npz_split(data_path), batch_size)


@torch.no_grad()
def time_inference(model, split, batch_size: int = 100, repeats: int = 20, warmup: int = 3) -> dict:
    """Seconds per forward pass on batches of ``batch_size`` systems (no gradients).

    Returns median and min over ``repeats`` timed batches (after ``warmup``).
    """
    model.eval()
    device = next(model.parameters()).device
    t = split_to_tensors(split, model.dtype, device)
    # CUDA runs asynchronously: wait for the device before reading the clock
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n = t["x"].shape[0]
    times = []
    for i in range(warmup + repeats):
        start = (i * batch_size) % max(n - batch_size + 1, 1)
        sl = slice(start, start + batch_size)
        sync()
        t0 = time.perf_counter()
        model.displacement(t["x"][sl], t["v"][sl], t["q"][sl])
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return dict(
        median_s=float(np.median(times)),
        min_s=float(np.min(times)),
        repeats=repeats,
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        device=str(device),
    )


def is_nbody_model_file(path) -> bool:
    """Whether ``path`` is an N-body model file or a checkpoint of the former N-body loop
    (False for anything else, readable or not)."""
    from ..registry import lookup

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file: another reader says what is wrong with it
        return False
    if not isinstance(payload, dict):
        return False
    if payload.get("format") == FORMER_CHECKPOINT_FORMAT:
        return True
    kind = lookup(str(payload.get("model_type")))
    return kind is not None and kind.task == "nbody"


def run(
    checkpoint: str,
    data: str,
    *,
    batch_size: int = 100,
    time: bool = False,
    device: str = "cpu",
    json_line: bool = False,
    json_path=None,
    prog: str = "sinet-eval",
) -> int:
    """Score ``checkpoint`` (one model file, or several joined by commas: an ensemble) on the
    ``.npz`` split ``data``; print the result. Returns the exit code (2: unreadable input)."""
    from ..errors import ModelFileError
    from ..files import atomic_write_text

    try:
        models = load_nbody_ensemble(checkpoint)
        if time and len(models) > 1:
            raise ValueError("--time times one model: give a single model file")
        split = load_npz_split(data)
    except (OSError, ValueError, ModelFileError) as err:
        print(f"{prog + ': ' if prog else ''}error: {err}", file=sys.stderr)
        return 2
    result = evaluate_models(models, split, batch_size)
    if time:
        result["inference"] = time_inference(models[0].to(resolve_device(device)), split, batch_size)
    if json_line:
        print(json.dumps(result))
        return 0
    kind = "model" if len(models) == 1 else f"ensemble of {len(models)} models"
    print(f"{kind}: {checkpoint} ({result['num_parameters']} parameters)")
    print(f"data:  {data} ({result['n']} systems)")
    print(f"test MSE: {result['mse']:.6f}")
    print(f"baseline x + v MSE: {result['baseline_x_plus_v']:.6f}")
    if time:
        inf = result["inference"]
        print(
            f"inference: {1000 * inf['median_s']:.2f} ms per batch of {inf['batch_size']} "
            f"(median of {inf['repeats']}, min {1000 * inf['min_s']:.2f} ms, "
            f"{inf['device']}, {inf['threads']} thread(s))"
        )
    if json_path:
        atomic_write_text(json_path, json.dumps({"model": str(checkpoint), "data": str(data), **result}, indent=1))
        print(f"metrics: {json_path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sinet_ase.nbody.evaluate",
        description="Test MSE of an N-body model on an .npz split (also: sinet-eval MODEL DATA.npz).",
    )
    p.add_argument(
        "checkpoint",
        help="best_model.pt / best.pt model file or a checkpoint.pt of "
        "the former loop; A.pt,B.pt,... scores the ensemble",
    )
    p.add_argument("data", help=".npz with x, v (N,5,3), q (N,5), target (N,5,3)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--time", action="store_true", help="also time inference per batch")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    p.add_argument("--device", default="cpu", help="device for --time (cpu, cuda, auto)")
    a = p.parse_args(argv)
    if a.time and len([part for part in a.checkpoint.split(",") if part]) > 1:
        p.error("--time times one model: give a single checkpoint")
    torch.set_num_threads(a.threads)
    return run(a.checkpoint, a.data, batch_size=a.batch_size, time=a.time, device=a.device, json_line=a.json, prog="")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
