"""N-body SINet: symmetries, training, checkpoints, resume, rollout (fast, one thread)."""

import numpy as np
import pytest
import torch

from sinet_ase.nbody import dataset as ds
from sinet_ase.nbody.evaluate import main as evaluate_main
from sinet_ase.nbody import simulator as sim
from sinet_ase.nbody.model import NBodySINet, load_nbody_model, pair_orbit_scalars, save_nbody_model
from sinet_ase.nbody.rollout import ground_truth, rollout, rollout_mse
from sinet_ase.nbody.model import nbody_model_from_dict, nbody_model_to_dict
from nbody_former_loop import learning_rate, load_config, train
from sinet_ase.nbody.evaluate import evaluate_mse, resolve_device
from sinet_ase.testing import default_dtype, random_orthogonal, relative_error

SMALL = dict(lmax=1, channels=16, num_layers=2, mlp_hidden=32, radial_hidden=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module's trainings (set when they run, not on import)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def small_data():
    """300 train / 100 valid / 100 test trajectories of the benchmark protocol."""
    return ds.make_splits(seed=7, n_train=300, n_valid=100, n_test=100)


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory):
    """20 epochs on 300 trajectories (lr raised to 3e-3 so that 60 steps suffice)."""
    out = tmp_path_factory.mktemp("nbody_run")
    config = load_config(None, {"model": SMALL, "train": dict(epochs=20, eval_every=5, lr=3e-3, seed=0)})
    summary = train(config, out, data=small_data, verbose=False)
    return out, summary, config


def _random_system(B=3, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n, 3, generator=g, dtype=torch.float64) * 2
    v = torch.randn(B, n, 3, generator=g, dtype=torch.float64) * 0.5
    q = torch.where(torch.rand(B, n, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    return x, v, q


@pytest.mark.parametrize(
    "backbone,coulomb,orbit",
    [("sinet", False, False), ("siformer", False, False), ("sinet", True, False), ("siformer", True, True)],
)
@pytest.mark.parametrize("lmax", [1, 3])
@pytest.mark.parametrize("parity", [False, True])
def test_model_is_e3_equivariant_and_permutation_equivariant(lmax, parity, backbone, coulomb, orbit):
    with default_dtype(torch.float64):
        torch.manual_seed(lmax)
        model = NBodySINet(
            **{**SMALL, "lmax": lmax}, backbone=backbone, coulomb_scalars=coulomb, orbit_scalars=orbit
        ).double()
    x, v, q = _random_system()
    out = model(x, v, q)
    assert out.shape == x.shape and out.dtype == torch.float64
    R = random_orthogonal(parity)
    t = torch.randn(3, dtype=torch.float64) * 5
    # rotation (with inversion) + translation: x_pred -> R x_pred + t
    assert relative_error(model(x @ R.T + t, v @ R.T, q), out @ R.T + t) < 1e-9
    # translation alone changes nothing but the offset
    assert relative_error(model(x + t, v, q), out + t) < 1e-9
    # permuting the particles permutes the prediction
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(1))
    assert relative_error(model(x[:, perm], v[:, perm], q[:, perm]), out[:, perm]) < 1e-9
    # unbatched input
    assert relative_error(model(x[1], v[1], q[1]), out[1]) < 1e-12


def test_model_depends_on_charges_and_velocities():
    torch.manual_seed(0)
    model = NBodySINet(**SMALL).double()
    x, v, q = _random_system()
    out = model(x, v, q)
    assert (model(x, v, -q) - out).abs().max() > 1e-6  # flip all charges: q_i q_j same, q_i not
    assert (model(x, v * 1.1, q) - out).abs().max() > 1e-6


def test_training_beats_constant_velocity_baseline(trained, small_data):
    out, summary, _ = trained
    baseline = ds.baseline_mse(small_data["test"])["constant_velocity"]
    assert summary["epochs_done"] == 20
    assert summary["test_mse_at_best"] < baseline, (summary, baseline)
    assert (out / "best.pt").is_file() and (out / "checkpoint.pt").is_file() and (out / "log.json").is_file()


def test_checkpoint_reloads_with_same_test_mse(trained, small_data, tmp_path, capsys):
    out, summary, _ = trained
    for name in ("best.pt", "checkpoint.pt"):  # both are plain tensors + containers
        assert isinstance(torch.load(out / name, weights_only=True), dict)
    model = load_nbody_model(out / "best.pt")
    assert model.metadata["best_epoch"] == summary["best_epoch"]
    # a constant learning rate records no schedule length (only cosine fixes one at the start)
    assert load_config(None, {})["train"]["lr_schedule"] == "constant"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["train"]["schedule_epochs"] is None
    # float32 sums over several threads may round differently from the training run's
    assert evaluate_mse(model, small_data["test"]) == pytest.approx(summary["test_mse_at_best"], rel=1e-5)
    # the evaluation command on an .npz in the documented format
    npz = tmp_path / "test.npz"
    ds.save_npz_split(npz, small_data["test"])
    assert evaluate_main([str(out / "best.pt"), str(npz)]) == 0
    printed = capsys.readouterr().out
    reported = float(printed.split("test MSE:")[1].split()[0])
    assert reported == pytest.approx(summary["test_mse_at_best"], rel=1e-5, abs=1e-6)
    # a comma-joined list is one ensemble: the mean of the members' predictions
    torch.manual_seed(1)
    save_nbody_model(NBodySINet(**SMALL), tmp_path / "other.pt")  # untrained: a different member
    assert evaluate_main([f"{out / 'best.pt'},{tmp_path / 'other.pt'}", str(npz)]) == 0
    printed = capsys.readouterr().out
    other = load_nbody_model(tmp_path / "other.pt")
    ensemble = evaluate_mse([model, other], small_data["test"])
    assert ensemble not in (
        pytest.approx(evaluate_mse(model, small_data["test"])),
        pytest.approx(evaluate_mse(other, small_data["test"])),
    )
    assert "ensemble of 2 models" in printed and f"test MSE: {ensemble:.6f}" in printed
    with pytest.raises(SystemExit):
        evaluate_main([f"{out / 'best.pt'},{out / 'best.pt'}", str(npz), "--time"])
    # bad data: a clear one-line error and exit code 2, not "test MSE: nan" or a tensor error
    bad = {k: np.array(a, dtype=np.float64) for k, a in small_data["test"].items() if k in ds.EVAL_KEYS}
    bad["x"][0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    four = {k: a[:, :4] for k, a in small_data["test"].items() if k in ds.EVAL_KEYS}
    np.savez(tmp_path / "four.npz", **four)
    capsys.readouterr()
    assert evaluate_main([str(out / "best.pt"), str(tmp_path / "nan.npz")]) == 2
    assert "x holds NaN" in capsys.readouterr().err
    assert evaluate_main([str(out / "best.pt"), str(tmp_path / "four.npz")]) == 2
    err = capsys.readouterr().err
    assert "has shape" in err and "5 particles" in err


def test_rollout_shapes_and_single_step(trained, small_data):
    out, _, _ = trained
    model = load_nbody_model(out / "best.pt")
    s = {k: a[:4] for k, a in small_data["test"].items()}
    pred = rollout(model, s["x"], s["v"], s["q"], K=3)
    assert pred["x"].shape == (4, 3, 5, 3) and pred["v"].shape == (4, 3, 5, 3)
    assert np.isfinite(pred["x"]).all()
    with torch.no_grad():
        one = model(torch.as_tensor(s["x"]), torch.as_tensor(s["v"]), torch.as_tensor(s["q"])).numpy()
    np.testing.assert_allclose(rollout(model, s["x"], s["v"], s["q"], K=1)["x"][:, 0], one, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pred["x"][:, 0], one, rtol=0, atol=1e-12)
    for method in ("bdf2", "constant_acceleration"):
        other = rollout(model, s["x"], s["v"], s["q"], K=2, velocity=method)
        np.testing.assert_allclose(other["x"][:, 0], one, rtol=0, atol=1e-12)
    # unbatched
    assert rollout(model, s["x"][0], s["v"][0], s["q"][0], K=3)["x"].shape == (3, 5, 3)
    # ground truth continues the dataset exactly: interval 1 is the stored target
    truth = ground_truth(s["x"], s["v"], s["q"], K=3)
    assert truth["x"].shape == (4, 3, 5, 3)
    np.testing.assert_array_equal(truth["x"][:, 0], s["target"])
    np.testing.assert_array_equal(truth["v"][:, 0], s["target_v"])
    assert rollout_mse(pred["x"], truth["x"]).shape == (3,)


def test_resume_matches_uninterrupted_run(small_data, tmp_path):
    data = {k: {f: a[:100] for f, a in s.items()} for k, s in small_data.items()}
    config = load_config(
        None,
        {"model": dict(SMALL, channels=8, num_layers=1), "train": dict(epochs=4, eval_every=2, batch_size=50, seed=3)},
    )
    full = train(config, tmp_path / "full", data=data, verbose=False)
    part = train(config, tmp_path / "part", data=data, verbose=False, stop_after=3)
    assert part["epochs_done"] == 3
    resumed = train(config, tmp_path / "part", data=data, verbose=False, resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for key, tensor in a["model"]["state_dict"].items():
        assert torch.equal(tensor, b["model"]["state_dict"][key]), key
    assert resumed["best_valid_mse"] == full["best_valid_mse"]
    assert resumed["test_mse_at_best"] == full["test_mse_at_best"]
    assert [h["train_mse"] for h in a["history"]] == [h["train_mse"] for h in b["history"]]


def test_evaluate_mse_of_an_ensemble_is_the_mse_of_the_mean_prediction(small_data):
    data = {f: a[:150] for f, a in small_data["test"].items()}
    torch.manual_seed(0)
    a, b = NBodySINet(**SMALL), NBodySINet(**SMALL)
    assert evaluate_mse([a, a], data) == pytest.approx(evaluate_mse(a, data), rel=1e-12)
    with torch.no_grad():
        x, v, q = (torch.as_tensor(data[k], dtype=torch.float32) for k in ("x", "v", "q"))
        mean = (a.displacement(x, v, q).double() + b.displacement(x, v, q).double()) / 2
    expected = float(((mean - torch.as_tensor(data["target"] - data["x"])) ** 2).mean())
    assert evaluate_mse([a, b], data, batch_size=40) == pytest.approx(expected, rel=1e-6)
    assert evaluate_mse([a, b], data) < max(evaluate_mse(a, data), evaluate_mse(b, data))


def test_cosine_schedule_and_ema_resume_exactly(small_data, tmp_path):
    """lr_schedule=cosine and ema_decay: an interrupted run with more --epochs on resume keeps
    the schedule fixed at the start and ends with the same raw and averaged weights."""
    data = {k: {f: a[:100] for f, a in s.items()} for k, s in small_data.items()}
    config = load_config(
        None,
        {
            "model": dict(SMALL, channels=8, num_layers=1),
            "train": dict(
                epochs=4, eval_every=2, batch_size=50, seed=3, lr_schedule="cosine", lr_min=1e-5, ema_decay=0.9
            ),
        },
    )
    full = train(config, tmp_path / "full", data=data, verbose=False)
    train(config, tmp_path / "part", data=data, verbose=False, stop_after=3)
    resumed = train(config, tmp_path / "part", data=data, verbose=False, resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert a["config"]["train"]["schedule_epochs"] == 4
    for key, tensor in a["model"]["state_dict"].items():
        assert torch.equal(tensor, b["model"]["state_dict"][key]), key
    for key, tensor in a["ema"].items():  # averaged weights and update count
        assert torch.equal(tensor, b["ema"][key]), key
    # the averaged weights differ from the raw ones, and they are what best.pt holds
    raw = a["model"]["state_dict"]
    ema = {k[len("module.") :]: t for k, t in a["ema"].items() if k.startswith("module.")}
    assert set(ema) == set(raw)
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    assert resumed["test_mse_at_best"] == full["test_mse_at_best"]
    best = load_nbody_model(tmp_path / "full" / "best.pt")
    # float32 networks: a reloaded copy may round a few predictions differently (seen on one
    # CPU: 5e-12 relative in the MSE), far below what raw instead of averaged weights change
    best_mse = evaluate_mse(best, data["test"])
    assert best_mse == pytest.approx(full["test_mse_at_best"], rel=1e-7)
    best.load_state_dict(raw)
    assert evaluate_mse(best, data["test"]) != pytest.approx(best_mse, rel=1e-5)
    # the schedule: lr at epoch 1, lr_min from schedule_epochs on (here 4), cosine between
    tc = a["config"]["train"]
    assert learning_rate(tc, 1) == pytest.approx(5e-4)
    assert learning_rate(tc, 3) == pytest.approx(1e-5 + (5e-4 - 1e-5) * 0.5 * (1 + np.cos(np.pi * 2 / 4)))
    assert learning_rate(tc, 5) == learning_rate(tc, 50) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(dict(tc, lr_schedule="step"), 1)
    with pytest.raises(ValueError, match="ema_decay"):
        train(
            load_config(None, {"model": SMALL, "train": dict(ema_decay=1.5)}),
            tmp_path / "bad",
            data=data,
            verbose=False,
        )


def test_siformer_backbone_model_file_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = NBodySINet(**SMALL, backbone="siformer", num_heads=4).double()
    assert model.config["backbone"] == "siformer"
    assert NBodySINet(**SMALL).config["backbone"] == "sinet"  # every option stored, defaults too
    x, v, q = _random_system()
    again = nbody_model_from_dict(nbody_model_to_dict(model))
    assert type(again.layers[0]).__name__ == "SiFormerLayer"
    assert torch.equal(again(x, v, q), model(x, v, q))
    with pytest.raises(ValueError, match="backbone"):
        NBodySINet(**SMALL, backbone="transformer")


def test_max_minutes_stops_at_a_validation_and_resume_continues(small_data, tmp_path):
    data = {k: {f: a[:100] for f, a in s.items()} for k, s in small_data.items()}
    config = load_config(
        None,
        {
            "model": dict(SMALL, channels=8, num_layers=1),
            "train": dict(epochs=6, eval_every=2, batch_size=50, seed=3, max_minutes=0.0),
        },
    )
    stopped = train(config, tmp_path, data=data, verbose=False)
    assert stopped["epochs_done"] == 2  # the first validation, not epoch 1
    config["train"]["max_minutes"] = None  # a resume may lift the limit
    done = train(config, tmp_path, data=data, verbose=False, resume=True)
    assert done["epochs_done"] == 6


def test_time_reversal_doubles_the_training_set_only(small_data, tmp_path, capsys):
    config = load_config(None, {"model": SMALL, "train": dict(epochs=1, eval_every=1, time_reversal=True)})
    summary = train(config, tmp_path, data=small_data, verbose=True)
    assert "600 train / 100 valid / 100 test" in capsys.readouterr().out
    # validation and test stay the protocol's: the logged test MSE is the model's on small_data["test"]
    model = load_nbody_model(tmp_path / "best.pt")
    assert evaluate_mse(model, small_data["test"]) == pytest.approx(summary["test_mse_at_best"], rel=1e-6)


def test_input_frames_add_training_pairs_only(small_data, tmp_path, capsys):
    config = load_config(
        None,
        {
            "model": SMALL,
            "data": dict(seed=7, n_train=300, n_valid=100, n_test=100),
            "train": dict(epochs=1, eval_every=1, input_frames=[29, 30], time_reversal=True),
        },
    )
    summary = train(config, tmp_path, data=small_data, verbose=True)
    assert "1200 train / 100 valid / 100 test" in capsys.readouterr().out  # 2 frames x 2 directions
    model = load_nbody_model(tmp_path / "best.pt")
    assert evaluate_mse(model, small_data["test"]) == pytest.approx(summary["test_mse_at_best"], rel=1e-6)


@pytest.mark.parametrize("recipe", ["nbody.yaml", "nbody_best.yaml"])
def test_nbody_recipes_load_and_build(recipe):
    """The recipes are sinet-train configs of the nbody task (tests/test_nbody_task.py)."""
    from pathlib import Path

    from sinet_ase.train import load_config as load_train_config

    config = load_train_config(Path(__file__).resolve().parents[1] / "training" / recipe)
    assert config.task == "nbody"
    model = NBodySINet(**config.model)
    assert model.num_parameters() > 1000
    assert config.training.weight_decay >= 0
    frames = config.nbody.input_frames
    if frames is not None:  # every listed pair exists: k + 10 <= the last recorded frame
        assert all(0 <= k and k + 10 < sim.N_FRAMES for k in frames) and 30 in frames


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_coulomb_scalars_option_roundtrip_and_clamp():
    """``coulomb_scalars`` adds q_i q_j / r^2 / 10 and 1 / (10 r) (r clamped at 0.1) to the edge scalars."""
    torch.manual_seed(0)
    model = NBodySINet(**SMALL, coulomb_scalars=True).double()
    assert model.config["coulomb_scalars"] is True
    assert NBodySINet(**SMALL).config["coulomb_scalars"] is False
    x, v, q = _random_system()
    again = nbody_model_from_dict(nbody_model_to_dict(model))
    assert again.coulomb_scalars and torch.equal(again(x, v, q), model(x, v, q))
    # the extra scalars reach the output: same weights without them differ in shape
    assert (
        model.layers[0].interaction.num_edge_scalars == NBodySINet(**SMALL).layers[0].interaction.num_edge_scalars + 2
    )
    # two particles 0.05 apart (below the clamp) give a finite prediction
    x2 = x.clone()
    x2[0, 1] = x2[0, 0] + torch.tensor([0.05, 0.0, 0.0], dtype=torch.float64)
    assert torch.isfinite(model(x2, v, q)).all()


def test_orbit_scalars_give_the_two_body_periapsis():
    """``pair_orbit_scalars``: the periapsis of an approaching, attracting pair equals the
    closest approach of the simulator's own two-body trajectory (no clipping, small dt); the scalars are
    symmetric in i <-> j and unchanged by a global charge flip; the option round-trips."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 3))
    v = 0.7 * rng.standard_normal((6, 2, 3))
    # approaching pairs, so that the periapsis lies ahead of the simulated interval
    approaching = np.einsum("bi,bi->b", x[:, 1] - x[:, 0], v[:, 1] - v[:, 0]) < 0
    v = np.where(approaching[:, None, None], v, -v)
    q = np.tile([1.0, -1.0], (6, 1))
    pos, _ = sim.simulate(x, v, q, 20000, 1, dt=0.0005, max_force=np.inf)
    closest = np.linalg.norm(pos[:, :, 0] - pos[:, :, 1], axis=-1).min(axis=1)
    t = {k: torch.tensor(a) for k, a in dict(x=x, v=v, q=q).items()}
    vec, rel_v, qq = t["x"][:, 1] - t["x"][:, 0], t["v"][:, 1] - t["v"][:, 0], t["q"][:, 0] * t["q"][:, 1]
    s = pair_orbit_scalars(vec, rel_v, qq)
    periapsis = 0.1 / s[:, 3] - 0.1
    assert np.allclose(periapsis.numpy(), closest, rtol=2e-3), (periapsis, closest)
    assert torch.allclose(pair_orbit_scalars(-vec, -rel_v, qq), s)
    # repulsion, head-on (h = 0): the turning point kappa / eps, finite
    head_on = pair_orbit_scalars(torch.tensor([[1.0, 0, 0]]), torch.tensor([[-2.0, 0, 0]]), torch.tensor([1.0]))
    eps = 0.5 * 4 + 2 / 1.0
    assert torch.allclose(0.1 / head_on[0, 3] - 0.1, torch.tensor(2 / eps))
    torch.manual_seed(0)
    model = NBodySINet(**SMALL, orbit_scalars=True, node_charges=False).double()
    assert model.config["orbit_scalars"] is True and NBodySINet(**SMALL).config["orbit_scalars"] is False
    xs, vs, qs = _random_system()
    out = model(xs, vs, qs)
    assert relative_error(model(xs, vs, -qs), out) < 1e-12
    again = nbody_model_from_dict(nbody_model_to_dict(model))
    assert again.orbit_scalars and torch.equal(again(xs, vs, qs), out)
    out.sum().backward()  # finite gradients through both branches of the periapsis
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("backbone", ["sinet", "siformer"])
def test_without_node_charges_the_model_is_invariant_under_charge_flip(backbone):
    """``node_charges=False``: charges enter only as q_i q_j, so q -> -q leaves the prediction
    unchanged (a symmetry of the dynamics), while swapping one particle's charge changes it."""
    torch.manual_seed(0)
    model = NBodySINet(**SMALL, backbone=backbone, node_charges=False, coulomb_scalars=True).double()
    assert model.config["node_charges"] is False
    assert NBodySINet(**SMALL).config["node_charges"] is True
    x, v, q = _random_system()
    out = model(x, v, q)
    assert relative_error(model(x, v, -q), out) < 1e-12
    q_one = q.clone()
    q_one[:, 0] = -q_one[:, 0]
    assert relative_error(model(x, v, q_one), out) > 1e-4
    # still E(3) equivariant with parity
    R = random_orthogonal(True)
    assert relative_error(model(x @ R.T, v @ R.T, q), out @ R.T) < 1e-9
    again = nbody_model_from_dict(nbody_model_to_dict(model))
    assert not again.node_charges and torch.equal(again(x, v, q), out)
    # the default model does see a global flip (it has q_i as a node input)
    default = NBodySINet(**SMALL).double()
    assert relative_error(default(x, v, -q), default(x, v, q)) > 1e-4


def test_resume_with_another_model_config_names_the_difference(small_data, tmp_path):
    config = load_config(None, {"model": dict(SMALL, channels=4), "train": dict(epochs=1, eval_every=1)})
    train(config, tmp_path, data=small_data, verbose=False)
    other = load_config(None, {"model": dict(SMALL, channels=8), "train": dict(epochs=2, eval_every=1)})
    with pytest.raises(ValueError, match=r"model.channels: checkpoint 4, now 8"):
        train(other, tmp_path, data=small_data, verbose=False, resume=True)


def test_simulator_is_galilean_so_a_boost_moves_the_target_by_u_times_the_horizon():
    """The symmetry that ``galilean_horizon`` builds in, checked on the simulator itself: adding
    ``U`` to every velocity moves the positions 1,000 steps (1.0 time unit) later by ``U``,
    close encounters and force clipping included."""
    rng = np.random.default_rng(3)
    x, v, q = sim.sample_initial_conditions(50, rng)
    U = rng.normal(size=(50, 1, 3)) * 0.3
    steps = 1000
    plain = sim.simulate(x, v, q, steps, record_every=steps)
    boosted = sim.simulate(x, v + U, q, steps, record_every=steps)
    shift = U * steps * sim.DT
    np.testing.assert_allclose(boosted[0][:, 0] - shift, plain[0][:, 0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("backbone", ["sinet", "siformer"])
def test_galilean_horizon_makes_the_model_galilean_equivariant(backbone):
    """``galilean_horizon=T``: ``v -> v + U`` for every particle moves the prediction by ``U T``,
    exactly; E(3) equivariance stays; the option round-trips through a model file."""
    torch.manual_seed(0)
    model = NBodySINet(
        **SMALL, backbone=backbone, orbit_scalars=True, coulomb_scalars=True, galilean_horizon=1.0
    ).double()
    assert model.config["galilean_horizon"] == 1.0
    assert NBodySINet(**SMALL).config["galilean_horizon"] is None
    x, v, q = _random_system()
    out = model(x, v, q)
    U = torch.randn(3, 1, 3, dtype=torch.float64)
    assert relative_error(model(x, v + U, q), out + U * 1.0) < 1e-12
    R = random_orthogonal(True)
    t = torch.randn(3, dtype=torch.float64)
    assert relative_error(model(x @ R.T + t, v @ R.T, q), out @ R.T + t) < 1e-9
    again = nbody_model_from_dict(nbody_model_to_dict(model))
    assert again.galilean_horizon == 1.0 and torch.equal(again(x, v, q), out)
    # the default model reads absolute velocities: a boost changes more than the drift
    default = NBodySINet(**SMALL, backbone=backbone).double()
    assert relative_error(default(x, v + U, q), default(x, v, q) + U) > 1e-4
