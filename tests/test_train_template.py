"""sinet-train --print-config (a commented default config that sinet-train reads back),
--help listing the config sections, and TensorBoard logging next to metrics.csv."""

import csv
import dataclasses
import sys

import pytest
import yaml
from ase.io import write

from sinet_ase import ConfigError
from sinet_ase.cli import train_main
from sinet_ase.testing import emt_frames
from sinet_ase.train import load_config
from sinet_ase.train.checkpoint import config_changes
from sinet_ase.train.config import TrainConfig, TrainingConfig
from sinet_ase.potential.task import DataConfig
from sinet_ase.train.template import KEY_HELP, check_template_keys, default_config_yaml, default_model_section

TINY = [
    "model.cutoff=4.0",
    "model.lmax=1",
    "model.channels=8",
    "model.num_layers=1",
    "model.mlp_hidden=16",
    "model.radial_hidden=16",
    "training.epochs=2",
    "training.batch_size=4",
    "training.dtype=float64",
    "training.warmup_epochs=0",
    "data.valid_size=0.25",
]


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("template")
    write(folder / "train.extxyz", emt_frames("CH3CH2OH", 16, 0))
    return folder


def _print_config(capsys):
    assert train_main(["--print-config"]) == 0
    return capsys.readouterr().out


def test_print_config_has_every_key_with_its_default_and_a_comment(capsys):
    text = _print_config(capsys)
    assert text == default_config_yaml()
    assert check_template_keys() == []
    raw = yaml.safe_load(text)
    assert set(raw) == {"run_dir", "seed", "task", "data", "model", "training"}
    assert set(raw["data"]) == {f.name for f in dataclasses.fields(DataConfig)}
    assert set(raw["training"]) == {f.name for f in dataclasses.fields(TrainingConfig)}
    assert raw["model"] == default_model_section() and raw["model"]["channels"] == 64
    for line in text.splitlines():  # a comment on every key line, and only known keys commented out
        if line.strip() and not line.startswith("#") and not line.endswith(":"):
            key = line.split(":")[0].strip().lstrip("# ")
            assert " # " in line, f"no comment: {line}"
            assert key in {k.split(".")[-1] for k in KEY_HELP}


def test_printed_config_reads_back_as_the_defaults(printed, capsys, monkeypatch):
    monkeypatch.chdir(printed)
    (printed / "my.yaml").write_text(_print_config(capsys))
    config = load_config(printed / "my.yaml")
    defaults = TrainConfig(task="energy")
    assert config.training == defaults.training
    assert dataclasses.replace(config.data, train=[]) == defaults.data
    assert config.data.train == ["train.extxyz"] and config.model == default_model_section()
    # an edited value is read (the file is the config, not a dump that is ignored)
    edited = printed / "edited.yaml"
    edited.write_text((printed / "my.yaml").read_text().replace("  epochs: 100 ", "  epochs: 7 "))
    assert load_config(edited).training.epochs == 7


@pytest.mark.slow
def test_sinet_train_trains_from_the_printed_config(printed, capsys, monkeypatch):
    monkeypatch.chdir(printed)
    (printed / "run.yaml").write_text(_print_config(capsys))
    assert train_main(["run.yaml", "run_dir=runs/t", "--quiet"] + TINY) == 0
    assert (printed / "runs/t/best_model.pt").is_file()


def test_help_lists_the_config_sections_and_keys(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    out = capsys.readouterr().out
    assert "--print-config" in out
    for section in ("top level: run_dir", "data: train", "model: cutoff", "training: epochs"):
        assert section in out
    words = out.replace(",", " ").split()
    for key in ("config_type_weights", "zbl_cutoff_factor", "init_from", "stage2_start", "tensorboard", "freeze"):
        assert key in words


def test_a_config_file_is_needed_unless_printing(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main([])
    assert exit_info.value.code == 2
    assert "--print-config > my.yaml" in capsys.readouterr().err


def test_tensorboard_without_the_package_is_a_clear_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if absent
    raw = {"data": {"train": ["a.extxyz"]}, "training": {"tensorboard": True}}
    with pytest.raises(ConfigError, match=r"needs the tensorboard package.*pip install tensorboard"):
        TrainConfig.from_dict(raw)
    raw["training"]["tensorboard"] = False
    assert TrainConfig.from_dict(raw).training.tensorboard is False


def test_tensorboard_may_be_switched_on_when_resuming():
    old = TrainConfig.from_dict({"data": {"train": ["a.extxyz"]}}).to_dict()
    old["training"].pop("tensorboard")  # a checkpoint written before the key existed
    new = TrainConfig.from_dict({"data": {"train": ["a.extxyz"]}}).to_dict()
    new["training"]["tensorboard"] = True
    allowed, refused = config_changes(old, new)
    assert refused == [] and allowed == ["training.tensorboard: '<not set>' -> True"]


@pytest.mark.slow
def test_tensorboard_logs_the_numbers_of_metrics_csv(printed, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(printed)
    (printed / "tb.yaml").write_text(_print_config(capsys))
    assert train_main(["tb.yaml", "run_dir=runs/tb", "training.tensorboard=true", "--quiet"] + TINY) == 0
    with open(printed / "runs/tb/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    events = EventAccumulator(str(printed / "runs/tb/tensorboard"))
    events.Reload()
    for tag, column in (
        ("loss/train", "train_loss"),
        ("loss/valid", "valid_loss"),
        ("valid/f_mae_mev_a", "valid_f_mae_mev_a"),
        ("lr", "lr"),
    ):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [int(r["epoch"]) for r in rows]
        assert [e.value for e in logged] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)
