"""DFT data handling: label keys (REF_*, virials), E0s (file, dict, isolated-atom frames),
Huber loss and per-config-type weights, and the ``sinet-eval`` command."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from test_train import emt_crystals, emt_frames

from sinet_ase import ConfigError, SINet, SINetCalculator, save_model
from sinet_ase.cli import eval_main
from sinet_ase.potential.data import fit_atomic_energies, read_atomic_energies, read_structures
from sinet_ase.graph import atoms_to_graph
from sinet_ase.labels import LabelKeys, config_type, get_stress
from sinet_ase.train import Trainer
from sinet_ase.train.config import TrainConfig

REF = LabelKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress", virials="REF_virials")
E0 = {"H": -13.5, "C": -1025.0, "O": -2035.0, "N": -1479.0}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def to_ref(frames, virials_shape=None):
    """Copies whose labels sit in info/arrays as REF_* (MACE style); stress as virials
    ``W = -sigma V`` of shape ``virials_shape`` ((3, 3), (9,) or (6,)) when given."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        copy.info["REF_energy"] = atoms.get_potential_energy()
        copy.arrays["REF_forces"] = atoms.get_forces()
        if virials_shape is not None:
            if virials_shape == (6,):
                copy.info["REF_virials"] = -atoms.get_stress() * atoms.get_volume()
            else:
                w = -atoms.get_stress(voigt=False) * atoms.get_volume()
                copy.info["REF_virials"] = w.reshape(virials_shape)
        out.append(copy)
    return out


def isolated(symbol, energy, key=None):
    """A one-atom frame of config_type isolated_atom; energy in the calculator or info[key]."""
    atoms = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
    atoms.info["config_type"] = "isolated_atom"
    if key is None:
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
    else:
        atoms.info[key] = energy
    return atoms


def tagged(frames, config_type):
    for atoms in frames:
        atoms.info["config_type"] = config_type
    return frames


def config(train, run_dir, data=None, **training):
    raw = {
        "run_dir": str(run_dir),
        "seed": 1,
        "data": {"train": [str(p) for p in train], "valid_size": 0.2, **(data or {})},
        "model": {"cutoff": 4.0, "lmax": 1, "channels": 8, "num_layers": 1, "mlp_hidden": 16, "radial_hidden": 16},
        "training": {
            "epochs": 2,
            "batch_size": 4,
            "lr": 5e-3,
            "warmup_epochs": 0,
            "ema_decay": 0.5,
            "dtype": "float64",
            **training,
        },
    }
    return TrainConfig.from_dict(raw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dft")
    ethanol = tagged(emt_frames("CH3CH2OH", 20, 10), "md")
    water = tagged(emt_frames("H2O", 10, 11), "water")
    write(d / "mixed.extxyz", ethanol + water)
    write(d / "mixed_ref.extxyz", to_ref(ethanol + water))
    write(d / "with_isolated.extxyz", [isolated(s, E0[s]) for s in "HCO"] + ethanol)
    write(d / "isolated_atoms.xyz", [isolated(s, e) for s, e in E0.items()])
    crystals = emt_crystals(6, 12)
    write(d / "cu.extxyz", crystals)
    for shape in ((3, 3), (9,), (6,)):
        write(d / f"cu_virials_{'x'.join(map(str, shape))}.extxyz", to_ref(crystals, shape))
    return d


# --- label keys -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["3x3", "9", "6"])
def test_ref_keys_and_virials_give_the_calculator_labels(files, shape):
    """REF_energy/REF_forces and REF_virials (3x3, 9 or Voigt 6) read back as energy, forces
    and stress = -virials / volume (the EMT labels); the default keys read calc results."""
    plain = read(files / "cu.extxyz", ":")
    ref = read(files / f"cu_virials_{shape}.extxyz", ":")
    assert "energy" not in getattr(ref[0].calc, "results", {}) and "REF_virials" in ref[0].info
    assert np.asarray(ref[0].info["REF_virials"]).size == (9 if shape == "3x3" else int(shape))
    for a, b in zip(plain, ref):
        g_plain = atoms_to_graph(a, 4.0, ["Cu"], with_labels=True)
        g_ref = atoms_to_graph(b, 4.0, ["Cu"], with_labels=True, keys=REF)
        for key in ("energy", "forces", "stress"):
            assert torch.allclose(getattr(g_plain, key), getattr(g_ref, key), atol=1e-10), key
    assert np.allclose(get_stress(ref[0], REF), plain[0].get_stress(voigt=False), atol=1e-12)


def test_missing_or_misshaped_labels_are_config_errors(files, tmp_path):
    with pytest.raises(ConfigError, match="no energy \\(key 'REF_energy'\\)"):
        read_structures(files / "mixed.extxyz", keys=REF)
    with pytest.raises(ConfigError, match="stress \\(key 'stress' or virials 'virials'\\)"):
        read_structures(files / "mixed.extxyz", require_stress=True)
    bad = emt_frames("H2O", 1, 0)
    bad[0].info["REF_virials"] = np.zeros(4)
    bad[0].info["REF_energy"] = 0.0
    write(tmp_path / "bad.extxyz", bad)
    with pytest.raises(ConfigError, match="frame 0: virials label 'REF_virials' has shape"):
        read_structures(tmp_path / "bad.extxyz", require_forces=False, require_stress=True, keys=REF)


def test_training_setup_with_ref_keys_equals_default_keys(files, tmp_path):
    plain = Trainer(config([files / "mixed.extxyz"], tmp_path / "a"), quiet=True)
    ref = Trainer(
        config([files / "mixed_ref.extxyz"], tmp_path / "b", {"energy_key": "REF_energy", "forces_key": "REF_forces"}),
        quiet=True,
    )
    assert ref.stats["atomic_energies"] == pytest.approx(plain.stats["atomic_energies"])
    assert ref.stats["energy_scale"] == pytest.approx(plain.stats["energy_scale"])
    assert ref.stats["avg_num_neighbors"] == plain.stats["avg_num_neighbors"]
    for a, b in zip(plain.graphs["train"], ref.graphs["train"]):
        assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)


# --- E0s --------------------------------------------------------------------------------


def test_atomic_energies_from_file_and_dict(files, tmp_path):
    from_file = Trainer(
        config([files / "mixed.extxyz"], tmp_path / "f", {"atomic_energies": str(files / "isolated_atoms.xyz")}),
        quiet=True,
    )
    assert from_file.stats["atomic_energies"] == {s: E0[s] for s in "HCO"}  # N is not used
    given = {"H": -1.0, "C": -2.0, "O": -3.0}
    from_dict = Trainer(config([files / "mixed.extxyz"], tmp_path / "d", {"atomic_energies": given}), quiet=True)
    assert from_dict.stats["atomic_energies"] == given
    assert from_dict.model.config["atomic_energies"] == given
    with pytest.raises(ConfigError, match="no E0 for O"):
        Trainer(
            config([files / "mixed.extxyz"], tmp_path / "x", {"atomic_energies": {"H": -1.0, "C": -2.0}}), quiet=True
        )
    with pytest.raises(ConfigError, match="neither 'fit' nor an existing file"):
        Trainer(
            config([files / "mixed.extxyz"], tmp_path / "y", {"atomic_energies": str(tmp_path / "missing.xyz")}),
            quiet=True,
        )
    with pytest.raises(ConfigError, match="values must be numbers"):
        config([files / "mixed.extxyz"], tmp_path / "z", {"atomic_energies": {"H": "a"}})


def test_isolated_atom_frames_in_training_file_are_e0s_not_training(files, tmp_path):
    trainer = Trainer(config([files / "with_isolated.extxyz"], tmp_path / "r"), quiet=True)
    assert trainer.stats["atomic_energies"] == {s: E0[s] for s in "HCO"}
    assert trainer.sizes["train"] + trainer.sizes["valid"] == 20  # the 20 ethanol frames
    assert all(g.pos.shape[0] == 9 for g in trainer.graphs["train"] + trainer.graphs["valid"])
    record = json.loads((tmp_path / "r" / "split.json").read_text())
    entry = record[str(files / "with_isolated.extxyz")]
    assert entry["isolated_atom"] == [0, 1, 2]
    assert sorted(entry["train"] + entry["valid"] + entry["test"]) == list(range(3, 23))
    # an explicit choice wins over the frames
    explicit = Trainer(
        config([files / "with_isolated.extxyz"], tmp_path / "e", {"atomic_energies": {"H": 1.0, "C": 2.0, "O": 3.0}}),
        quiet=True,
    )
    assert explicit.stats["atomic_energies"] == {"H": 1.0, "C": 2.0, "O": 3.0}


def test_fit_keeps_known_e0s_and_fits_the_rest():
    rng = np.random.default_rng(0)
    true = {"H": -13.0, "C": -1000.0, "O": -2000.0}
    frames = []
    for _ in range(12):
        n = dict(zip("HCO", rng.integers(1, 5, size=3)))
        atoms = Atoms("".join(s * int(k) for s, k in n.items()))
        atoms.calc = SinglePointCalculator(atoms, energy=sum(true[s] * n[s] for s in n) + 0.5)
        frames.append(atoms)
    fitted = fit_atomic_energies(frames, ["H", "C", "O"], fixed={"H": -13.0})
    assert fitted["H"] == -13.0
    full = fit_atomic_energies(frames, ["H", "C", "O"])
    assert not np.allclose([full[s] for s in "HCO"], [fitted[s] for s in "HCO"])
    # with H fixed, the remaining least squares still solve the data (the offset spreads)
    for atoms in frames:
        counts = {s: atoms.get_chemical_symbols().count(s) for s in "HCO"}
        assert abs(sum(fitted[s] * counts[s] for s in "HCO") - atoms.get_potential_energy()) < 1.5


def test_bad_isolated_atom_frames(tmp_path):
    two = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    two.calc = SinglePointCalculator(two, energy=-1.0)
    write(tmp_path / "iso.xyz", [isolated("H", -1.0), two])
    with pytest.raises(ConfigError, match="frame 1: an isolated-atom frame must hold one atom"):
        read_atomic_energies(str(tmp_path / "iso.xyz"))
    write(tmp_path / "iso2.xyz", [isolated("H", -1.0), isolated("H", -2.0)])
    with pytest.raises(ConfigError, match="two isolated-atom energies for H"):
        read_atomic_energies(str(tmp_path / "iso2.xyz"))


def test_frame_selection_syntax_reads_the_frames_ase_would(files):
    path = files / "mixed.extxyz"
    frames = read(path, ":")
    head, tail = read_structures(f"{path}@:20"), read_structures(f"{path}@20:")
    assert len(head) == 20 and len(tail) == len(frames) - 20
    assert np.allclose(tail[0].positions, frames[20].positions)
    assert np.allclose(read_structures(f"{path}@5")[0].positions, frames[5].positions)
    assert len(read_structures(f"{path}@1:9:2")) == 4
    with pytest.raises(ConfigError, match="frame selection after '@' must be"):
        read_structures(f"{path}@first")
    with pytest.raises(ConfigError, match="holds no structures in the selected range"):
        read_structures(f"{path}@500:")


def test_vasp_kbar_stress_labels_read_as_ase_stress(files):
    """VASP's raw stress (kB, compression positive, xx yy zz xy yz zx) reads back as ASE's."""
    keys = LabelKeys(stress="raw", stress_convention="vasp_kbar")
    for atoms in read(files / "cu.extxyz", ":"):
        s = atoms.get_stress(voigt=False) / (0.1 * units.GPa)  # kB, tension positive
        atoms.info["raw"] = -np.array([s[0, 0], s[1, 1], s[2, 2], s[0, 1], s[1, 2], s[2, 0]])
        assert np.allclose(get_stress(atoms, keys), atoms.get_stress(voigt=False), atol=1e-12)
    atoms.info["raw"] = np.zeros(9)
    with pytest.raises(ConfigError, match="vasp_kbar expects 6 values"):
        get_stress(atoms, keys)
    with pytest.raises(ConfigError, match="stress convention must be one of"):
        LabelKeys(stress_convention="kbar")
    with pytest.raises(ConfigError, match="data.stress_convention must be"):
        TrainConfig.from_dict({"data": {"train": ["x"], "stress_convention": "GPa"}})


@pytest.mark.skipif(not (SHARED / "mlearn" / "Si" / "training.extxyz").is_file(), reason="shared DFT data not present")
def test_mlearn_elastic_frames_compressed_cells_have_positive_pressure():
    """The sign of the converted mlearn stress: across the strained ('Elastic') Si cells,
    pressure -tr(sigma)/3 falls as the volume per atom grows."""
    from scipy.stats import spearmanr

    keys = LabelKeys(stress="virial_stress_raw", stress_convention="vasp_kbar", config_type="group")
    frames = read(SHARED / "mlearn" / "Si" / "training.extxyz", ":")
    elastic = [a for a in frames if config_type(a, keys) == "Elastic"]
    assert len(elastic) > 20
    volume = [a.get_volume() / len(a) for a in elastic]
    pressure = [-np.trace(get_stress(a, keys)) / 3 for a in elastic]
    assert spearmanr(volume, pressure)[0] < -0.9


@pytest.mark.skipif(
    not (SHARED / "rmd17_ethanol" / "isolated_atoms.xyz").is_file(), reason="shared DFT data not present"
)
def test_shared_rmd17_isolated_atoms():
    e0 = read_atomic_energies(str(SHARED / "rmd17_ethanol" / "isolated_atoms.xyz"))
    assert set(e0) == {"H", "C", "N", "O"} and e0["H"] == pytest.approx(-13.568422383)


# --- loss ---------------------------------------------------------------------------------


def _batch_and_residuals(trainer, scale):
    batch = next(trainer._batches(trainer.graphs["train"], 100, None))
    g = torch.Generator().manual_seed(0)
    de = scale * torch.randn(batch.num_graphs, generator=g, dtype=torch.float64)
    df = scale * torch.randn(batch.forces.shape, generator=g, dtype=torch.float64)
    out = {"energy": batch.energy + de, "forces": batch.forces + df}
    n = torch.bincount(batch.batch).to(torch.float64)
    return batch, out, de / n, df


@pytest.mark.parametrize("scale", [1e-3, 1.0])
def test_huber_loss_is_torch_huber_on_the_same_residuals(files, tmp_path, scale):
    mse = Trainer(config([files / "mixed.extxyz"], tmp_path / "m"), quiet=True)
    huber = Trainer(config([files / "mixed.extxyz"], tmp_path / "h", loss="huber", huber_delta=0.05), quiet=True)
    batch, out, re, rf = _batch_and_residuals(mse, scale)
    assert float(mse.task.loss(out, batch)) == pytest.approx(float((re**2).mean() + 100 * (rf**2).mean()), rel=1e-10)
    h = torch.nn.functional.huber_loss
    expected = h(re, torch.zeros_like(re), delta=0.05) + 100 * h(rf, torch.zeros_like(rf), delta=0.05)
    got = huber.task.loss(out, batch)
    assert float(got) == pytest.approx(float(expected), rel=1e-10)
    if scale < 0.05:  # all residuals inside delta: half the squared error
        assert float(got) == pytest.approx(0.5 * float(mse.task.loss(out, batch)), rel=1e-10)
    else:  # mostly outside: linear, far below the squared error
        assert float(got) < 0.2 * float(mse.task.loss(out, batch))


def test_config_type_weights_scale_each_structure(files, tmp_path):
    weights = {"Default": 1.0, "water": 0.1}
    trainer = Trainer(config([files / "mixed.extxyz"], tmp_path / "w", {"config_type_weights": weights}), quiet=True)
    plain = Trainer(config([files / "mixed.extxyz"], tmp_path / "p"), quiet=True)
    batch, out, re, rf = _batch_and_residuals(trainer, 0.1)
    water = torch.bincount(batch.batch) == 3
    assert water.any() and (~water).any()
    c = torch.where(water, torch.tensor(0.1, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(batch.weight, c)
    expected = (c * re**2).mean() + 100 * (c[batch.batch, None] * rf**2).mean()
    assert float(trainer.task.loss(out, batch)) == pytest.approx(float(expected), rel=1e-10)
    plain_batch = next(plain._batches(plain.graphs["train"], 100, None))  # the same frames
    assert torch.equal(plain_batch.weight, torch.ones_like(c))
    unweighted = float(plain.task.loss(out, plain_batch))
    assert unweighted == pytest.approx(float((re**2).mean() + 100 * (rf**2).mean()), rel=1e-10)
    assert float(trainer.task.loss(out, batch)) < unweighted
    # a type that is not listed takes the Default weight
    only_default = Trainer(
        config([files / "mixed.extxyz"], tmp_path / "o", {"config_type_weights": {"Default": 0.5}}), quiet=True
    )
    assert all(float(g.weight) == 0.5 for g in only_default.graphs["train"])
    with pytest.raises(ConfigError, match="config_type_weights"):
        config([files / "mixed.extxyz"], tmp_path / "x", {"config_type_weights": {"md": -1}})
    with pytest.raises(ConfigError, match="training.loss"):
        config([files / "mixed.extxyz"], tmp_path / "x", loss="l1")


def test_training_runs_with_every_option(files, tmp_path):
    """REF keys, isolated-atom E0s from a file, Huber loss, config-type weights and a
    second stage together: trains, exports, and keeps the chosen E0s in the model."""
    run = tmp_path / "run"
    write(
        tmp_path / "train_ref.extxyz",
        to_ref(read(files / "mixed.extxyz", ":")) + [isolated(s, 0.0, "REF_energy") for s in "HCO"],
    )
    trainer = Trainer(
        config(
            [tmp_path / "train_ref.extxyz"],
            run,
            {
                "energy_key": "REF_energy",
                "forces_key": "REF_forces",
                "atomic_energies": str(files / "isolated_atoms.xyz"),
                "config_type_weights": {"md": 1.0, "water": 0.5},
            },
            epochs=3,
            loss="huber",
            stage2_start=0.5,
            stage2_energy_weight=10.0,
        ),
        quiet=True,
    )
    summary = trainer.run()
    assert summary["epochs_done"] == 3
    assert summary["stats"]["atomic_energies"] == {s: E0[s] for s in "HCO"}
    from sinet_ase import load_model

    assert load_model(run / "best_model.pt").config["atomic_energies"] == {s: E0[s] for s in "HCO"}


# --- sinet-eval ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = SINet(
        elements=["H", "C", "O", "Cu"],
        cutoff=4.0,
        lmax=1,
        channels=8,
        num_layers=1,
        mlp_hidden=16,
        radial_hidden=16,
        atomic_energies={"H": -1.0, "Cu": -3.0},
    )
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path)
    return path


def _direct(model_file, frames):
    """Reference numbers from SINetCalculator one structure at a time."""
    calc = SINetCalculator(model_file, dtype="float64")
    out = []
    for atoms in frames:
        a = atoms.copy()
        a.calc = calc
        periodic = bool(np.all(a.pbc))
        out.append(
            {
                "energy": a.get_potential_energy(),
                "forces": a.get_forces(),
                "stress": a.get_stress(voigt=False) if periodic else None,
            }
        )
    return out


def _expected_metrics(frames, preds, groups):
    def m(idx):
        de = np.array([preds[i]["energy"] - frames[i].get_potential_energy() for i in idx])
        n = np.array([len(frames[i]) for i in idx])
        df = np.concatenate([(preds[i]["forces"] - frames[i].get_forces()).ravel() for i in idx])
        res = {
            "energy_mae_mev_atom": 1000 * np.mean(np.abs(de / n)),
            "energy_rmse_mev_atom": 1000 * np.sqrt(np.mean((de / n) ** 2)),
            "energy_mae_mev": 1000 * np.mean(np.abs(de)),
            "energy_rmse_mev": 1000 * np.sqrt(np.mean(de**2)),
            "forces_mae_mev_a": 1000 * np.mean(np.abs(df)),
            "forces_rmse_mev_a": 1000 * np.sqrt(np.mean(df**2)),
        }
        stress = [
            (preds[i]["stress"] - frames[i].get_stress(voigt=False)).ravel()
            for i in idx
            if preds[i]["stress"] is not None
        ]
        if stress:
            ds = np.concatenate(stress)
            res["stress_mae_mev_a3"] = 1000 * np.mean(np.abs(ds))
            res["stress_rmse_mev_a3"] = 1000 * np.sqrt(np.mean(ds**2))
        else:
            res["stress_mae_mev_a3"] = res["stress_rmse_mev_a3"] = None
        return res

    return {name: m(idx) for name, idx in groups.items()}


def test_sinet_eval_matches_direct_computation_and_round_trips(files, model_file, tmp_path, capsys):
    mixed, cu = files / "mixed.extxyz", files / "cu.extxyz"
    out, metrics = tmp_path / "preds.extxyz", tmp_path / "metrics.json"
    rc = eval_main(
        [str(model_file), str(mixed), str(cu), "--batch-size", "7", "--output", str(out), "--json", str(metrics)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "water" in text and "md" in text and "all files" in text
    result = json.loads(metrics.read_text())

    frames_m, frames_c = read(mixed, ":"), read(cu, ":")
    preds_m, preds_c = _direct(model_file, frames_m), _direct(model_file, frames_c)
    expected = _expected_metrics(frames_m, preds_m, {"all": range(30), "md": range(20), "water": range(20, 30)})
    got = result["files"][str(mixed)]
    for name, exp in expected.items():
        res = got["all"] if name == "all" else got["config_types"][name]
        for key, value in exp.items():
            assert res[key] == (None if value is None else pytest.approx(value, rel=1e-8)), (name, key)
    cu_exp = _expected_metrics(frames_c, preds_c, {"all": range(6)})["all"]
    assert cu_exp["stress_mae_mev_a3"] is not None
    for key, value in cu_exp.items():
        assert result["files"][str(cu)]["all"][key] == pytest.approx(value, rel=1e-8), key
    assert result["all"]["n_structures"] == 36

    # the predictions file: references kept, predictions beside them, in input order
    back = read(out, ":")
    assert len(back) == 36
    for atoms, ref, pred in zip(back, frames_m + frames_c, preds_m + preds_c):
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-8)
        assert np.allclose(atoms.get_forces(), ref.get_forces(), atol=1e-8)
        assert atoms.info["SINet_energy"] == pytest.approx(pred["energy"], abs=1e-8)
        assert np.allclose(atoms.arrays["SINet_forces"], pred["forces"], atol=1e-8)
        assert atoms.info.get("config_type") == ref.info.get("config_type")
        if pred["stress"] is None:
            assert "SINet_stress" not in atoms.info
        else:
            assert np.allclose(atoms.info["SINet_stress"], pred["stress"], atol=1e-10)


def test_sinet_eval_ref_keys_and_virials_give_the_same_numbers(files, model_file, tmp_path):
    plain, ref = tmp_path / "plain.json", tmp_path / "ref.json"
    assert eval_main([str(model_file), str(files / "cu.extxyz"), "--json", str(plain)]) == 0
    assert (
        eval_main(
            [
                str(model_file),
                str(files / "cu_virials_3x3.extxyz"),
                "--energy-key",
                "REF_energy",
                "--forces-key",
                "REF_forces",
                "--virials-key",
                "REF_virials",
                "--json",
                str(ref),
            ]
        )
        == 0
    )
    a = json.loads(plain.read_text())["all"]
    b = json.loads(ref.read_text())["all"]
    assert b == pytest.approx(a, rel=1e-8)


def test_sinet_eval_errors(files, model_file, tmp_path, capsys):
    assert eval_main([str(model_file), str(tmp_path / "missing.xyz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert eval_main([str(model_file), str(files / "mixed.extxyz"), "--energy-key", "REF_energy"]) == 2
    assert "no energy (key 'REF_energy')" in capsys.readouterr().err
    assert eval_main([str(model_file), str(files / "mixed.extxyz"), "--stress-key", "stress"]) == 2
    assert "no stress" in capsys.readouterr().err
    assert eval_main([str(tmp_path / "nomodel.pt"), str(files / "mixed.extxyz")]) == 2
    assert "model file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_text("not a model")
    assert eval_main([str(tmp_path / "junk.pt"), str(files / "mixed.extxyz")]) == 2
    small = SINet(elements=["H", "O"], cutoff=4.0, lmax=1, channels=8, num_layers=1, mlp_hidden=16, radial_hidden=16)
    save_model(small, tmp_path / "ho.pt")
    assert eval_main([str(tmp_path / "ho.pt"), str(files / "mixed.extxyz")]) == 2
    assert "frame 0" in capsys.readouterr().err
