"""Evaluate an N-body model file on an ``.npz`` split.

::

    python -m sinet_ase.nbody.evaluate CHECKPOINT DATA.npz [--batch-size 100] [--time]
    python -m sinet_ase.nbody.evaluate A.pt,B.pt,C.pt DATA.npz       # an ensemble

``CHECKPOINT``: a model file (``best.pt``) or a training checkpoint
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

import numpy as np
import torch

from .dataset import baseline_mse, load_npz_split
from .model import load_nbody_ensemble, load_nbody_model
from .train import evaluate_mse, resolve_device, split_to_tensors

__all__ = ["evaluate_models", "evaluate_file", "time_inference", "main"]


def evaluate_models(models, split: dict, batch_size: int = 100) -> dict:
    """``dict(mse, n, baseline_x_plus_v, num_parameters, metadata)`` of one model or an
    ensemble (a list, scored by the mean of the members' predictions) on a split.

    With several models ``num_parameters`` is the members' total and ``metadata`` a list,
    one per member.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    metadata = [getattr(m, "metadata", {}) for m in models]
    return dict(mse=evaluate_mse(models, split, batch_size), n=int(split["x"].shape[0]),
                baseline_x_plus_v=baseline_mse(split)["constant_velocity"],
                num_parameters=sum(m.num_parameters() for m in models),
                metadata=metadata[0] if len(models) == 1 else metadata)


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
    return dict(median_s=float(np.median(times)), min_s=float(np.min(times)), repeats=repeats,
                batch_size=batch_size, threads=torch.get_num_threads(), device=str(device))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sinet_ase.nbody.evaluate",
                                description="Test MSE of an N-body model on an .npz split.")
    p.add_argument("checkpoint", help="best.pt model file or training checkpoint.pt; "
                                      "A.pt,B.pt,... scores the ensemble of those models")
    p.add_argument("data", help=".npz with x, v (N,5,3), q (N,5), target (N,5,3)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--time", action="store_true", help="also time inference per batch")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    p.add_argument("--device", default="cpu", help="device for --time (cpu, cuda, auto)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = load_nbody_ensemble(a.checkpoint)
    if a.time and len(models) > 1:
        p.error("--time times one model: give a single checkpoint")
    try:
        split = load_npz_split(a.data)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = evaluate_models(models, split, a.batch_size)
    if a.time:
        result["inference"] = time_inference(models[0].to(resolve_device(a.device)), split, a.batch_size)
    if a.json:
        print(json.dumps(result))
        return 0
    kind = "model" if len(models) == 1 else f"ensemble of {len(models)} models"
    print(f"{kind}: {a.checkpoint} ({result['num_parameters']} parameters)")
    print(f"data:  {a.data} ({result['n']} systems)")
    print(f"test MSE: {result['mse']:.6f}")
    print(f"baseline x + v MSE: {result['baseline_x_plus_v']:.6f}")
    if a.time:
        inf = result["inference"]
        print(f"inference: {1000 * inf['median_s']:.2f} ms per batch of {inf['batch_size']} "
              f"(median of {inf['repeats']}, min {1000 * inf['min_s']:.2f} ms, "
              f"{inf['device']}, {inf['threads']} thread(s))")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
