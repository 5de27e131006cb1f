"""Trainer: learning, exact resume, export, config and data errors, DDP on 2 CPU processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from sinet_ase import ConfigError, SINetCalculator, load_model
from sinet_ase.cli import train_main
from sinet_ase.testing import emt_frames
from sinet_ase.train import Trainer, load_config
from sinet_ase.train.config import TrainConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write(d / "ethanol.extxyz", emt_frames("CH3CH2OH", 40, 0))
    write(d / "water.extxyz", emt_frames("H2O", 20, 1))
    no_forces = emt_frames("H2O", 3, 2)
    for a in no_forces:
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy())
    write(d / "no_forces.extxyz", no_forces)
    write(d / "ammonia.extxyz", emt_frames("NH3", 5, 3))
    return d


def tiny_config(data_dir, run_dir, **training):
    raw = {
        "run_dir": str(run_dir),
        "seed": 1,
        "data": {
            "train": [str(data_dir / "ethanol.extxyz"), str(data_dir / "water.extxyz")],
            "valid_size": 0.2,
            "test_size": 0.2,
        },
        "model": {"cutoff": 4.0, "lmax": 1, "channels": 8, "num_layers": 1, "mlp_hidden": 16, "radial_hidden": 16},
        "training": {
            "epochs": 4,
            "batch_size": 4,
            "lr": 5e-3,
            "warmup_epochs": 0,
            "ema_decay": 0.5,
            "dtype": "float64",
            **training,
        },
    }
    return TrainConfig.from_dict(raw)


def test_training_lowers_validation_loss_and_exports(data_dir, tmp_path):
    trainer = Trainer(tiny_config(data_dir, tmp_path / "run"), quiet=True)
    before = trainer.evaluate(trainer.model, trainer.graphs["valid"])["loss"]
    summary = trainer.run()
    after = trainer.evaluate(load_model(tmp_path / "run" / "best_model.pt").double(), trainer.graphs["valid"])["loss"]
    assert after < 0.7 * before
    for name in (
        "metrics.csv",
        "learning_curve.png",
        "force_parity.png",
        "summary.json",
        "checkpoint.pt",
        "split.json",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    assert summary["sizes"] == {"train": 36, "valid": 12, "test": 12}
    # the exported model loads in the calculator and matches the trainer's predictions
    best = load_model(tmp_path / "run" / "best_model.pt")
    graph = trainer.graphs["test"][0]
    expected = best.double()(graph)["energy"].item()
    atoms = molecule("CH3CH2OH") if graph.pos.shape[0] == 9 else molecule("H2O")
    atoms.positions = graph.pos.numpy()
    atoms.numbers = graph.z.numpy()
    calc = SINetCalculator(tmp_path / "run" / "best_model.pt")
    assert calc.get_potential_energy(atoms) == pytest.approx(expected, abs=1e-9)


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(data_dir, tmp_path):
    full = Trainer(tiny_config(data_dir, tmp_path / "full"), quiet=True)
    full.run()
    part = Trainer(tiny_config(data_dir, tmp_path / "part"), quiet=True)
    assert part.run(stop_after_epoch=2) == {"stopped_at_epoch": 2}
    del part  # as if the process had been killed after epoch 2
    resumed = Trainer(tiny_config(data_dir, tmp_path / "part"), resume=True, quiet=True)
    assert resumed.epoch == 2
    resumed.run()
    for (name, a), (_, b) in zip(full.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_existing_run_is_not_overwritten(data_dir, tmp_path):
    Trainer(tiny_config(data_dir, tmp_path / "run", epochs=1), quiet=True).run()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny_config(data_dir, tmp_path / "run", epochs=1), quiet=True)


def test_config_errors(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"training\.epohcs.*valid keys"):
        TrainConfig.from_dict({"data": {"train": ["x"]}, "training": {"epohcs": 3}})
    with pytest.raises(ConfigError, match="model.chanels"):
        TrainConfig.from_dict({"data": {"train": ["x"]}, "model": {"chanels": 3}})
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(
            TrainConfig.from_dict({"run_dir": str(tmp_path / "a"), "data": {"train": [str(tmp_path / "missing.xyz")]}})
        )
    with pytest.raises(ConfigError, match="no forces"):
        Trainer(
            TrainConfig.from_dict(
                {"run_dir": str(tmp_path / "b"), "data": {"train": [str(data_dir / "no_forces.extxyz")]}}
            )
        )
    with pytest.raises(ConfigError, match="N occur in the valid data but not in the training"):
        Trainer(
            TrainConfig.from_dict(
                {
                    "run_dir": str(tmp_path / "c"),
                    "data": {"train": [str(data_dir / "water.extxyz")], "valid": [str(data_dir / "ammonia.extxyz")]},
                }
            )
        )


def test_cli_overrides_and_errors(data_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_dir, tmp_path / "run").to_dict()))
    loaded = load_config(config, ["training.epochs=2", "model.channels=4"])
    assert loaded.training.epochs == 2 and loaded.model["channels"] == 4
    assert train_main([str(config), "training.epochs=1", "--quiet"]) == 0
    assert "best_model.pt" in capsys.readouterr().out
    # options may also stand before the overrides
    assert train_main([str(config), "--quiet", "training.epochs=1", f"run_dir={tmp_path / 'r2'}"]) == 0
    assert train_main([str(config), "training.bogus=1"]) == 2
    assert "unknown config key(s) training.bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes(data_dir, tmp_path):
    config = tmp_path / "ddp.yaml"
    raw = tiny_config(data_dir, tmp_path / "ddp", epochs=3).to_dict()
    config.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "sinet_ase.cli",
            str(config),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True
    lines = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    valid = [float(l.split(",")[header.index("valid_loss")]) for l in lines[1:]]
    assert len(valid) == 3 and valid[-1] < valid[0]


def emt_crystals(n, seed):
    """Strained, rattled periodic Cu cells labelled with EMT energy, forces and stress."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(scale=0.02, size=(3, 3))), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress()
        )
        frames.append(atoms)
    return frames


@pytest.mark.slow
def test_training_on_periodic_stress_data(tmp_path):
    """Stress labels (Voigt, as ASE stores them) are read and trained on; the stress error drops."""
    from sinet_ase.graph import atoms_to_graph

    frames = emt_crystals(24, 5)
    graph = atoms_to_graph(frames[0], 4.0, ["Cu"], with_labels=True)
    full = frames[0].get_stress(voigt=False)
    assert np.abs(full).max() > 1e-4 and np.allclose(graph.stress.numpy()[0], full)
    write(tmp_path / "cu.extxyz", frames)
    raw = {
        "run_dir": str(tmp_path / "run"),
        "seed": 0,
        "data": {"train": [str(tmp_path / "cu.extxyz")], "valid_size": 4},
        "model": {"cutoff": 4.0, "lmax": 1, "channels": 8, "num_layers": 1, "mlp_hidden": 16, "radial_hidden": 16},
        "training": {
            "epochs": 15,
            "batch_size": 4,
            "lr": 1e-2,
            "warmup_epochs": 0,
            "ema_decay": 0.0,
            "dtype": "float64",
            "stress_weight": 100.0,
        },
    }
    trainer = Trainer(TrainConfig.from_dict(raw), quiet=True)
    assert all(hasattr(g, "stress") for g in trainer.graphs["train"])

    def stress_error(model):
        batch = next(trainer._batches(trainer.graphs["valid"], 8, None))
        out = model(batch, compute_forces=True, compute_stress=True)
        return float((out["stress"] - batch.stress).abs().mean())

    before = stress_error(trainer.model)
    trainer.run()
    after = stress_error(load_model(tmp_path / "run" / "best_model.pt").double())
    assert after < 0.5 * before, (before, after)


@pytest.mark.slow
def test_second_loss_stage_switches_weights_and_restarts_best(data_dir, tmp_path):
    trainer = Trainer(
        tiny_config(data_dir, tmp_path / "run", epochs=4, stage2_start=0.5, stage2_energy_weight=1000.0), quiet=True
    )
    task = trainer.task
    assert task.loss_weights(1) == {"energy": 1.0, "forces": 100.0, "stress": 0.0}
    assert task.loss_weights(2) == {"energy": 1000.0, "forces": 100.0, "stress": 0.0}
    assert not task.begin_epoch(0.25) and task.begin_epoch(0.5) and not task.begin_epoch(0.75)
    task.begin_epoch(0.0)
    trainer.run(stop_after_epoch=3)
    assert trainer.best["epoch"] == 3  # the best model is chosen among stage-2 epochs only
    # stage 1's best is kept beside it (exported at epoch 1 or 2, before stage 2's epoch 3)
    previous = tmp_path / "run" / "best_model_previous_stage.pt"
    assert previous.read_bytes() != (tmp_path / "run" / "best_model.pt").read_bytes()
    load_model(previous)
    assert task.weights["energy"] == 1000.0
    resumed = Trainer(
        tiny_config(data_dir, tmp_path / "run", epochs=4, stage2_start=0.5, stage2_energy_weight=1000.0),
        resume=True,
        quiet=True,
    )
    assert resumed.task.stage == 2 and resumed.task.weights["energy"] == 1000.0
    with pytest.raises(ConfigError, match="stage2_start"):
        tiny_config(data_dir, tmp_path / "bad", epochs=4, stage2_start=4)


def test_second_loss_stage_ramps_the_weights_and_validates_with_the_full_ones(data_dir, tmp_path):
    config = tiny_config(
        data_dir, tmp_path / "run", epochs=8, stage2_start=0.5, stage2_ramp=0.25, stage2_energy_weight=100.0
    )
    trainer = Trainer(config, quiet=True)
    task = trainer.task
    assert not task.begin_epoch(0.25) and task.weights == {"energy": 1.0, "forces": 100.0, "stress": 0.0}
    valid = trainer.graphs["valid"]
    expected = {0.5: 1.0, 0.5625: 100.0**0.25, 0.625: 10.0, 0.75: 100.0, 0.875: 100.0}
    losses = []
    for progress, energy_weight in expected.items():
        task.begin_epoch(progress)
        assert task.stage == 2 and task.weights["energy"] == pytest.approx(energy_weight, rel=1e-12)
        assert task.weights["forces"] == 100.0
        losses.append(trainer.evaluate(trainer.model, valid)["loss"])
    # validation weighs with stage 2's full weights at every point of the ramp
    assert losses == pytest.approx([losses[-1]] * len(losses), rel=1e-12)
    task.begin_epoch(0.25)
    assert trainer.evaluate(trainer.model, valid)["loss"] < losses[0]  # stage 1's energy weight is 1
    for bad in ({"stage2_ramp": -0.1}, {"stage2_start": 0.8, "stage2_ramp": 0.3}):
        with pytest.raises(ConfigError, match="stage2_ramp"):
            tiny_config(data_dir, tmp_path / "bad", epochs=4, **{"stage2_start": 0.5, **bad})


def test_ramp_from_a_zero_weight_is_linear_and_a_stage2_only_weight_needs_its_labels(data_dir, tmp_path):
    config = tiny_config(
        data_dir,
        tmp_path / "run",
        epochs=8,
        energy_weight=0.0,
        stage2_start=0.2,
        stage2_ramp=0.4,
        stage2_energy_weight=10.0,
    )
    task = Trainer(config, quiet=True).task
    task.begin_epoch(0.4)
    assert task.weights["energy"] == pytest.approx(5.0) and task.weights["forces"] == 100.0
    # a stress weight in stage 2 alone still needs stress labels (these molecules have none)
    with pytest.raises(ConfigError, match="no stress"):
        Trainer(tiny_config(data_dir, tmp_path / "stress", stage2_start=0.5, stage2_stress_weight=10.0), quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["cosine_time", "cosine_cpu"])
def test_cosine_over_time_budget_stops_at_the_budget_with_min_lr(data_dir, tmp_path, scheduler):
    config = tiny_config(
        data_dir, tmp_path / "run", epochs=1000, scheduler=scheduler, max_minutes=0.03, min_lr=1e-5, warmup_epochs=0
    )
    trainer = Trainer(config, quiet=True)
    trainer.run()
    assert 1 < trainer.epoch < 1000  # stopped by the budget, not the epochs
    assert trainer.spent() >= 60 * 0.03 and 0 < trainer.cpu_elapsed
    assert trainer.history[-1]["lr"] == pytest.approx(1e-5)
    lrs = [h["lr"] for h in trainer.history]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay
    with pytest.raises(ConfigError, match="max_minutes"):
        tiny_config(data_dir, tmp_path / "bad", scheduler="cosine_time")


@pytest.mark.slow
def test_training_with_the_fused_kernels_follows_the_same_path(data_dir, tmp_path):
    """The force loss differentiates the forces: the kernels' double backward is exercised."""
    from sinet_ase.ops import fused

    if fused.kernels(build=True) is None:
        pytest.skip(f"the fused kernels cannot be built here: {fused.build_error()}")
    histories = {}
    for option in (False, True):
        trainer = Trainer(tiny_config(data_dir, tmp_path / f"run_{option}", fused_kernels=option), quiet=True)
        assert trainer.fused_kernels is option
        trainer.run(stop_after_epoch=2)
        histories[option] = [(h["train_loss"], h["valid_loss"]) for h in trainer.history]
    np.testing.assert_allclose(histories[True], histories[False], rtol=1e-9)
    with pytest.raises(ConfigError, match="fused_kernels"):
        tiny_config(data_dir, tmp_path / "bad", fused_kernels="yes")
