r"""Charged-particle N-body simulator (the EGNN / SEGNN benchmark protocol).

Physics
-------
``n`` particles (default 5) of unit mass move in 3-D free space (no box
walls).  Each carries a charge :math:`q_i \in \{-1, +1\}`.  The force on
particle ``i`` is Coulomb-like with interaction strength :math:`k = 1`:

.. math::

    F_i = \operatorname{clip}\Big( k \sum_{j \ne i} q_i q_j
          \frac{x_i - x_j}{\lVert x_i - x_j \rVert^3},\; -F_{max},\; F_{max} \Big),
    \qquad F_{max} = 100,

where the clip acts on every Cartesian component of the *total* force
separately (as in the reference implementation of Kipf et al. / Satorras et
al., whose ``_max_F = 0.1 / dt``).  Like charges repel.  Without clipping the
force derives from :math:`U = k \sum_{i<j} q_i q_j / r_{ij}`.

Integrator and the velocity convention
--------------------------------------
With :math:`dt = 0.001` and initial state :math:`(x^{(0)}, v^{(0)})` one step
is *kick then drift*::

    v <- v + dt * F(x)        # kick  (a full dt, also for the very first one)
    x <- x + dt * v           # drift
    record (x, v) if step % record_every == 0

This is exactly the reference loop "one initial kick, then for steps
1..T-1: drift, record, kick" rotated by one half: the kick that the reference
performs *after* recording step ``s`` is the kick we perform at the start of
step ``s + 1``.  Hence the recorded velocity at step ``s`` is the velocity
*before* the kick at ``x_s``, i.e. the velocity that carried the particles
from ``x_{s-1}`` to ``x_s``.  In leapfrog language, positions live on integer
steps and the stored velocity is **half a step behind** the position:
``v_stored(s) = v_{s-1/2} = (x_s - x_{s-1}) / dt`` (up to rounding).

Because a recorded ``(x, v)`` pair is literally the integrator state between
two steps, :func:`simulate` started from a recorded frame continues the
trajectory bit-for-bit: simulating 1000 steps from frame 30 reproduces frame
40 exactly.  This is the ground truth for multi-interval rollouts.

The very first kick uses a full ``dt`` (not ``dt/2`` as a textbook leapfrog
start would) because that is what the benchmark's reference code does; it
only perturbs the initial condition by O(dt).

Dataset frames
--------------
A trajectory of ``T = 5000`` steps recorded every 100 steps yields 49 frames:
frame ``k`` (0-based) is step ``100 (k + 1)`` (the initial state, step 0, is
not stored).  The learning task maps frame 30 (positions, velocities,
charges) to the positions of frame 40, i.e. 1000 steps = 1.0 time units
later.  See :mod:`sinet_ase.nbody.dataset` for splits and caching.

Random draws (order matters for reproducibility)
------------------------------------------------
:func:`sample_initial_conditions` draws, from one ``numpy.random.Generator``
and for the whole batch at once, in this order: charges
(``rng.integers(0, 2, (N, n))`` mapped 0 -> -1, 1 -> +1), positions
(``rng.standard_normal((N, n, 3))``), velocity directions
(``rng.standard_normal((N, n, 3))``, each particle's vector rescaled to norm
0.5).

Exactness
---------
All arithmetic is float64 and uses only correctly-rounded IEEE operations
(``+ - * /`` and ``sqrt``; :math:`r^3` is computed as ``r2 * sqrt(r2)``, not
with ``pow``), and the force on each particle is summed over ``j`` in
increasing order.  A naive per-particle Python loop performing the same
operations therefore reproduces the vectorised integrator bit for bit, which
the tests use as an independent reference.

``python -m sinet_ase.nbody.generate --out DIR`` (:mod:`sinet_ase.nbody.generate`)
generates and caches the full dataset and prints the trivial baselines; the former
``python -m sinet_ase.nbody.simulator`` runs it too. This module imports NumPy only.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DT",
    "MAX_FORCE",
    "N_PARTICLES",
    "LOC_STD",
    "VEL_NORM",
    "INTERACTION_STRENGTH",
    "N_STEPS",
    "RECORD_EVERY",
    "N_FRAMES",
    "INPUT_FRAME",
    "TARGET_FRAME",
    "frame_to_step",
    "step_to_frame",
    "sample_initial_conditions",
    "forces",
    "simulate",
    "generate_trajectories",
    "energy",
]

# --- protocol constants (EGNN / SEGNN charged N-body) -----------------------
DT = 0.001
MAX_FORCE = 0.1 / DT  # = 100, per force component (reference: _max_F = 0.1/dt)
N_PARTICLES = 5
LOC_STD = 1.0
VEL_NORM = 0.5
INTERACTION_STRENGTH = 1.0
N_STEPS = 5000  # reference T; frames at steps 100, 200, ..., 4900
RECORD_EVERY = 100
N_FRAMES = N_STEPS // RECORD_EVERY - 1  # 49: the reference stores T/freq - 1
INPUT_FRAME = 30
TARGET_FRAME = 40


def frame_to_step(k: int, record_every: int = RECORD_EVERY) -> int:
    """Integration step of (0-based) frame ``k``: ``record_every * (k + 1)``."""
    return record_every * (k + 1)


def step_to_frame(step: int, record_every: int = RECORD_EVERY) -> int:
    """Inverse of :func:`frame_to_step` (``step`` must be a positive multiple)."""
    if step <= 0 or step % record_every:
        raise ValueError(f"step {step} is not a recorded step (every {record_every})")
    return step // record_every - 1


def sample_initial_conditions(
    n: int,
    rng: np.random.Generator,
    n_particles: int = N_PARTICLES,
    loc_std: float = LOC_STD,
    vel_norm: float = VEL_NORM,
):
    """Draw ``n`` initial states.

    Returns ``x0`` (n, n_particles, 3) ~ N(0, loc_std^2) per coordinate,
    ``v0`` (n, n_particles, 3) Gaussian directions with every particle's
    velocity rescaled to norm ``vel_norm``, and charges ``q`` (n, n_particles)
    in {-1., +1.} with equal probability.  Draw order: charges, positions,
    velocities (see module docstring); it fixes the datasets, do not change it.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    q = np.where(rng.integers(0, 2, size=(n, n_particles)) == 1, 1.0, -1.0)
    x0 = rng.standard_normal((n, n_particles, 3)) * loc_std
    v0 = rng.standard_normal((n, n_particles, 3))
    v0 = v0 * (vel_norm / np.sqrt((v0**2).sum(axis=-1, keepdims=True)))
    return x0, v0, q


class _PairTables:
    """Index tables for the pair-wise force evaluation of ``n`` particles.

    Pairs ``p = (I[p], J[p])`` with ``I < J``.  ``term[i, m]`` indexes the
    array ``concat(c, -c)`` (``c[p] = s_p (x_I - x_J)``, the force of ``J`` on
    ``I``) so that row ``i`` lists the contributions of ``j = 0..n-1, j != i``
    in increasing ``j`` order.  Negation and ``x_i - x_j = -(x_j - x_i)`` are
    exact in IEEE arithmetic, so each pair is evaluated once and the per-
    particle sums are still bit-identical to a naive double loop.
    """

    _cache: dict = {}

    def __new__(cls, n: int):
        if n not in cls._cache:
            obj = super().__new__(cls)
            I, J = np.triu_indices(n, 1)
            n_pairs = len(I)
            pid = {(int(a), int(b)): p for p, (a, b) in enumerate(zip(I, J))}
            term = np.empty((n, max(n - 1, 0)), dtype=np.intp)
            for i in range(n):
                m = 0
                for j in range(n):
                    if j == i:
                        continue
                    term[i, m] = pid[(i, j)] if i < j else n_pairs + pid[(j, i)]
                    m += 1
            obj.I, obj.J, obj.term = I, J, term
            cls._cache[n] = obj
        return cls._cache[n]


def _forces(x: np.ndarray, qq: np.ndarray, tables: _PairTables, max_force: float) -> np.ndarray:
    """Clipped forces for a batch; ``qq[b, p] = k q_I q_J``.  Shapes (B, n, 3)."""
    B, n, _ = x.shape
    if n < 2:
        return np.zeros_like(x)
    d = x[:, tables.I] - x[:, tables.J]  # (B, P, 3): x_i - x_j, i < j
    d0, d1, d2 = d[..., 0], d[..., 1], d[..., 2]
    # explicit left-to-right sum (not a reduction) so the order is guaranteed
    r2 = d0 * d0 + d1 * d1 + d2 * d2
    # r^3 as r2*sqrt(r2): correctly rounded ops only (pow may differ by an ulp
    # between numpy's SIMD kernels and libm, which would break exactness)
    s = qq / (r2 * np.sqrt(r2))
    c = s[..., None] * d
    terms = np.concatenate((c, -c), axis=1)[:, tables.term]  # (B, n, n-1, 3)
    F = terms[:, :, 0]
    for m in range(1, n - 1):  # sequential sum over j (fixed order)
        F = F + terms[:, :, m]
    if np.isfinite(max_force):
        F = np.clip(F, -max_force, max_force)
    return F


def forces(x, q, *, max_force: float = MAX_FORCE, interaction_strength: float = INTERACTION_STRENGTH) -> np.ndarray:
    r"""Clipped pair forces :math:`F_i` (see module docstring).

    ``x``: (..., n, 3) positions, ``q``: (..., n) charges.  Returns (..., n, 3).
    ``max_force=np.inf`` disables clipping.
    """
    x = np.asarray(x, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    lead = x.shape[:-2]
    n = x.shape[-2]
    xb = x.reshape(-1, n, 3)
    qb = np.broadcast_to(q, lead + (n,)).reshape(-1, n)
    t = _PairTables(n)
    qq = interaction_strength * (qb[:, t.I] * qb[:, t.J])
    return _forces(xb, qq, t, max_force).reshape(x.shape)


def simulate(
    x,
    v,
    q,
    n_steps: int,
    record_every: int = RECORD_EVERY,
    *,
    dt: float = DT,
    max_force: float = MAX_FORCE,
    interaction_strength: float = INTERACTION_STRENGTH,
    return_n_clipped: bool = False,
):
    r"""Integrate ``n_steps`` kick-drift steps from the state ``(x, v)``.

    Parameters
    ----------
    x, v : (N, n, 3) or (n, 3)
        State at a recorded frame (or an initial condition): positions at
        step ``s`` and the velocity that carried them there (half a step
        behind, see module docstring).  Not modified.
    q : (N, n) or (n,)
        Charges.
    n_steps : int
        Number of steps; e.g. ``K * 1000`` for ``K`` prediction intervals.
    record_every : int
        Record ``(x, v)`` after the drift of every step that is a multiple of
        ``record_every`` (counted from this call's start).
    dt, max_force, interaction_strength :
        Protocol constants; ``max_force=np.inf`` disables clipping.
    return_n_clipped : bool
        Also return the number of force components clipped per trajectory.

    Returns
    -------
    positions, velocities : (N, n_steps // record_every, n, 3)
        (leading ``N`` axis dropped for unbatched input).  Record ``r`` is the
        state after ``record_every * (r + 1)`` steps, in the same convention
        as the input, so continuing from any record is bit-exact.
    n_clipped : (N,) int, only if ``return_n_clipped``.

    Example: from frame 30 of a dataset trajectory,
    ``simulate(x30, v30, q, 1000 * K, 1000)[0][:, k-1]`` is the exact frame
    ``30 + 10 k`` (for ``k <= 1`` it is the stored frame 40).
    """
    x = np.array(x, dtype=np.float64)  # copies: the caller's arrays are kept
    v = np.array(v, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    unbatched = x.ndim == 2
    if unbatched:
        x, v, q = x[None], v[None], q[None]
    if x.ndim != 3 or x.shape[-1] != 3 or v.shape != x.shape or q.shape != x.shape[:2]:
        raise ValueError(f"bad shapes x{x.shape} v{v.shape} q{q.shape}")
    if n_steps < 0 or record_every < 1:
        raise ValueError("need n_steps >= 0 and record_every >= 1")
    B, n, _ = x.shape
    t = _PairTables(n)
    qq = interaction_strength * (q[:, t.I] * q[:, t.J])
    n_rec = n_steps // record_every
    pos = np.empty((B, n_rec, n, 3))
    vel = np.empty((B, n_rec, n, 3))
    n_clipped = np.zeros(B, dtype=np.int64)
    r = 0
    with np.errstate(divide="ignore", invalid="ignore"):  # coincident particles
        for step in range(1, n_steps + 1):
            if return_n_clipped:
                F = _forces(x, qq, t, np.inf)
                n_clipped += (np.abs(F) > max_force).sum(axis=(1, 2))
                if np.isfinite(max_force):
                    F = np.clip(F, -max_force, max_force)
            else:
                F = _forces(x, qq, t, max_force)
            v = v + dt * F
            x = x + dt * v
            if step % record_every == 0:
                pos[:, r] = x
                vel[:, r] = v
                r += 1
    if unbatched:
        pos, vel, n_clipped = pos[0], vel[0], n_clipped[0]
    if return_n_clipped:
        return pos, vel, n_clipped
    return pos, vel


def generate_trajectories(
    n: int,
    rng: np.random.Generator,
    *,
    n_particles: int = N_PARTICLES,
    n_frames: int = N_FRAMES,
    record_every: int = RECORD_EVERY,
    return_n_clipped: bool = False,
) -> dict:
    """Simulate ``n`` full benchmark trajectories, vectorised over trajectories.

    Draws the initial conditions with :func:`sample_initial_conditions` and
    integrates ``n_frames * record_every`` steps (the reference runs to step
    4999, but nothing after the last frame at step 4900 is stored).

    Returns ``dict(x=(n, n_frames, n_particles, 3), v=(same), q=(n, n_particles),
    x0=(n, n_particles, 3), v0=(same))``; frame ``k`` is step
    ``record_every * (k + 1)``.  With ``return_n_clipped`` also ``n_clipped``
    (n,) (number of clipped force components along the trajectory).
    """
    x0, v0, q = sample_initial_conditions(n, rng, n_particles)
    out = simulate(x0, v0, q, n_frames * record_every, record_every, return_n_clipped=return_n_clipped)
    res = dict(x=out[0], v=out[1], q=q, x0=x0, v0=v0)
    if return_n_clipped:
        res["n_clipped"] = out[2]
    return res


def energy(x, v, q, *, interaction_strength: float = INTERACTION_STRENGTH) -> np.ndarray:
    r"""Total energy :math:`\tfrac12\sum_i |v_i|^2 + k\sum_{i<j} q_i q_j / r_{ij}`.

    ``x, v``: (..., n, 3), ``q``: (..., n).  Returns shape (...).  (Exact
    invariant only of the unclipped dynamics.)
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    kin = 0.5 * (v**2).sum(axis=(-1, -2))
    I, J = np.triu_indices(x.shape[-2], 1)
    r = np.sqrt(((x[..., I, :] - x[..., J, :]) ** 2).sum(-1))
    pot = interaction_strength * (q[..., I] * q[..., J] / r).sum(-1)
    return kin + pot


if __name__ == "__main__":  # pragma: no cover - the former command line of the data set
    from sinet_ase.nbody.generate import main

    raise SystemExit(main())
