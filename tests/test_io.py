"""Model files: metadata that a safe load accepts, load-back before replacing, full disk, bad versions."""

import datetime
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sinet_ase import ModelFileError, SINet, load_model, save_model
from sinet_ase import files as files_module
from sinet_ase.files import DiskFullError
from sinet_ase.io import model_to_dict
from sinet_ase.testing import FullDiskFile


def make_model(seed=0):
    torch.manual_seed(seed)
    return SINet(
        elements=["H", "O"],
        cutoff=3.0,
        lmax=1,
        channels=4,
        num_layers=1,
        mlp_hidden=8,
        radial_hidden=8,
        avg_num_neighbors=2.0,
    )


def test_numpy_path_and_date_metadata_are_stored_as_plain_types(tmp_path):
    metadata = {
        "loss": np.float64(0.25),
        "epochs": np.int64(3),
        "shift": np.array([1.0, 2.0]),
        "data": Path("data/train.extxyz"),
        "made": datetime.date(2026, 1, 2),
        "nested": {"pair": (np.float32(0.5), "x")},
        "ok": True,
        "none": None,
    }
    save_model(make_model(), tmp_path / "m.pt", metadata=metadata)
    loaded = load_model(tmp_path / "m.pt").metadata
    assert loaded == {
        "loss": 0.25,
        "epochs": 3,
        "shift": [1.0, 2.0],
        "data": "data/train.extxyz",
        "made": "2026-01-02",
        "nested": {"pair": [0.5, "x"]},
        "ok": True,
        "none": None,
    }
    assert type(loaded["loss"]) is float and type(loaded["epochs"]) is int


def test_metadata_a_model_file_cannot_hold_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.pt"
    save_model(make_model(0), path, metadata={"note": "good"})
    with pytest.raises(TypeError, match=r"metadata\['bad'\] = .*object.*store it as a string"):
        save_model(make_model(1), path, metadata={"bad": object()})
    with pytest.raises(TypeError, match="keys must be strings"):
        save_model(make_model(1), path, metadata={1: "one"})
    assert load_model(path).metadata == {"note": "good"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_file_that_does_not_load_back_never_replaces_a_good_one(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_model(make_model(0), path, metadata={"note": "good"})
    monkeypatch.setattr(torch, "save", lambda obj, handle, **kw: handle.write(b"not a torch file"))
    with pytest.raises(ModelFileError, match="does not load back, so it was not saved"):
        save_model(make_model(1), path)
    monkeypatch.undo()
    assert load_model(path).metadata == {"note": "good"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_string_format_version_is_reported_as_invalid(tmp_path):
    payload = model_to_dict(make_model())
    payload["format_version"] = "1"
    torch.save(payload, tmp_path / "v.pt")
    with pytest.raises(ModelFileError, match=r"invalid model format version '1' \(a positive integer"):
        load_model(tmp_path / "v.pt")


def test_a_full_disk_during_save_model_says_so_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_model(make_model(0), path, metadata={"note": "good"})
    real_fdopen = os.fdopen
    monkeypatch.setattr(files_module.os, "fdopen", lambda fd, mode: FullDiskFile(real_fdopen(fd, mode), 1000))
    with pytest.raises(DiskFullError, match=r"the disk is full: could not write .*m\.pt.*unchanged"):
        save_model(make_model(1), path)
    monkeypatch.undo()
    assert load_model(path).metadata == {"note": "good"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
