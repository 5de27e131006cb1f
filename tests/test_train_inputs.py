"""Training inputs that cannot give a model: non-finite labels, a loss that turns NaN,
config values of the wrong type."""

import numpy as np
import pytest
import yaml
from ase.io import write
from test_resume import raw_config

from sinet_ase import ConfigError
from sinet_ase.cli import train_main
from sinet_ase.potential.data import read_structures
from sinet_ase.train import Trainer
from sinet_ase.train.config import TrainConfig
from sinet_ase.testing import FullDiskFile, emt_frames


@pytest.mark.parametrize("label", ["energy", "forces", "stress"])
def test_non_finite_labels_are_refused_naming_file_and_frame(tmp_path, label):
    frames = emt_frames("H2O", 4, 0)
    results = frames[2].calc.results
    if label == "energy":
        results["energy"] = float("nan")
    elif label == "forces":
        results["forces"][1, 2] = np.inf
    else:
        frames[2].pbc, frames[2].cell = True, [5.0, 5.0, 5.0]
        results["stress"] = np.array([0.1, 0.1, np.nan, 0.0, 0.0, 0.0])
    path = tmp_path / "bad.extxyz"
    write(path, frames)
    with pytest.raises(ConfigError, match=rf"bad\.extxyz, frame 2: the {label} label holds (nan|inf)"):
        read_structures(path)


def test_a_non_finite_loss_stops_training_with_a_clear_message(tmp_path, capsys):
    data = tmp_path / "water.extxyz"
    write(data, emt_frames("H2O", 12, 0))
    raw = raw_config(data, tmp_path / "run")
    trainer = Trainer(TrainConfig.from_dict(raw), quiet=True)
    trainer.graphs["train"][0].energy[0] = float("nan")  # past the label check: a diverging loss
    with pytest.raises(FloatingPointError, match="training stopped in epoch 1: the training loss is nan"):
        trainer.run()

    config = tmp_path / "run2.yaml"
    raw["run_dir"] = str(tmp_path / "run2")
    raw["training"]["lr"] = 1e30  # diverges in the first steps
    config.write_text(yaml.safe_dump(raw))
    assert train_main([str(config), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("sinet-train: error: training stopped in epoch") and "lower training.lr" in err


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.epochs=three", "training.epochs = 'three' (str): expected a whole number"),
        ("training.lr=fast", "training.lr = 'fast' (str): expected a number"),
        ("training.batch_size=2.5", "training.batch_size = 2.5 (float): expected a whole number"),
        ("training.epochs=true", "training.epochs = True (bool): expected a whole number"),
        ("training.max_minutes=[1]", "training.max_minutes = [1] (list): expected a number or null"),
        ("data.valid_size=big", "data.valid_size = 'big' (str): expected a whole number or a number"),
        ("data.require_stress=1", "data.require_stress = 1 (int): expected true or false"),
        ("seed=x", "seed = 'x' (str): expected a whole number"),
        ("model.lmax=two", "model.lmax = 'two' (str): expected a whole number"),
        ("model.zbl=maybe", "model.zbl = 'maybe' (str): expected true or false"),
    ],
)
def test_config_values_of_the_wrong_type_name_key_value_and_type(tmp_path, override, message, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw_config(tmp_path / "missing.extxyz", tmp_path / "run")))
    assert train_main([str(config), override, "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"sinet-train: error: {message}"


def test_config_numbers_keep_their_meaning():
    raw = {
        "data": {"train": "a.extxyz", "valid_size": 5, "test_size": 0.1},
        "training": {"lr": "1e-3", "max_minutes": 2, "stage2_start": None},
    }
    config = TrainConfig.from_dict(raw)
    assert config.data.train == ["a.extxyz"] and config.data.valid_size == 5
    assert isinstance(config.data.valid_size, int) and config.data.test_size == 0.1
    assert config.training.lr == 1e-3 and config.training.max_minutes == 2.0


def test_a_full_disk_while_training_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import os

    from sinet_ase import files as files_module

    data = tmp_path / "water.extxyz"
    write(data, emt_frames("H2O", 12, 0))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw_config(data, tmp_path / "run")))
    real_fdopen = os.fdopen
    monkeypatch.setattr(files_module.os, "fdopen", lambda fd, mode: FullDiskFile(real_fdopen(fd, mode), 100))
    assert train_main([str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sinet-train: error: the disk is full: could not write ") and err.count("\n") == 1
