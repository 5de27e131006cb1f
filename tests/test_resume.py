"""Resuming a run: only resumable config keys may change, every change is logged; data
changes and leftover temporary files of a killed run are handled."""

import json

import pytest
from ase.io import write

from sinet_ase import ConfigError
from sinet_ase.testing import emt_frames
from sinet_ase.train import Trainer
from sinet_ase.train.checkpoint import config_changes
from sinet_ase.train.config import TrainConfig


def raw_config(data, run_dir, **training):
    return {
        "run_dir": str(run_dir),
        "seed": 1,
        "data": {"train": [str(data)], "valid_size": 0.25},
        "model": {"cutoff": 3.0, "lmax": 1, "channels": 4, "num_layers": 1, "mlp_hidden": 8, "radial_hidden": 8},
        "training": {"epochs": 3, "batch_size": 4, "lr": 5e-3, "warmup_epochs": 0, "dtype": "float64", **training},
    }


def start_run(tmp_path):
    data = tmp_path / "water.extxyz"
    write(data, emt_frames("H2O", 12, 0))
    run = tmp_path / "run"
    Trainer(TrainConfig.from_dict(raw_config(data, run)), quiet=True).run(stop_after_epoch=1)
    return data, run


def edited(raw, **changes):
    for key, value in changes.items():
        section, name = key.split("__") if "__" in key else (None, key)
        (raw[section] if section else raw)[name] = value
    return TrainConfig.from_dict(raw)


def test_config_changes_splits_resumable_keys_from_the_rest():
    old = {"seed": 0, "training": {"epochs": 3, "lr": 1e-3, "stage2_start": None}, "model": {"cutoff": 5.0}}
    new = {"seed": 0, "training": {"epochs": 6, "lr": 1e-3, "stage2_start": 0.5}, "model": {"cutoff": 4.0, "lmax": 1}}
    allowed, refused = config_changes(old, new)
    assert allowed == ["training.epochs: 3 -> 6", "training.stage2_start: None -> 0.5"]
    assert refused == ["model.cutoff: 5.0 -> 4.0", "model.lmax: '<not set>' -> 1"]


def test_resume_refuses_a_changed_model_data_seed_or_learning_rate(tmp_path):
    data, run = start_run(tmp_path)
    stored_config = (run / "config.json").read_text()
    stored_split = (run / "split.json").read_text()
    other = tmp_path / "other.extxyz"
    write(other, emt_frames("H2O", 12, 5))
    for changes, expected in (
        (dict(model__cutoff=4.0), "model.cutoff: 3.0 -> 4.0"),
        (dict(training__lr=1e-2), "training.lr: 0.005 -> 0.01"),
        (dict(seed=2), "seed: 1 -> 2"),
        (dict(training__dtype="float32"), "training.dtype: 'float64' -> 'float32'"),
        (dict(data__train=[str(other)]), "data.train"),
    ):
        with pytest.raises(ConfigError, match="cannot change midway") as info:
            Trainer(edited(raw_config(data, run), **changes), resume=True, quiet=True)
        assert expected in str(info.value)
    assert (run / "config.json").read_text() == stored_config
    assert (run / "split.json").read_text() == stored_split
    assert not (run / "resume.log").exists()


def test_resume_with_more_epochs_is_logged(tmp_path):
    data, run = start_run(tmp_path)
    trainer = Trainer(edited(raw_config(data, run), training__epochs=4, training__patience=7), resume=True, quiet=True)
    summary = trainer.run()
    assert summary["epochs_done"] == 4
    log = (run / "resume.log").read_text().splitlines()
    assert log == [
        "resumed after epoch 1: training.epochs: 3 -> 4",
        "resumed after epoch 1: training.patience: 50 -> 7",
    ]
    assert summary["resume_log"] == log
    assert json.loads((run / "config.json").read_text())["training"]["epochs"] == 4


def test_resume_refuses_data_files_whose_content_changed(tmp_path):
    data, run = start_run(tmp_path)
    write(data, emt_frames("H2O", 16, 0))  # same file name, more frames: another split
    with pytest.raises(ConfigError, match="data split differs"):
        Trainer(TrainConfig.from_dict(raw_config(data, run)), resume=True, quiet=True)


def test_temporary_files_of_a_killed_run_are_removed_on_resume(tmp_path):
    data, run = start_run(tmp_path)
    stale = run / ".checkpoint.pt.4194999.0123456789ab.tmp"  # its writer (that pid) is gone
    stale.write_bytes(b"half a checkpoint")
    Trainer(TrainConfig.from_dict(raw_config(data, run)), resume=True, quiet=True)
    assert not stale.exists()
