"""Fine-tuning (model.init_from, training.freeze): start point, new elements, frozen backbone,
shipped names, config errors, resume."""

import pytest
import torch
from ase.io import write

from sinet_ase import ConfigError, load_model
from sinet_ase.io import read_model_file
from sinet_ase.model import SINet
from sinet_ase.pretrained import pretrained_path
from sinet_ase.testing import emt_frames
from sinet_ase.train import Trainer
from sinet_ase.train.config import TrainConfig

TINY = {"cutoff": 4.0, "lmax": 1, "channels": 8, "num_layers": 1, "mlp_hidden": 16, "radial_hidden": 16}
EMBEDDING = "backbone.embedding.species_embedding.weight"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write(d / "ethanol.extxyz", emt_frames("CH3CH2OH", 30, 0))
    write(d / "water.extxyz", emt_frames("H2O", 15, 1))
    write(d / "ammonia.extxyz", emt_frames("NH3", 15, 3))
    return d


def config(data_dir, run_dir, files=("ethanol", "water"), model=None, **training):
    raw = {
        "run_dir": str(run_dir),
        "seed": 1,
        "data": {"train": [str(data_dir / f"{name}.extxyz") for name in files], "valid_size": 0.2, "test_size": 0.0},
        "model": dict(TINY) if model is None else model,
        "training": {
            "epochs": 3,
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
def base_model(data_dir, tmp_path_factory):
    """A briefly trained model on H, C, O (ethanol and water)."""
    run = tmp_path_factory.mktemp("base")
    Trainer(config(data_dir, run, epochs=2), quiet=True).run()
    return run / "best_model.pt"


def test_finetuning_starts_at_the_saved_model_and_lowers_the_loss(data_dir, base_model, tmp_path):
    trainer = Trainer(config(data_dir, tmp_path / "ft", model={"init_from": str(base_model)}), quiet=True)
    loaded = load_model(base_model).double()
    assert trainer.model.config == loaded.config  # architecture, statistics and (same data) E0s
    valid = trainer.graphs["valid"]
    start = trainer.evaluate(trainer.model, valid)["loss"]
    assert start == pytest.approx(trainer.evaluate(loaded, valid)["loss"], rel=1e-12)
    assert trainer.evaluate(trainer.ema.module, valid)["loss"] == pytest.approx(start, rel=1e-12)
    trainer.run()
    assert trainer.best["valid_loss"] < start
    best = load_model(tmp_path / "ft" / "best_model.pt").double()
    assert trainer.evaluate(best, valid)["loss"] < start


def test_new_element_gets_fresh_rows_and_old_elements_keep_theirs(data_dir, base_model, tmp_path):
    cfg = config(
        data_dir,
        tmp_path / "ft",
        files=("ethanol", "water", "ammonia"),
        model={"init_from": str(base_model), "cutoff": 4.0},
        epochs=1,
    )
    trainer = Trainer(cfg, quiet=True)
    stored = read_model_file(base_model)
    assert stored["elements"] == ["H", "C", "O"]
    assert trainer.model.elements == ["H", "C", "O", "N"]
    state = trainer.model.state_dict()
    for key, value in stored["state_dict"].items():
        if key == EMBEDDING:
            assert torch.equal(state[key][:3], value)
        else:
            assert torch.equal(state[key], value), key
    # N's row is the one a newly built model (same seed) has
    torch.manual_seed(cfg.seed)
    fresh = SINet(elements=["H", "C", "O", "N"], **TINY).double()
    assert torch.equal(state[EMBEDDING][3], fresh.state_dict()[EMBEDDING][3])
    assert not torch.equal(state[EMBEDDING][3], fresh.state_dict()[EMBEDDING][0])
    # kept from the file: the statistics that define the network function; E0s: refitted
    for key in ("avg_num_neighbors", "energy_scale"):
        assert trainer.model.config[key] == stored["config"][key]
    e0 = trainer.model.config["atomic_energies"]
    assert set(e0) == {"H", "C", "O", "N"} and e0["N"] != 0.0
    assert e0["H"] != stored["config"]["atomic_energies"]["H"]
    trainer.run()
    best = load_model(tmp_path / "ft" / "best_model.pt")
    assert best.elements == ["H", "C", "O", "N"]


def test_frozen_backbone_stays_bit_identical(data_dir, base_model, tmp_path):
    trainer = Trainer(
        config(data_dir, tmp_path / "ft", model={"init_from": str(base_model)}, freeze=["backbone"]), quiet=True
    )
    model = trainer.model
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.energy_mlp.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.energy_mlp.parameters()}
    stored = read_model_file(base_model)["state_dict"]
    trainer.run()
    best = load_model(tmp_path / "ft" / "best_model.pt").double()
    for source in (model.state_dict(), trainer.ema.module.state_dict(), best.state_dict()):
        for key, value in source.items():
            if key.startswith("backbone."):
                assert torch.equal(value, stored[key]), key
    head = [k for k in stored if k.startswith("energy_mlp.")]
    assert any(not torch.equal(model.state_dict()[k], stored[k]) for k in head)


def test_freeze_errors(data_dir, base_model, tmp_path):
    with pytest.raises(ConfigError, match="needs model.init_from"):
        config(data_dir, tmp_path / "a", freeze=["backbone"])
    with pytest.raises(ConfigError, match="training.freeze must be a list of backbone"):
        config(data_dir, tmp_path / "b", model={"init_from": str(base_model)}, freeze=["head"])
    # a new element's embedding would stay random under a frozen backbone
    with pytest.raises(ConfigError, match="N .*random start"):
        Trainer(
            config(
                data_dir,
                tmp_path / "c",
                files=("ethanol", "ammonia"),
                model={"init_from": str(base_model)},
                freeze="backbone",
            ),
            quiet=True,
        )


def test_init_from_a_shipped_name(data_dir, tmp_path):
    trainer = Trainer(
        config(data_dir, tmp_path / "ft", model={"init_from": "sinet-xtb-md17"}, dtype="float32"), quiet=True
    )
    stored = read_model_file(pretrained_path("sinet-xtb-md17"))
    assert trainer.model.elements == stored["elements"] == ["H", "C", "N", "O"]
    for key, value in stored["state_dict"].items():
        assert torch.equal(trainer.model.state_dict()[key], value), key
    config_now = trainer.model.config
    for key, value in stored["config"].items():
        if key != "atomic_energies":
            assert config_now[key] == value, key
    # N is absent from the new data: its E0 stays the file's; H, C and O are refitted
    assert config_now["atomic_energies"]["N"] == stored["config"]["atomic_energies"]["N"]
    assert config_now["atomic_energies"]["C"] != stored["config"]["atomic_energies"]["C"]
    with pytest.raises(ConfigError, match="neither a model file nor a shipped potential.*sinet-xtb-md17"):
        Trainer(config(data_dir, tmp_path / "x", model={"init_from": "sinet-no-such"}), quiet=True)


def test_model_keys_that_differ_from_the_file(data_dir, base_model, tmp_path):
    model = {"init_from": str(base_model), "channels": 16, "lmax": 1, "cutoff": 3.0, "elements": ["H", "C", "O", "N"]}
    with pytest.raises(ConfigError) as err:
        Trainer(config(data_dir, tmp_path / "a", model=model), quiet=True)
    message = str(err.value)
    assert "model.channels: 16 (file: 8)" in message and "model.cutoff: 3.0 (file: 4.0)" in message
    assert "lmax" not in message and "model.elements may be given" in message
    not_a_model = tmp_path / "not_a_model.pt"
    not_a_model.write_text("hello")
    with pytest.raises(ConfigError, match=r"model\.init_from: .*not_a_model\.pt .*sinet-ase model file"):
        Trainer(config(data_dir, tmp_path / "b", model={"init_from": str(not_a_model)}), quiet=True)
    with pytest.raises(ConfigError, match="model.init_from must be"):
        config(data_dir, tmp_path / "c", model={"init_from": 3})


def test_resume_of_a_finetuning_run(data_dir, base_model, tmp_path):
    def make(run, **kw):
        return config(data_dir, tmp_path / run, model={"init_from": str(base_model)}, epochs=2, **kw)

    full = Trainer(make("full", freeze=["backbone"]), quiet=True)
    full.run()
    part = Trainer(make("part", freeze=["backbone"]), quiet=True)
    assert part.run(stop_after_epoch=1) == {"stopped_at_epoch": 1}
    del part
    with pytest.raises(ConfigError, match="training.freeze"):
        Trainer(make("part"), resume=True, quiet=True)
    resumed = Trainer(make("part", freeze=["backbone"]), resume=True, quiet=True)
    assert resumed.epoch == 1
    resumed.run()
    for (name, a), (_, b) in zip(full.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


@pytest.mark.parametrize("backbone", ["sinet", "siformer"])
def test_per_element_state_is_complete(backbone):
    """Every state entry whose shape depends on the elements is listed (fine-tuning with new
    elements transfers the others unchanged), with one row per element."""
    small = SINet(elements=["H", "O"], backbone=backbone, num_heads=2, **TINY).state_dict()
    large = SINet(elements=["H", "C", "N", "O"], backbone=backbone, num_heads=2, **TINY).state_dict()
    assert small.keys() == large.keys()
    differ = {k for k in small if small[k].shape != large[k].shape}
    assert differ == set(SINet.PER_ELEMENT_STATE)
    for key in SINet.PER_ELEMENT_STATE:
        assert small[key].shape[0] == 2 and large[key].shape[0] == 4
