"""Charged N-body dataset: splits, on-disk cache and the evaluation format.

Splits
------
``make_splits(seed, n_train, n_valid, n_test)`` creates one
``numpy.random.default_rng(seed)`` and draws the train, valid and test
trajectories *in that order* from it (so the test set depends on
``n_train``/``n_valid`` too; the defaults 3000/2000/2000 define the benchmark).
Each split is a dict of float64 arrays::

    x        (N, 5, 3)  positions at frame 30 (step 3100)
    v        (N, 5, 3)  velocities at frame 30 (half a step behind x, see
                        sinet_ase.nbody.simulator)
    q        (N, 5)     charges in {-1, +1}
    target   (N, 5, 3)  positions at frame 40 (step 4100, 1.0 time unit later)
    target_v (N, 5, 3)  velocities at frame 40 (extra; lets rollouts chain)

Cache
-----
:func:`load_nbody_dataset` stores all splits in one ``.npz`` whose name
encodes seed and sizes, inside ``cache_dir`` (default
``$SINET_ASE_CACHE/nbody`` if the variable is set, else
``~/.cache/sinet_ase/nbody``).  The file is written atomically (temporary file
in the same directory, fsync, ``os.replace``) and holds a ``sha256`` entry: the
SHA-256 over every other entry's name, dtype, shape and bytes (including a
JSON ``meta`` entry with the protocol parameters).  On load the checksum and
the metadata are verified.  Policy for a corrupt or mismatched cache: by
default (``on_corrupt="regenerate"``) a :class:`UserWarning` is emitted and the
dataset is regenerated and rewritten; with ``on_corrupt="raise"`` a
:class:`NBodyCacheError` is raised instead.

Time reversal
-------------
The integrator is time-reversible: :func:`time_reversed` maps a split to the
same trajectories run backwards (input frame 40, target frame 30), exact up to
rounding. ``train.time_reversal`` in the N-body recipe uses it to double the
training set (off by default; it uses the frame-40 velocities of the training
trajectories, which the EGNN/SEGNN protocol does not use).

Other frames of the training trajectories
-----------------------------------------
The protocol trains on one pair per trajectory (frame 30 -> frame 40).
:func:`training_frame_pairs` re-simulates the training trajectories (the same draws,
bit-exact: its frame-30 pair equals the cached training split) and cuts the pairs
(frame ``k`` -> frame ``k + 10``) for other input frames ``k``. ``train.input_frames``
in the N-body recipe uses it (off by default; beyond the protocol, which uses frame 30
only; validation and test are unchanged).

Evaluation format
-----------------
:func:`save_npz_split` writes one split as an ``.npz`` with exactly ``x``,
``v`` (N, 5, 3), ``q`` (N, 5) and ``target`` (N, 5, 3); :func:`load_npz_split`
reads it back.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from sinet_ase.files import atomic_write, read_checksummed_npz, write_checksummed_npz
from sinet_ase.nbody import simulator as sim

__all__ = [
    "DEFAULT_SEED",
    "SPLITS",
    "CACHE_VERSION",
    "NBodyCacheError",
    "default_cache_dir",
    "resolve_cache_dir",
    "cache_path",
    "make_split",
    "make_splits",
    "load_nbody_dataset",
    "save_npz_split",
    "load_npz_split",
    "baseline_mse",
    "time_reversed",
    "training_frame_pairs",
    "write_npz_with_checksum",
    "read_npz_with_checksum",
]

DEFAULT_SEED = 42
SPLITS = ("train", "valid", "test")
# bump when the generated numbers change (protocol, draw order, integrator)
CACHE_VERSION = 1
EVAL_KEYS = ("x", "v", "q", "target")


class NBodyCacheError(RuntimeError):
    """A cache file is unreadable, fails its checksum or has other parameters."""


def default_cache_dir() -> Path:
    """``$SINET_ASE_CACHE/nbody`` if the variable is set, else ``~/.cache/sinet_ase/nbody``."""
    root = os.environ.get("SINET_ASE_CACHE")
    if root:
        return Path(root).expanduser() / "nbody"
    return Path.home() / ".cache" / "sinet_ase" / "nbody"


def resolve_cache_dir(cache_dir=None) -> Path:
    return default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()


def cache_path(cache_dir, seed: int, n_train: int, n_valid: int, n_test: int) -> Path:
    """Path of the cache file for these parameters inside ``cache_dir``."""
    name = f"nbody_charged{sim.N_PARTICLES}_v{CACHE_VERSION}_seed{seed}_tr{n_train}_va{n_valid}_te{n_test}.npz"
    return resolve_cache_dir(cache_dir) / name


def _meta(seed, n_train, n_valid, n_test) -> dict:
    return dict(
        version=CACHE_VERSION,
        seed=int(seed),
        n_train=int(n_train),
        n_valid=int(n_valid),
        n_test=int(n_test),
        n_particles=sim.N_PARTICLES,
        dt=sim.DT,
        max_force=sim.MAX_FORCE,
        loc_std=sim.LOC_STD,
        vel_norm=sim.VEL_NORM,
        interaction_strength=sim.INTERACTION_STRENGTH,
        record_every=sim.RECORD_EVERY,
        input_frame=sim.INPUT_FRAME,
        target_frame=sim.TARGET_FRAME,
    )


# --- generation ---------------------------------------------------------------


def make_split(
    n: int, rng: np.random.Generator, *, input_frame: int = sim.INPUT_FRAME, target_frame: int = sim.TARGET_FRAME
) -> dict:
    """Simulate ``n`` trajectories from ``rng`` and cut the (input, target) pair.

    Draws exactly what :func:`sinet_ase.nbody.simulator.generate_trajectories`
    draws, and integrates only up to the target frame (identical numbers,
    fewer steps).  Returns ``dict(x, v, q, target, target_v)`` (see module
    docstring).
    """
    if not 0 <= input_frame < target_frame:
        raise ValueError("need 0 <= input_frame < target_frame")
    x0, v0, q = sim.sample_initial_conditions(n, rng)
    # record only the two frames needed: first run to the input frame, then
    # continue from it (bit-exact, see simulator docstring)
    s_in = sim.frame_to_step(input_frame)
    s_out = sim.frame_to_step(target_frame)
    xi, vi = sim.simulate(x0, v0, q, s_in, s_in)
    xi, vi = xi[:, 0], vi[:, 0]
    xt, vt = sim.simulate(xi, vi, q, s_out - s_in, s_out - s_in)
    return dict(x=xi, v=vi, q=q, target=xt[:, 0], target_v=vt[:, 0])


def make_splits(
    seed: int = DEFAULT_SEED, n_train: int = 3000, n_valid: int = 2000, n_test: int = 2000, *, only=None
) -> dict:
    """Generate the splits from ``default_rng(seed)``, drawn train -> valid -> test.

    ``only``: optional iterable of split names to simulate; the others still
    consume their random draws (so e.g. ``only=("test",)`` yields the exact
    test split quickly) but are omitted from the result.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in zip(SPLITS, (n_train, n_valid, n_test)):
        if only is not None and name not in only:
            sim.sample_initial_conditions(n, rng)  # consume the same draws
            continue
        out[name] = make_split(n, rng)
    return out


def training_frame_pairs(input_frames, seed: int = DEFAULT_SEED, n_train: int = 3000) -> dict:
    """Pairs (frame ``k`` -> frame ``k + 10``) of the training trajectories, for each ``k``.

    Re-simulates the ``n_train`` training trajectories of ``make_splits(seed, n_train,
    ...)`` (they are drawn first, so the validation and test sizes do not matter) once,
    up to the last frame needed, and stacks the pairs of every input frame in
    ``input_frames``, in that order: ``dict(x, v, target, target_v (K n_train, 5, 3),
    q (K n_train, 5))``. Input frame 30 gives exactly the cached training split.
    A few seconds for 3,000 trajectories (vectorised over trajectories).
    """
    frames = [int(k) for k in input_frames]
    horizon = sim.TARGET_FRAME - sim.INPUT_FRAME
    if not frames:
        raise ValueError("input_frames is empty")
    bad = [k for k in frames if not 0 <= k or k + horizon >= sim.N_FRAMES]
    if bad:
        raise ValueError(
            f"input frames {bad} out of range: need 0 <= k <= {sim.N_FRAMES - 1 - horizon} "
            f"(the target frame k + {horizon} must be one of the {sim.N_FRAMES} recorded frames)"
        )
    # the training split is drawn first from default_rng(seed): the same trajectories, frames 0..last
    traj = sim.generate_trajectories(n_train, np.random.default_rng(seed), n_frames=max(frames) + horizon + 1)
    stack = lambda a, shift: np.concatenate([a[:, k + shift] for k in frames])  # noqa: E731
    return dict(
        x=stack(traj["x"], 0),
        v=stack(traj["v"], 0),
        q=np.concatenate([traj["q"]] * len(frames)),
        target=stack(traj["x"], horizon),
        target_v=stack(traj["v"], horizon),
    )


# --- checksummed npz ------------------------------------------------------------


def write_npz_with_checksum(path, arrays: dict) -> str:
    """Atomically write ``arrays`` plus a ``sha256`` entry; returns the digest
    (:func:`sinet_ase.files.write_checksummed_npz`)."""
    return write_checksummed_npz(path, arrays)


def read_npz_with_checksum(path) -> dict:
    """Read a file written by :func:`write_npz_with_checksum`, verifying it.

    Raises :class:`NBodyCacheError` if the file is unreadable, lacks the
    checksum or its content does not match it.
    """
    return read_checksummed_npz(path, NBodyCacheError, what="cache file")


# --- public loading -------------------------------------------------------------


def _read_cache(path: Path, meta: dict) -> dict:
    arrays = read_npz_with_checksum(path)
    try:
        stored_meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError) as e:
        raise NBodyCacheError(f"cache file {path} has no valid meta entry") from e
    if stored_meta != meta:
        raise NBodyCacheError(f"cache file {path} was made with other parameters: {stored_meta} != {meta}")
    splits = {}
    for key, a in arrays.items():
        name, _, field = key.partition("/")
        splits.setdefault(name, {})[field] = a
    if set(splits) != set(SPLITS):
        raise NBodyCacheError(f"cache file {path} holds splits {sorted(splits)}")
    for name, n in zip(SPLITS, (meta["n_train"], meta["n_valid"], meta["n_test"])):
        s = splits[name]
        if len(s.get("x", ())) != n or not set(EVAL_KEYS) <= set(s):
            raise NBodyCacheError(f"cache file {path}: split {name} malformed")
    return {name: splits[name] for name in SPLITS}


def load_nbody_dataset(
    cache_dir=None,
    n_train: int = 3000,
    n_valid: int = 2000,
    n_test: int = 2000,
    seed: int = DEFAULT_SEED,
    *,
    on_corrupt: str = "regenerate",
    regenerate: bool = False,
    verbose: bool = False,
) -> dict:
    """Return ``{"train": split, "valid": split, "test": split}``, cached on disk.

    Each split holds ``x, v, target, target_v`` (N, 5, 3) and ``q`` (N, 5)
    float64 arrays (see module docstring).  The first call generates and
    atomically writes the cache (``cache_path(...)``); later calls verify its
    SHA-256 and metadata and load it.  ``on_corrupt``: ``"regenerate"``
    (default: warn, regenerate, overwrite) or ``"raise"``
    (:class:`NBodyCacheError`).  ``regenerate=True`` ignores any cache.
    """
    if on_corrupt not in ("regenerate", "raise"):
        raise ValueError("on_corrupt must be 'regenerate' or 'raise'")
    path = cache_path(cache_dir, seed, n_train, n_valid, n_test)
    meta = _meta(seed, n_train, n_valid, n_test)
    if path.exists() and not regenerate:
        try:
            data = _read_cache(path, meta)
            if verbose:
                print(f"loaded verified cache {path}")
            return data
        except NBodyCacheError as e:
            if on_corrupt == "raise":
                raise
            warnings.warn(f"{e}; regenerating the N-body dataset", UserWarning, stacklevel=2)
    if verbose:
        print(f"generating N-body dataset (seed={seed}, {n_train}/{n_valid}/{n_test}) ...")
    data = make_splits(seed, n_train, n_valid, n_test)
    arrays = {f"{name}/{k}": a for name, s in data.items() for k, a in s.items()}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    write_npz_with_checksum(path, arrays)
    return data


def save_npz_split(path, split: dict) -> None:
    """Write ``split`` in the evaluation format (atomically).

    The ``.npz`` holds exactly ``x``, ``v`` (N, 5, 3), ``q`` (N, 5) and
    ``target`` (N, 5, 3), float64.  Extra keys of ``split`` are not written.
    """
    arrays = {k: np.asarray(split[k], dtype=np.float64) for k in EVAL_KEYS}
    n = arrays["x"].shape[0]
    for k in ("x", "v", "target"):
        if arrays[k].shape != arrays["x"].shape or arrays[k].shape[-1] != 3:
            raise ValueError(f"{k} has shape {arrays[k].shape}")
    if arrays["q"].shape != (n, arrays["x"].shape[1]):
        raise ValueError(f"q has shape {arrays['q'].shape}")
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_npz_split(path) -> dict:
    """Read an evaluation-format ``.npz`` into a dict of ``x, v, q, target``.

    Raises ``ValueError`` naming the array when a key is missing, a shape is not
    ``x, v, target (N, 5, 3)`` and ``q (N, 5)`` (the model was built for
    :data:`~sinet_ase.nbody.simulator.N_PARTICLES` particles), or a value is NaN or infinite
    (it would make the test MSE NaN).
    """
    with np.load(Path(path), allow_pickle=False) as z:
        missing = set(EVAL_KEYS) - set(z.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; it needs {', '.join(EVAL_KEYS)}")
        split = {k: z[k] for k in EVAL_KEYS}
    n, p = len(split["x"]), sim.N_PARTICLES
    expected = {"x": (n, p, 3), "v": (n, p, 3), "target": (n, p, 3), "q": (n, p)}
    for key, shape in expected.items():
        if split[key].shape != shape:
            raise ValueError(
                f"{path}: {key} has shape {split[key].shape}, expected {shape} (N systems of {p} particles)"
            )
        if not np.all(np.isfinite(split[key])):
            raise ValueError(f"{path}: {key} holds NaN or infinite values; fix or remove those systems")
    return split


def baseline_mse(split: dict, interval: float = None) -> dict:
    """MSE (mean over all coordinates) of the trivial predictors.

    ``no_motion``: ``target ~ x``; ``constant_velocity``: ``target ~ x + v *
    interval`` with ``interval`` the time between input and target frames
    (default 1000 * dt = 1.0).
    """
    if interval is None:
        interval = (sim.frame_to_step(sim.TARGET_FRAME) - sim.frame_to_step(sim.INPUT_FRAME)) * sim.DT
    x, v, t = split["x"], split["v"], split["target"]
    return dict(no_motion=float(np.mean((t - x) ** 2)), constant_velocity=float(np.mean((t - x - v * interval) ** 2)))


def time_reversed(split: dict) -> dict:
    r"""The same trajectories run backwards: input frame 40, target frame 30.

    A recorded state ``(x_s, v_s)`` holds the velocity half a step behind the
    positions (``v_s = v_{s-1/2}``, see :mod:`sinet_ase.nbody.simulator`), and one
    step is ``v <- v + dt F(x)``, ``x <- x + dt v``. Started from
    ``(x_s, u)`` with ``u = -(v_s + dt F(x_s)) = -v_{s+1/2}``, the first kick gives
    ``-v_{s-1/2}`` and the drift ``x_{s-1}``: the kick-drift integrator retraces
    the trajectory step by step (the clipped force depends on positions only).
    So the map ``(x, v) -> (x, -(v + dt F(x)))``, an involution, turns frame 40
    into an input whose target, 1,000 steps on, is frame 30, and frame 30 into
    the recorded state there. Exact in exact arithmetic; in float64 the
    simulator started from the reversed input reproduces frame 30 to rounding
    except in a few chaotic close encounters (tested).

    ``split``: dict with ``x, v, target, target_v`` (N, n, 3) and ``q`` (N, n);
    returns a dict with the same keys.
    """
    missing = {"x", "v", "q", "target", "target_v"} - set(split)
    if missing:
        raise KeyError(f"time reversal needs the frame-40 velocities too; the split lacks {sorted(missing)}")

    def reverse(x, v):
        return -(np.asarray(v) + sim.DT * sim.forces(x, split["q"]))

    return dict(
        x=np.asarray(split["target"]),
        v=reverse(split["target"], split["target_v"]),
        q=np.asarray(split["q"]),
        target=np.asarray(split["x"]),
        target_v=reverse(split["x"], split["v"]),
    )
