r"""Autoregressive rollouts of a trained N-body model, and the matching ground truth.

One model step maps the state at time ``t`` to positions at ``t + T``
(``T = 1.0`` time unit = 1,000 integrator steps).  To chain steps the model
also needs the *velocity* at ``t + T``, which it does not predict.  It is
estimated from the model's own predicted positions (the true velocity is used
only for the initial state):

``velocity="finite_difference"`` (default)
    ``v_{k+1} = (x_{k+1} - x_k)/T``: the *mean* velocity over the interval
    (first order; formally the velocity about ``T/2`` earlier).
``velocity="bdf2"``
    second-order backward differences, exact for a trajectory with constant
    acceleration.  First interval (only ``x_0, v_0, x_1`` known):
    ``v_1 = 2 (x_1 - x_0)/T - v_0``; later intervals:
    ``v_{k+1} = (3 x_{k+1} - 4 x_k + x_{k-1}) / (2T)``.
``velocity="constant_acceleration"``
    ``v_{k+1} = 2 (x_{k+1} - x_k)/T - v_k`` for every ``k``.

Why the first-order default: over ``T = 1000 dt`` the Coulomb dynamics is far
from constant acceleration (close encounters), and the higher-order formulas
amplify that: on test systems, fed with the *true* positions, finite
differences give the smallest velocity error after the first interval, and the
model's rollouts with them the smallest position error (figures and command in
``docs/results/nbody.md``, "Choice of velocity estimator";
:func:`measure_velocity_estimators`).  Predicting the velocity with a second head would
avoid the estimate altogether; this model does not (it predicts positions
only, as in the benchmark).

The half-step convention: the dataset's (and the simulator's) velocity is
``v_{s-1/2} = (x_s - x_{s-1})/dt``, the velocity that carried the particles
to ``x_s``; it differs from the instantaneous velocity at ``x_s`` by
``a dt/2 = 5e-4 a``.  The estimators above target the instantaneous velocity
and neglect this ``O(dt)`` offset (it is far below the estimation error
over ``T = 1000 dt``; ``measure_velocity_estimators`` quantifies both on
true trajectories).

:func:`ground_truth` integrates the same intervals with the simulator
(:func:`sinet_ase.nbody.simulator.simulate`), which continues a dataset state
bit-exactly.
"""

from __future__ import annotations

from typing import Dict, Union

import numpy as np
import torch

from .simulator import DT, simulate

__all__ = [
    "rollout",
    "ground_truth",
    "rollout_mse",
    "estimate_velocity",
    "measure_velocity_estimators",
    "STEPS_PER_INTERVAL",
    "INTERVAL",
    "VELOCITY_METHODS",
]

STEPS_PER_INTERVAL = 1000  # integrator steps per model step (frame 30 -> 40)
INTERVAL = STEPS_PER_INTERVAL * DT  # 1.0 time unit
VELOCITY_METHODS = ("finite_difference", "bdf2", "constant_acceleration")

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def estimate_velocity(
    method: str, x_new: np.ndarray, x_cur: np.ndarray, v_cur: np.ndarray, x_prev=None, interval: float = INTERVAL
) -> np.ndarray:
    """Velocity at the time of ``x_new`` from positions ``x_prev`` (or ``None``), ``x_cur``,
    ``x_new`` one ``interval`` apart and the velocity ``v_cur`` at ``x_cur``."""
    T = interval
    if method == "finite_difference":
        return (x_new - x_cur) / T
    if method == "constant_acceleration" or (method == "bdf2" and x_prev is None):
        return 2.0 * (x_new - x_cur) / T - v_cur
    if method == "bdf2":
        return (3.0 * x_new - 4.0 * x_cur + x_prev) / (2.0 * T)
    raise ValueError(f"unknown velocity method {method!r}; choose from {VELOCITY_METHODS}")


@torch.no_grad()
def rollout(
    model,
    x: ArrayLike,
    v: ArrayLike,
    q: ArrayLike,
    K: int,
    *,
    velocity: str = "finite_difference",
    interval: float = INTERVAL,
    batch_size: int = 1000,
) -> Dict[str, np.ndarray]:
    """Apply ``model`` ``K`` times from the state ``(x, v, q)``.

    Args:
        model: an :class:`~sinet_ase.nbody.model.NBodySINet` (any module with
            ``model(x, v, q) -> x_next`` on ``(B, n, 3), (B, n, 3), (B, n)`` tensors).
        x, v: ``(N, n, 3)`` (or ``(n, 3)``) positions and velocities at the start
            (the dataset's convention, e.g. a test split's ``x, v``).
        q: ``(N, n)`` (or ``(n,)``) charges.
        K: number of intervals of 1,000 steps.
        velocity: how the velocity of each predicted state is estimated (module docstring).

    Returns ``dict(x=(N, K, n, 3), v=(N, K, n, 3))`` float64 numpy arrays:
    predicted positions and estimated velocities after ``1..K`` intervals
    (no leading ``N`` for unbatched input).  ``x[:, 0]`` is exactly
    ``model(x, v, q)`` (the single-step prediction).
    """
    if velocity not in VELOCITY_METHODS:
        raise ValueError(f"unknown velocity method {velocity!r}; choose from {VELOCITY_METHODS}")
    if K < 0:
        raise ValueError("K must be >= 0")
    x, v, q = _as_numpy(x), _as_numpy(v), _as_numpy(q)
    unbatched = x.ndim == 2
    if unbatched:
        x, v, q = x[None], v[None], q[None]
    N, n, _ = x.shape
    was_training = model.training
    model.eval()
    dtype = getattr(model, "dtype", torch.float32)
    xs = np.empty((N, K, n, 3))
    vs = np.empty((N, K, n, 3))
    x_prev, x_cur, v_cur = None, x, v
    for k in range(K):
        x_new = np.empty_like(x_cur)
        for start in range(0, N, batch_size):
            sl = slice(start, start + batch_size)
            xb = torch.as_tensor(x_cur[sl], dtype=torch.float64)
            dx = model.displacement(
                xb.to(dtype), torch.as_tensor(v_cur[sl], dtype=dtype), torch.as_tensor(q[sl], dtype=dtype)
            )
            x_new[sl] = (xb + dx.to(torch.float64)).numpy()
        v_new = estimate_velocity(velocity, x_new, x_cur, v_cur, x_prev, interval)
        xs[:, k], vs[:, k] = x_new, v_new
        x_prev, x_cur, v_cur = x_cur, x_new, v_new
    model.train(was_training)
    if unbatched:
        return dict(x=xs[0], v=vs[0])
    return dict(x=xs, v=vs)


def ground_truth(x: ArrayLike, v: ArrayLike, q: ArrayLike, K: int) -> Dict[str, np.ndarray]:
    """The simulator's positions and velocities after ``1..K`` intervals:
    ``dict(x=(N, K, n, 3), v=(N, K, n, 3))`` (exact continuation of a dataset state)."""
    pos, vel = simulate(_as_numpy(x), _as_numpy(v), _as_numpy(q), K * STEPS_PER_INTERVAL, STEPS_PER_INTERVAL)
    return dict(x=pos, v=vel)


def rollout_mse(pred_x: np.ndarray, true_x: np.ndarray) -> np.ndarray:
    """MSE over systems, particles and coordinates after each interval: ``(K,)``."""
    pred_x, true_x = _as_numpy(pred_x), _as_numpy(true_x)
    if pred_x.ndim == 3:
        pred_x, true_x = pred_x[None], true_x[None]
    return ((pred_x - true_x) ** 2).mean(axis=(0, 2, 3))


def measure_velocity_estimators(x: ArrayLike, v: ArrayLike, q: ArrayLike, K: int = 3) -> Dict[str, np.ndarray]:
    """Mean squared error of each velocity estimator fed with *true* positions.

    Returns ``{method: (K,) MSE against the simulator's stored velocity}`` and
    ``"half_step_offset"``: the MSE between the stored (half-step-behind)
    velocity and the one half a step later, ``(K,)``, the size of the offset
    the estimators neglect.
    """
    x, v, q = _as_numpy(x), _as_numpy(v), _as_numpy(q)
    truth = ground_truth(x, v, q, K)
    out = {}
    for method in VELOCITY_METHODS:
        errs = []
        x_prev, x_cur, v_cur = None, x, v
        for k in range(K):
            x_new = truth["x"][:, k]
            v_est = estimate_velocity(method, x_new, x_cur, v_cur, x_prev)
            errs.append(float(((v_est - truth["v"][:, k]) ** 2).mean()))
            x_prev, x_cur, v_cur = x_cur, x_new, v_est
        out[method] = np.array(errs)
    # one more step from each recorded state gives v_{s+1/2}; (v_{s-1/2} + v_{s+1/2})/2 ~ v(s)
    offs = []
    for k in range(K):
        _, v_next = simulate(truth["x"][:, k], truth["v"][:, k], q, 1, 1)
        offs.append(float(((0.5 * (truth["v"][:, k] + v_next[:, 0]) - truth["v"][:, k]) ** 2).mean()))
    out["half_step_offset"] = np.array(offs)
    return out
