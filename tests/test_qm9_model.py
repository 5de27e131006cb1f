"""QM9 models and the ``qm9`` training task (sinet_ase.qm9).

Symmetries: scalar predictions invariant and the dipole vector equivariant
under O(3) (improper rotations included: mu is a polar vector), charges
neutral; e3nn's type-1 component order checked against a rotation. Training:
2 epochs on 500 molecules lower the validation MAE; the exported model
reloads to the same predictions; resume is exact; config errors are clear;
the evaluation command prints a Table-1 row.

Data: the real QM9 cache (``load_qm9()``, built from qm9pack on first use,
~40 s once per session, a few seconds to load afterwards), loaded once per
process and shared by every test.
"""

import importlib.util
import json

import numpy as np
import pytest
import torch
import yaml
from e3nn import o3

from sinet_ase import ConfigError, ModelFileError, load_model
from sinet_ase.qm9.cache import default_cache_dir
from sinet_ase.graph import batch_graphs
from sinet_ase.qm9.data import qm9_graph
from sinet_ase.qm9.model import (
    E_ANGSTROM_TO_DEBYE,
    QM9DipoleModel,
    QM9ScalarModel,
    backbone_keys,
    build_qm9_model,
    load_qm9_model,
    save_qm9_model,
    sh1_to_cartesian_matrix,
)
from sinet_ase.train import Trainer
from sinet_ase.train.config import TrainConfig

ELEMENTS = ["H", "C", "N", "O", "F"]
SMALL = dict(cutoff=5.0, lmax=2, channels=8, num_layers=2, mlp_hidden=16, radial_hidden=16)
#: rows with N, O and F among them (row 0 is methane; 25 molecules of varied size)
ROWS = [0, 2, 17, 130, 1042, 5007, 20011, 77777, 130830]

have_data = (default_cache_dir() / "qm9_v1.npz").is_file() or importlib.util.find_spec("qm9pack")
pytestmark = pytest.mark.skipif(not have_data, reason="no QM9 cache and no qm9pack (sinet-ase[qm9])")


@pytest.fixture(scope="session")
def qm9():
    from sinet_ase.qm9.data import qm9_dataset

    return qm9_dataset()


@pytest.fixture(scope="module")
def graphs(qm9):
    return [qm9_graph(qm9, r, SMALL["cutoff"], ELEMENTS) for r in ROWS]


def _random_o3(seed, improper):
    torch.manual_seed(seed)
    R = o3.rand_matrix(dtype=torch.float64)
    return -R if improper else R


def _transformed(graphs, R, shift):
    out = []
    for g in graphs:
        g = g.clone()
        g.pos = g.pos @ R.T + shift
        out.append(g)
    return batch_graphs(out)


def test_e3nn_type1_components_to_cartesian():
    P = sh1_to_cartesian_matrix()
    torch.manual_seed(0)
    v = torch.randn(20, 3, dtype=torch.float64)
    Y = o3.spherical_harmonics(1, v, normalize=True, normalization="component")
    assert torch.allclose(Y @ P, 3**0.5 * v / v.norm(dim=1, keepdim=True), atol=1e-12)
    # the e3nn representation of 1o is P R P^T in the basis it uses, for proper and improper R
    for improper in (False, True):
        R = _random_o3(1, improper)
        D = o3.Irreps("1o").D_from_matrix(R)
        assert torch.allclose(P.T @ D @ P, R, atol=1e-12)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
def test_scalar_prediction_is_invariant(graphs, pooling, improper):
    torch.manual_seed(0)
    model = QM9ScalarModel(
        **SMALL, pooling=pooling, target_mean=5.0, target_std=2.0, atom_refs={"H": -1.0, "C": 3.0, "O": 0.5}
    ).double()
    R = _random_o3(2, improper)
    before = model(batch_graphs(graphs))["prediction"]
    after = model(_transformed(graphs, R, torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)))["prediction"]
    assert before.abs().min() > 0.1
    assert torch.allclose(before, after, rtol=1e-9, atol=1e-9)
    # float32 weights keep the float64 constants exactly
    assert model.float().target_mean.dtype == torch.float64 and float(model.atom_ref[1]) == 3.0


def _backbone(name):
    if name == "sinet":
        return {}
    if "backbone" not in backbone_keys():
        pytest.skip("this SINetBackbone has no SiFormer option")
    return {"backbone": name, "num_heads": 2}


@pytest.mark.parametrize("backbone", ["sinet", "siformer"])
@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
def test_dipole_is_an_equivariant_polar_vector(graphs, improper, backbone):
    torch.manual_seed(0)
    model = QM9DipoleModel(**SMALL, target_std=1.5, **_backbone(backbone)).double()
    R = _random_o3(3, improper)
    shift = torch.tensor([-4.0, 0.5, 7.0], dtype=torch.float64)
    out = model(batch_graphs(graphs))
    rot = model(_transformed(graphs, R, shift))
    assert out["atomic_dipoles"].abs().max() > 1e-3  # the type-1 part contributes
    assert torch.allclose(rot["atomic_dipoles"], out["atomic_dipoles"] @ R.T, atol=1e-10)
    assert torch.allclose(rot["dipole"], out["dipole"] @ R.T, atol=1e-9)
    assert torch.allclose(rot["charges"], out["charges"], atol=1e-10)
    assert torch.allclose(rot["prediction"], out["prediction"], atol=1e-9)
    # the |mu| prediction is the norm of the vector; methane (Td, up to the 1e-5 Å rounding of
    # its QM9 geometry) gets ~0 from any equivariant model
    assert torch.allclose(out["prediction"], out["dipole"].norm(dim=1), atol=1e-8)
    norms = out["prediction"].detach()
    assert float(norms[0]) < 1e-3 < float(norms[1:].min())


def test_dipole_charges_are_neutral_and_make_the_dipole(graphs):
    torch.manual_seed(1)
    model = QM9DipoleModel(**SMALL).double()
    batch = batch_graphs(graphs)
    out = model(batch)
    total = torch.zeros(len(graphs), dtype=torch.float64).index_add(0, batch.batch, out["charges"])
    assert total.abs().max() < 1e-12
    assert out["charges"].abs().max() > 1e-3
    # mu = C (sum_i q_i x_i + sum_i mu_i): the centre does not matter for neutral charges
    moment = out["charges"].unsqueeze(1) * batch.pos + out["atomic_dipoles"]
    expected = E_ANGSTROM_TO_DEBYE * torch.zeros(len(graphs), 3, dtype=torch.float64).index_add(0, batch.batch, moment)
    assert torch.allclose(out["dipole"], expected, atol=1e-9)
    assert abs(E_ANGSTROM_TO_DEBYE - 4.80320) < 1e-5


def test_model_files_reload_exactly(graphs, tmp_path):
    torch.manual_seed(2)
    batch = batch_graphs(graphs)
    models = [
        QM9ScalarModel(**SMALL, target="alpha", target_mean=1.5, target_std=3.0, atom_refs={"C": 7.25}),
        QM9DipoleModel(**SMALL, target_std=1.5),
    ]
    if "backbone" in backbone_keys():
        models.append(QM9ScalarModel(**SMALL, backbone="siformer", num_heads=2))
    for model in models:
        path = tmp_path / f"{type(model).__name__}.pt"
        save_qm9_model(model, path, metadata={"target": model.target, "epoch": 3})
        payload = torch.load(path, weights_only=True)
        assert payload["model_type"] == type(model).__name__
        loaded = load_qm9_model(path)
        assert type(loaded) is type(model) and loaded.metadata["epoch"] == 3
        rebuilt = build_qm9_model(payload["config"])
        rebuilt.load_state_dict(payload["state_dict"])
        with torch.no_grad():
            expected = model.eval()(batch)["prediction"]
            assert torch.equal(loaded(batch)["prediction"], expected)
            assert torch.equal(rebuilt.eval()(batch)["prediction"], expected)
        assert type(load_model(path)) is type(model)  # the one reader loads every kind
        with pytest.raises(ModelFileError, match=f"holds a {type(model).__name__}, a qm9 model"):
            load_model(path, task="potential")  # what the calculator asks for
    with pytest.raises(ValueError, match="lmax >= 1"):
        QM9DipoleModel(lmax=0)
    with pytest.raises(ConfigError, match="no option.*bogus"):
        build_qm9_model({"target": "gap", "bogus": 1})


# --- training ---------------------------------------------------------------


def qm9_config(run_dir, target="gap", epochs=2, **qm9):
    raw = {
        "run_dir": str(run_dir),
        "seed": 0,
        "task": "qm9",
        "qm9": {"target": target, "train_subset": 500, "valid_subset": 100, "test_subset": 100, **qm9},
        "model": {"cutoff": 4.0, "lmax": 1, "channels": 8, "num_layers": 1, "mlp_hidden": 16, "radial_hidden": 16},
        "training": {
            "epochs": epochs,
            "batch_size": 16,
            "valid_batch_size": 100,
            "lr": 5e-3,
            "warmup_epochs": 0,
            "ema_decay": 0.5,
            "dtype": "float64",
        },
    }
    return TrainConfig.from_dict(raw)


@pytest.fixture(scope="module")
def gap_run(qm9, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("qm9") / "gap"
    trainer = Trainer(qm9_config(run_dir), quiet=True)
    before = trainer.evaluate(trainer.ema.module, trainer.graphs["valid"])
    summary = trainer.run()
    return trainer, before, summary, run_dir


def test_training_lowers_validation_mae(gap_run):
    trainer, before, summary, run_dir = gap_run
    assert summary["sizes"] == {"train": 500, "valid": 100, "test": 100}
    assert summary["target"] == "gap" and summary["unit"] == "meV" and summary["stats"]["pooling"] == "mean"
    assert summary["best"]["valid_mae"] < 0.85 * before["mae"]  # measured: 0.73
    for name in (
        "metrics.csv",
        "learning_curve.png",
        "parity.png",
        "summary.json",
        "checkpoint.pt",
        "split.json",
        "config.json",
        "best_model.pt",
    ):
        assert (run_dir / name).is_file(), name
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "train_loss", "valid_loss", "valid_mae"]
    split = json.loads((run_dir / "split.json").read_text())
    assert len(split["train"]) == 500 and not set(split["train"]) & set(split["test"])


def test_exported_model_reloads_to_the_same_predictions(gap_run):
    trainer, _, summary, run_dir = gap_run
    model = load_qm9_model(run_dir)  # the run folder's best_model.pt
    assert model.metadata["target"] == "gap" and model.metadata["split"] == "paper"
    again = trainer.evaluate(model.double(), trainer.graphs["valid"])
    assert again["mae"] == pytest.approx(summary["best"]["valid_mae"], rel=1e-12)
    # the checkpoint holds plain tensors and containers only
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["stats"]["target"] == "gap" and state["config"]["task"] == "qm9"


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(qm9, gap_run, tmp_path):
    full = gap_run[0]
    part = Trainer(qm9_config(tmp_path / "part"), quiet=True)
    assert part.run(stop_after_epoch=1) == {"stopped_at_epoch": 1}
    del part
    resumed = Trainer(qm9_config(tmp_path / "part"), resume=True, quiet=True)
    assert resumed.epoch == 1
    resumed.run()
    for (name, a), (_, b) in zip(full.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match=r"cannot change midway:\n  qm9\.target: 'gap' -> 'homo'"):
        Trainer(
            qm9_config(tmp_path / "part", target="homo", train_subset=20, valid_subset=10, test_subset=10),
            resume=True,
            quiet=True,
        )


def test_dipole_and_extensive_targets_train(qm9, tmp_path):
    for target, check in (("mu", "D"), ("alpha", "bohr^3")):
        config = qm9_config(
            tmp_path / target, target=target, epochs=1, train_subset=64, valid_subset=32, test_subset=32
        )
        summary = Trainer(config, quiet=True).run()
        assert summary["unit"] == check and np.isfinite(summary["test"]["mae"])
        model = load_qm9_model(tmp_path / target / "best_model.pt")
        assert type(model).__name__ == ("QM9DipoleModel" if target == "mu" else "QM9ScalarModel")
    # alpha is extensive: summed, with least-squares atom references (C's is the largest)
    refs = summary["stats"]["atom_refs"]
    assert summary["stats"]["pooling"] == "sum" and summary["stats"]["atomref"] == "fit"
    assert refs["C"] > refs["H"] > 0


def test_evaluate_command_prints_table(gap_run, capsys, tmp_path):
    from sinet_ase.qm9.evaluate import main

    out_json = tmp_path / "results.json"
    assert main([str(gap_run[3]), "--limit", "40", "--quiet", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "gap" in out and "40/10831" in out and "SINet (sinet-ase)" in out
    assert "subset of the split" in out
    assert [row["target"] for row in json.loads(out_json.read_text())] == ["gap"]
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left
    assert main([str(gap_run[3] / "missing.pt")]) == 2


# --- config errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"qm9": {"target": "gap", "traget": 1}}, r"unknown config key\(s\) qm9\.traget; valid keys here"),
        ({"qm9": {"target": "bandgap"}}, r"qm9\.target must be one of mu, alpha, homo"),
        ({"qm9": {"split": "random"}}, r"qm9\.split must be one of paper, egnn"),
        ({"qm9": {"train_subset": 0}}, r"qm9\.train_subset must be a positive whole number"),
        ({"qm9": {"atomref": "dataset", "target": "gap"}}, "dataset has no free-atom reference"),
        ({"data": {"train": ["x.extxyz"]}}, "remove the data section"),
        ({"training": {"forces_weight": 10.0}}, r"training\.forces_weight only apply to 'task: energy'"),
        ({"training": {"epohcs": 3}}, r"unknown config key\(s\) training\.epohcs"),
        ({"model": {"chanels": 8}}, r"unknown config key\(s\) model\.chanels"),
        ({"model": {"pooling": "max"}}, r"model\.pooling must be one of sum, mean"),
        ({"qm9": {"target": "mu"}, "model": {"lmax": 0}}, r"model\.lmax must be >= 1"),
        ({"qm9": {"target": "mu"}, "model": {"pooling": "sum"}}, "pooling does not apply to target mu"),
        ({"task": "qm10"}, "task must be one of energy, nbody, qm9"),
        (
            {"training": {"freeze": ["backbone"]}},
            r"task qm9 freezes no part of its model: training\.freeze must be \[\]",
        ),
    ],
)
def test_config_errors(change, message):
    raw = {"task": "qm9", "qm9": {"target": "gap"}}
    raw.update(change)
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(raw)


def test_energy_configs_refuse_the_qm9_section_and_round_trip(tmp_path, capsys):
    with pytest.raises(ConfigError, match="qm9 section is read only with 'task: qm9'"):
        TrainConfig.from_dict({"data": {"train": ["x"]}, "qm9": {"target": "gap"}})
    energy = TrainConfig.from_dict({"data": {"train": ["x"]}})
    assert energy.task == "energy" and "qm9" not in energy.to_dict()
    config = qm9_config(tmp_path / "r", target="homo")
    again = TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config and "forces_weight" not in config.to_dict()["training"]
    from sinet_ase.cli import train_main

    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert train_main([str(path), "qm9.bogus=1"]) == 2
    assert "unknown config key(s) qm9.bogus" in capsys.readouterr().err


def test_recipes_load():
    from pathlib import Path

    from sinet_ase.train import load_config

    root = Path(__file__).resolve().parents[1] / "training"
    for target in ("alpha", "gap", "homo", "lumo", "mu"):
        for suffix in ("", "_budget"):
            config = load_config(root / f"qm9_{target}{suffix}.yaml")
            assert config.task == "qm9" and config.qm9.target == target
            assert config.model["cutoff"] == 5.0
            if suffix:
                assert config.qm9.train_subset == 10_000 and config.training.max_minutes
            else:
                assert config.qm9.train_subset is None and config.qm9.split == "paper"
