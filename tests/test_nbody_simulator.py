"""Tests of the charged N-body simulator and dataset (sinet_ase.nbody)."""

import math
import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from sinet_ase.nbody import dataset as ds
from sinet_ase.nbody import simulator as sim


# --------------------------------------------------------------------------
# independent reference: the protocol written literally, per particle, in
# plain Python floats (drift, record, kick; one initial kick)
# --------------------------------------------------------------------------


def _reference_force(x, q, max_f=100.0):
    n = len(x)
    F = []
    for i in range(n):
        f = None
        for j in range(n):
            if j == i:
                continue
            d = [x[i][k] - x[j][k] for k in range(3)]
            r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            s = (q[i] * q[j]) / (r2 * math.sqrt(r2))
            t = [s * d[k] for k in range(3)]
            f = t if f is None else [f[k] + t[k] for k in range(3)]
        F.append([min(max(c, -max_f), max_f) for c in f])
    return F


def _reference_trajectory(x0, v0, q, T=5000, freq=100, dt=0.001):
    x = [[float(c) for c in p] for p in x0]
    v = [[float(c) for c in p] for p in v0]
    q = [float(c) for c in q]
    n = len(x)
    locs, vels = [], []
    F = _reference_force(x, q)
    v = [[v[i][k] + dt * F[i][k] for k in range(3)] for i in range(n)]
    for step in range(1, T):
        x = [[x[i][k] + dt * v[i][k] for k in range(3)] for i in range(n)]
        if step % freq == 0:
            locs.append([p[:] for p in x])
            vels.append([p[:] for p in v])
        F = _reference_force(x, q)
        v = [[v[i][k] + dt * F[i][k] for k in range(3)] for i in range(n)]
    return np.array(locs), np.array(vels)


def test_vectorised_matches_plain_python_reference_exactly():
    traj = sim.generate_trajectories(2, np.random.default_rng(123))
    assert traj["x"].shape == (2, 49, 5, 3) and traj["v"].shape == (2, 49, 5, 3)
    for b in range(2):
        loc, vel = _reference_trajectory(traj["x0"][b], traj["v0"][b], traj["q"][b])
        assert loc.shape == (49, 5, 3)
        # bit-for-bit: same IEEE operations in the same order
        np.testing.assert_array_equal(traj["x"][b], loc)
        np.testing.assert_array_equal(traj["v"][b], vel)


def test_forces_match_reference_and_are_antisymmetric():
    rng = np.random.default_rng(5)
    x0, _, q = sim.sample_initial_conditions(4, rng)
    F = sim.forces(x0, q)
    for b in range(4):
        np.testing.assert_array_equal(F[b], np.array(_reference_force(x0[b].tolist(), q[b].tolist())))
    Fu = sim.forces(x0, q, max_force=np.inf)
    # no clip -> Newton's third law: sum of forces is zero
    np.testing.assert_allclose(Fu.sum(axis=1), 0.0, atol=1e-9 * np.abs(Fu).max())
    # like charges repel: two +1 charges on the x axis
    f2 = sim.forces(np.array([[0.0, 0, 0], [2.0, 0, 0]]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(f2, [[-0.25, 0, 0], [0.25, 0, 0]])


# --------------------------------------------------------------------------
# physics: two-body Kepler problem of opposite charges
# --------------------------------------------------------------------------


def _kepler_state():
    # relative coordinate r'' = -2 r/|r|^3 (q1 q2 = -1, reduced mass 1/2);
    # apoapsis 1, relative speed 1 -> a = 2/3, periapsis 1/3, e = 1/2
    x = np.array([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])
    v = np.array([[0.0, 0.5, 0.0], [0.0, -0.5, 0.0]])
    q = np.array([1.0, -1.0])
    return x, v, q


def _kepler_energy_error(dt, t_end=5.0):
    x, v, q = _kepler_state()
    pos, vel, n_clip = sim.simulate(x, v, q, int(round(t_end / dt)), 1, dt=dt, return_n_clipped=True)
    assert n_clip == 0
    # stored v is half a step behind x; synchronise it for the energy
    v_sync = vel + 0.5 * dt * sim.forces(pos, q)
    return np.abs(sim.energy(pos, v_sync, q) - sim.energy(x, v, q)).max(), pos, vel


def test_kepler_energy_conserved_and_error_shrinks_with_dt():
    errs = [_kepler_energy_error(dt)[0] for dt in (0.002, 0.001, 0.0005)]
    E0 = abs(sim.energy(*_kepler_state()))
    assert errs[1] / E0 < 1e-4
    # leapfrog: second order in dt
    assert errs[1] < 0.3 * errs[0] and errs[2] < 0.3 * errs[1]


def test_kepler_orbit_geometry_and_angular_momentum():
    dt = 0.001
    _, pos, vel = _kepler_energy_error(dt)
    r = np.linalg.norm(pos[:, 0] - pos[:, 1], axis=-1)
    assert abs(r.min() - 1.0 / 3.0) < 1e-4  # periapsis
    period = 2 * np.pi * math.sqrt((2.0 / 3.0) ** 3 / 2.0)
    k = int(round(period / dt)) - 1  # record k is time (k + 1) dt
    rel0 = np.array([1.0, 0.0, 0.0])
    assert np.linalg.norm(pos[k, 0] - pos[k, 1] - rel0) < 5e-3
    # leapfrog conserves sum_i x_i(n) x v_i(n - 1/2) exactly for central forces
    L = np.cross(pos, vel).sum(axis=1)
    assert np.abs(L - L[0]).max() < 1e-12


def test_momentum_conserved_without_clipping():
    traj = sim.generate_trajectories(64, np.random.default_rng(7), return_n_clipped=True)
    P0 = traj["v0"].sum(axis=1)  # unit masses
    P = traj["v"].sum(axis=2)  # (n, 49, 3)
    dev = np.abs(P - P0[:, None]).max(axis=(1, 2))
    unclipped = traj["n_clipped"] == 0
    assert unclipped.sum() >= 10
    assert dev[unclipped].max() < 1e-10
    # clipping breaks Newton's third law: it shows up in the momentum
    if (~unclipped).any():
        assert dev[~unclipped].max() > 1e-6


# --------------------------------------------------------------------------
# protocol: frames, draws, determinism, rollouts
# --------------------------------------------------------------------------


def test_frame_indexing():
    assert sim.N_FRAMES == 49
    assert sim.frame_to_step(0) == 100 and sim.frame_to_step(48) == 4900
    assert sim.step_to_frame(3100) == 30 and sim.step_to_frame(4100) == 40
    traj = sim.generate_trajectories(3, np.random.default_rng(11))
    pos, vel = sim.simulate(traj["x0"], traj["v0"], traj["q"], 4900, 1)
    for k in (0, 1, 30, 40, 48):
        s = sim.frame_to_step(k)
        np.testing.assert_array_equal(traj["x"][:, k], pos[:, s - 1])
        np.testing.assert_array_equal(traj["v"][:, k], vel[:, s - 1])
    # velocity convention: v at a frame is the one that drifted x there
    s = sim.frame_to_step(30)
    np.testing.assert_allclose(traj["v"][:, 30], (pos[:, s - 1] - pos[:, s - 2]) / sim.DT, atol=1e-9)


def test_initial_conditions():
    x0, v0, q = sim.sample_initial_conditions(4000, np.random.default_rng(3))
    assert x0.shape == v0.shape == (4000, 5, 3) and q.shape == (4000, 5)
    assert set(np.unique(q)) == {-1.0, 1.0}
    assert abs((q == 1).mean() - 0.5) < 0.02
    np.testing.assert_allclose(np.linalg.norm(v0, axis=-1), 0.5, rtol=1e-12)
    assert abs(x0.mean()) < 0.03 and abs(x0.std() - 1.0) < 0.03


def test_determinism_by_seed():
    a = sim.generate_trajectories(3, np.random.default_rng(99))
    b = sim.generate_trajectories(3, np.random.default_rng(99))
    c = sim.generate_trajectories(3, np.random.default_rng(100))
    for k in ("x", "v", "q"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["x"], c["x"])
    # (make_splits determinism: test_splits_drawn_in_order_... and the cache
    # round trip compare make_splits outputs against fresh regenerations)


def test_splits_drawn_in_order_and_consistent_with_trajectories():
    splits = ds.make_splits(17, 3, 2, 4)
    rng = np.random.default_rng(17)
    for name, n in zip(ds.SPLITS, (3, 2, 4)):
        traj = sim.generate_trajectories(n, rng)
        s = splits[name]
        assert s["x"].shape == (n, 5, 3) and s["q"].shape == (n, 5)
        np.testing.assert_array_equal(s["q"], traj["q"])
        np.testing.assert_array_equal(s["x"], traj["x"][:, 30])
        np.testing.assert_array_equal(s["v"], traj["v"][:, 30])
        np.testing.assert_array_equal(s["target"], traj["x"][:, 40])
        np.testing.assert_array_equal(s["target_v"], traj["v"][:, 40])
    only = ds.make_splits(17, 3, 2, 4, only=("test",))
    assert set(only) == {"test"}
    np.testing.assert_array_equal(only["test"]["target"], splits["test"]["target"])


def test_rollout_ground_truth_continues_frames_exactly():
    traj = sim.generate_trajectories(3, np.random.default_rng(21))
    x30, v30, q = traj["x"][:, 30], traj["v"][:, 30], traj["q"]
    pos, vel = sim.simulate(x30, v30, q, 1800, 100)  # frames 31..48
    np.testing.assert_array_equal(pos, traj["x"][:, 31:])
    np.testing.assert_array_equal(vel, traj["v"][:, 31:])
    pos_k, _ = sim.simulate(x30, v30, q, 1000, 1000)  # one interval
    np.testing.assert_array_equal(pos_k[:, 0], traj["x"][:, 40])
    # unbatched input
    p1, v1 = sim.simulate(x30[0], v30[0], q[0], 1000, 500)
    assert p1.shape == (2, 5, 3)
    np.testing.assert_array_equal(p1[1], traj["x"][0, 40])


def test_time_reversed_split_retraces_the_trajectories():
    split = ds.make_splits(23, 6, 0, 0)["train"]
    back = ds.time_reversed(split)
    np.testing.assert_array_equal(back["x"], split["target"])
    np.testing.assert_array_equal(back["target"], split["x"])
    # the simulator started from the reversed frame-40 state lands on frame 30 ...
    pos, vel = sim.simulate(back["x"], back["v"], back["q"], 1000, 1000)
    np.testing.assert_allclose(pos[:, 0], split["x"], atol=1e-8)
    np.testing.assert_allclose(vel[:, 0], back["target_v"], atol=1e-8)
    # ... and reversing twice is the identity (the map is an involution)
    twice = ds.time_reversed(back)
    for key in ("x", "v", "target", "target_v"):
        np.testing.assert_allclose(twice[key], split[key], rtol=0, atol=1e-12)
    with pytest.raises(KeyError, match="frame-40 velocities"):
        ds.time_reversed({k: split[k] for k in ("x", "v", "q", "target")})


def test_training_frame_pairs_cut_the_training_trajectories():
    seed, n = 23, 6
    pairs = ds.training_frame_pairs([30, 12, 38], seed=seed, n_train=n)
    assert pairs["x"].shape == (3 * n, 5, 3) and pairs["q"].shape == (3 * n, 5)
    # input frame 30 is exactly the protocol's training split (same draws, same integration)
    split = ds.make_splits(seed, n, 2, 2)["train"]
    for key in ("x", "v", "q", "target", "target_v"):
        np.testing.assert_array_equal(pairs[key][:n], split[key])
    # the other pairs are frames k -> k + 10 of the same trajectories
    traj = sim.generate_trajectories(n, np.random.default_rng(seed))
    for block, k in ((1, 12), (2, 38)):
        rows = slice(block * n, (block + 1) * n)
        np.testing.assert_array_equal(pairs["x"][rows], traj["x"][:, k])
        np.testing.assert_array_equal(pairs["v"][rows], traj["v"][:, k])
        np.testing.assert_array_equal(pairs["target"][rows], traj["x"][:, k + 10])
        np.testing.assert_array_equal(pairs["target_v"][rows], traj["v"][:, k + 10])
        np.testing.assert_array_equal(pairs["q"][rows], traj["q"])
    for bad in ([39], [-1], []):
        with pytest.raises(ValueError, match="input frames|empty"):
            ds.training_frame_pairs(bad, seed=seed, n_train=n)


@pytest.mark.slow
def test_baselines_on_test_split():
    # the real benchmark test split (default seed, 3000/2000/2000)
    test = ds.make_splits(only=("test",))["test"]
    assert test["x"].shape == (2000, 5, 3)
    b = ds.baseline_mse(test)
    # reference values measured on an independent implementation
    assert abs(b["no_motion"] - 0.27) < 0.15 * 0.27, b
    assert abs(b["constant_velocity"] - 0.11) < 0.15 * 0.11, b


# --------------------------------------------------------------------------
# cache and evaluation format
# --------------------------------------------------------------------------

SMALL = dict(n_train=3, n_valid=2, n_test=2, seed=8)


def test_cache_roundtrip_and_default_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SINET_ASE_CACHE", str(tmp_path / "root"))
    assert ds.default_cache_dir() == tmp_path / "root" / "nbody"
    data = ds.load_nbody_dataset(None, **SMALL)
    path = ds.cache_path(None, SMALL["seed"], 3, 2, 2)
    assert path.exists() and path.parent == tmp_path / "root" / "nbody"
    assert not list(path.parent.glob("*.tmp"))
    again = ds.load_nbody_dataset(None, **SMALL)
    fresh = ds.make_splits(SMALL["seed"], 3, 2, 2)
    for name in ds.SPLITS:
        assert set(again[name]) == {"x", "v", "q", "target", "target_v"}
        for k in again[name]:
            np.testing.assert_array_equal(again[name][k], data[name][k])
            np.testing.assert_array_equal(again[name][k], fresh[name][k])
    monkeypatch.delenv("SINET_ASE_CACHE")
    assert str(ds.default_cache_dir()).endswith(os.path.join(".cache", "sinet_ase", "nbody"))


def test_cache_corruption_detected(tmp_path):
    data = ds.load_nbody_dataset(tmp_path, **SMALL)
    path = ds.cache_path(tmp_path, SMALL["seed"], 3, 2, 2)
    good = path.read_bytes()

    # 1) a flipped byte inside the float data of test/target
    raw = bytearray(good)
    magic = good.index(b"\x93NUMPY", good.index(b"test/target.npy"))
    raw[magic + 200] ^= 0xFF  # npy header is 128 bytes, data follows
    path.write_bytes(bytes(raw))
    with pytest.raises(ds.NBodyCacheError):
        ds.load_nbody_dataset(tmp_path, **SMALL, on_corrupt="raise")

    # 2) a well-formed npz whose content no longer matches its checksum
    path.write_bytes(good)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test/target"] = arrays["test/target"] + 1e-9
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ds.NBodyCacheError, match="checksum"):
        ds.load_nbody_dataset(tmp_path, **SMALL, on_corrupt="raise")

    # 3) truncated file
    path.write_bytes(good[: len(good) // 3])
    with pytest.raises(ds.NBodyCacheError):
        ds.load_nbody_dataset(tmp_path, **SMALL, on_corrupt="raise")

    # default policy: warn and regenerate (and repair the file)
    with pytest.warns(UserWarning, match="regenerating"):
        regen = ds.load_nbody_dataset(tmp_path, **SMALL)
    np.testing.assert_array_equal(regen["test"]["target"], data["test"]["target"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.load_nbody_dataset(tmp_path, **SMALL, on_corrupt="raise")


def test_cache_with_other_parameters_rejected(tmp_path):
    ds.load_nbody_dataset(tmp_path, **SMALL)
    src = ds.cache_path(tmp_path, SMALL["seed"], 3, 2, 2)
    other = ds.cache_path(tmp_path, SMALL["seed"] + 1, 3, 2, 2)
    other.write_bytes(src.read_bytes())  # valid checksum, wrong meta
    with pytest.raises(ds.NBodyCacheError, match="other parameters"):
        ds.load_nbody_dataset(tmp_path, 3, 2, 2, SMALL["seed"] + 1, on_corrupt="raise")


def test_evaluation_format(tmp_path):
    split = ds.make_splits(4, 2, 1, 1)["train"]
    p = tmp_path / "sub" / "train.npz"
    ds.save_npz_split(p, split)
    with np.load(p) as z:
        assert sorted(z.files) == ["q", "target", "v", "x"]
        assert z["x"].shape == (2, 5, 3) and z["q"].shape == (2, 5)
        assert z["target"].shape == (2, 5, 3) and z["v"].dtype == np.float64
    back = ds.load_npz_split(p)
    for k in ("x", "v", "q", "target"):
        np.testing.assert_array_equal(back[k], split[k])


def test_generate_command_writes_the_splits(tmp_path, capsys):
    from sinet_ase.nbody.generate import main

    sizes = ["--n-train", "2", "--n-valid", "1", "--n-test", "1"]
    assert main(["--out", str(tmp_path), *sizes]) == 0
    assert "MSE no-motion" in capsys.readouterr().out
    test = ds.load_npz_split(tmp_path / "test.npz")
    assert test["x"].shape == (1, sim.N_PARTICLES, 3)
