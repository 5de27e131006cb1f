"""The N-body model as a task of the shared trainer (``sinet-train``, ``sinet-eval``).

Checked against the former loop (``nbody_former_loop.train``, in ``tests/``) and against the
committed model files and their documented test MSEs.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nbody_former_loop import load_config as legacy_config
from nbody_former_loop import train as legacy_train
from sinet_ase.cli import eval_main, train_main
from sinet_ase.errors import ConfigError
from sinet_ase.nbody import dataset as ds
from sinet_ase.nbody.model import NBodySINet, load_nbody_model
from sinet_ase.nbody.task import config_from_legacy
from sinet_ase.nbody.train import main as legacy_main
from sinet_ase.train import TrainConfig, Trainer, load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "training" / "nbody_results"
SMALL = dict(lmax=1, channels=16, num_layers=2, mlp_hidden=32, radial_hidden=16)
#: the small data set: dataset seed 7; 100 training systems are one batch of 100
SIZES = dict(seed=7, n_train=100, n_valid=50, n_test=50)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A data cache holding the small data set (simulated once, a few seconds)."""
    path = tmp_path_factory.mktemp("nbody_cache")
    ds.load_nbody_dataset(path, SIZES["n_train"], SIZES["n_valid"], SIZES["n_test"], SIZES["seed"])
    return path


def small_legacy(cache, **train):
    """A config of the former loop on the small data set."""
    return legacy_config(
        None,
        {
            "model": SMALL,
            "data": dict(cache_dir=str(cache), **SIZES),
            "train": dict(epochs=1, seed=3, lr=3e-3, **train),
        },
    )


@pytest.mark.slow
def test_recipes_are_sinet_train_configs_that_translate_the_committed_runs():
    """Each recipe is the config its committed runs were trained with (their summary.json
    keeps the former loop's config), up to how long and where they ran."""
    for recipe, run in (("nbody.yaml", "seed0"), ("nbody_best.yaml", "best_seed0")):
        config = load_config(ROOT / "training" / recipe)
        assert config.task == "nbody"
        stored = json.loads((RESULTS / run / "summary.json").read_text())
        translated = TrainConfig.from_dict(config_from_legacy(stored["config"])).to_dict()
        ours = config.to_dict()
        for c in (translated, ours):
            c.pop("run_dir")
            for key in ("epochs", "max_minutes", "patience", "device", "num_threads"):
                c["training"].pop(key)
        assert ours == translated
        model = NBodySINet(**config.model)
        assert model.config == load_nbody_model(RESULTS / run / "best.pt").config
    assert NBodySINet(**load_config(ROOT / "training" / "nbody.yaml").model).num_parameters() == 14128


def test_a_recipe_of_the_former_format_translates_with_that_loops_defaults():
    """What an old-format recipe leaves out means the former loop's default (the SEGNN
    protocol), not sinet-train's: ``model: {lmax: 1}`` alone is the benchmark recipe."""
    raw = config_from_legacy({"model": {"lmax": 1}})
    assert raw == config_from_legacy(legacy_config(None, {}))
    config = TrainConfig.from_dict(raw)
    assert NBodySINet(**config.model).num_parameters() == 14128
    t = config.training
    assert (t.lr, t.weight_decay, t.batch_size, t.epochs, t.valid_every) == (5e-4, 1e-12, 100, 1000, 5)
    assert (t.optimizer, t.scheduler, t.ema_decay, t.dtype) == ("adam", "constant", 0.0, "float32")
    assert (config.seed, config.nbody.dataset_seed, config.nbody.n_train) == (0, 42, 3000)
    with pytest.raises(ConfigError, match="train.nope"):
        config_from_legacy({"train": {"nope": 1}})


def test_nbody_config_errors_name_the_key(tmp_path):
    raw = config_from_legacy(small_legacy(tmp_path))
    for section, key, value, words in (
        ("nbody", "n_train", 0, "nbody.n_train"),
        ("nbody", "input_frames", [39], "nbody.input_frames"),
        ("model", "lmax", 0, "lmax"),
        ("training", "optimizer", "sgd", "training.optimizer"),
        ("training", "valid_every", 0, "training.valid_every"),
    ):
        bad = json.loads(json.dumps(raw))
        bad[section][key] = value
        with pytest.raises(ConfigError, match=words):
            TrainConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="the nbody section is read only with 'task: nbody'"):
        TrainConfig.from_dict({"nbody": {}, "data": {"train": ["x.xyz"]}})
    with pytest.raises(ConfigError, match="schedule_epochs"):
        config_from_legacy(small_legacy(tmp_path, lr_schedule="cosine", schedule_epochs=5))


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"weight_decay": 1e-3, "ema_decay": 0.9}], ids=["protocol", "decay_and_ema"])
def test_one_epoch_matches_the_former_loop(cache, tmp_path, options):
    """The same config, translated, gives the same first epoch: initial weights, training
    loss, the Adam step (with L2 weight decay) and the validation and test MSE.

    The training set is one batch: the two trainers draw the order of the samples from
    different generators (the shared trainer from ``seed + epoch``, the former loop from a
    torch generator), which changes the batches of a larger set but not the sum of one batch
    beyond float32 rounding.
    """
    data = ds.load_nbody_dataset(cache, SIZES["n_train"], SIZES["n_valid"], SIZES["n_test"], SIZES["seed"])
    legacy = small_legacy(cache, **options)
    legacy_train(legacy, tmp_path / "old", data=data, verbose=False)
    old_log = json.loads((tmp_path / "old" / "log.json").read_text())["history"][0]
    old_state = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=True)

    trainer = Trainer(TrainConfig.from_dict(config_from_legacy(legacy, str(tmp_path / "new"))), quiet=True)
    summary = trainer.run()
    new_log = trainer.history[0]
    assert new_log["train_loss"] == pytest.approx(old_log["train_mse"], rel=1e-6)
    assert new_log["valid_mse"] == pytest.approx(old_log["valid_mse"], rel=1e-6)
    assert summary["test"]["mse"] == pytest.approx(old_log["test_mse"], rel=1e-6)
    weights = old_state["model"]["state_dict"]
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=1e-5, atol=1e-7)
    if options.get("ema_decay"):
        ema = old_state["ema"]
        for name, value in trainer.ema.state_dict().items():
            torch.testing.assert_close(value, ema[name], rtol=1e-5, atol=1e-7)
    # the exported model is the one the former loop kept as best
    exported = load_nbody_model(tmp_path / "new" / "best_model.pt")
    assert exported.config == load_nbody_model(tmp_path / "old" / "best.pt").config


@pytest.mark.slow
def test_sinet_train_nbody_resumes_exactly_and_validates_every_k(cache, tmp_path, capsys):
    """``sinet-train`` on an N-body recipe: a run stopped after epoch 2 and resumed ends with
    the weights of an uninterrupted run; ``valid_every: 2`` validates epochs 2 and 3 (last)."""
    common = [
        "task=nbody",
        f"nbody.cache_dir={cache}",
        f"nbody.dataset_seed={SIZES['seed']}",
        "nbody.n_train=60",
        f"nbody.n_valid={SIZES['n_valid']}",
        f"nbody.n_test={SIZES['n_test']}",
        "training.batch_size=20",
        "training.epochs=3",
        "training.valid_every=2",
        "training.ema_decay=0.5",
        "model.channels=8",
        "model.num_layers=1",
    ]
    recipe = ROOT / "training" / "nbody.yaml"
    assert train_main([str(recipe), f"run_dir={tmp_path / 'full'}", *common, "--quiet"]) == 0
    config = load_config(recipe, [f"run_dir={tmp_path / 'part'}", *common])
    assert Trainer(config, quiet=True).run(stop_after_epoch=2) == {"stopped_at_epoch": 2}
    assert train_main([str(recipe), f"run_dir={tmp_path / 'part'}", *common, "--resume", "--quiet"]) == 0
    full, part = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("full", "part"))
    for name, value in full["model"].items():
        assert torch.equal(value, part["model"][name]), name
    rows = (tmp_path / "full" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[2] != "nan" for r in rows[1:]] == [False, True, True]
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["task"] == "nbody" and summary["num_parameters"] > 0
    assert (tmp_path / "full" / "learning_curve.png").is_file()
    assert "valid MSE" in capsys.readouterr().out


@pytest.mark.slow
def test_sinet_eval_scores_nbody_model_files(cache, tmp_path, capsys):
    data = ds.load_nbody_dataset(cache, SIZES["n_train"], SIZES["n_valid"], SIZES["n_test"], SIZES["seed"])
    npz = tmp_path / "test.npz"
    ds.save_npz_split(npz, data["test"])
    config = TrainConfig.from_dict(config_from_legacy(small_legacy(cache), str(tmp_path / "run")))
    summary = Trainer(config, quiet=True).run()
    model_file = tmp_path / "run" / "best_model.pt"
    assert eval_main([str(model_file), str(npz), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    reported = json.loads((tmp_path / "m.json").read_text())
    assert reported["mse"] == pytest.approx(summary["test"]["mse"], rel=1e-9)
    assert f"test MSE: {summary['test']['mse']:.6f}" in out and reported["n"] == SIZES["n_test"]
    # an ensemble of two identical members is the model itself
    assert eval_main([f"{model_file},{model_file}", str(npz)]) == 0
    assert "ensemble of 2 models" in capsys.readouterr().out
    for args in (
        [f"{model_file},{model_file}", str(npz), "--time"],
        [str(model_file), str(npz), "--dtype", "float64"],
        [str(model_file), str(npz), str(npz)],
    ):
        with pytest.raises(SystemExit):
            eval_main(args)
    bad = {k: np.array(v) for k, v in data["test"].items() if k in ds.EVAL_KEYS}
    bad["x"][0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    capsys.readouterr()
    assert eval_main([str(model_file), str(tmp_path / "nan.npz")]) == 2
    assert "sinet-eval: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_the_former_command_runs_through_sinet_train(cache, tmp_path, capsys):
    """``python -m sinet_ase.nbody.train`` says it is deprecated and trains with the shared
    trainer, from a recipe of either format."""
    sets = [f"--set=data.cache_dir={cache}", "--set=model.channels=8", "--set=model.num_layers=1"]
    sets += [f"--set=data.{k}={v}" for k, v in SIZES.items()]
    old_format = tmp_path / "old.yaml"
    old_format.write_text("model: {lmax: 1}\ntrain: {lr: 3.0e-3}\n")
    for recipe, out in ((ROOT / "training" / "nbody.yaml", "new"), (old_format, "old")):
        assert legacy_main([str(recipe), "--out", str(tmp_path / out), "--epochs", "1", *sets]) == 0
        assert "deprecated" in capsys.readouterr().err
        summary = json.loads((tmp_path / out / "summary.json").read_text())
        assert summary["task"] == "nbody" and summary["epochs_done"] == 1
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config["training"]["lr"] == 3e-3 and config["model"]["channels"] == 8
    assert legacy_main([str(old_format), "--set=train.nope=1", "--out", str(tmp_path / "x")]) == 2


#: the committed model files the docs name, with the test MSE documented for each
#: (docs/nbody.md, docs/results/nbody.md; each folder's summary.json holds the full number)
DOCUMENTED = {
    "best.pt": 0.008311,
    "seed0/best.pt": 0.008311,
    "seed1/best.pt": 0.008238,
    "seed2/best.pt": 0.008932,
    "best_seed0/best.pt": 0.00360,
}


@pytest.fixture(scope="module")
def benchmark_test_npz(tmp_path_factory):
    """The benchmark's test split (dataset seed 42, 3,000 / 2,000 / 2,000), in the evaluation
    format: the cached file if there is one, else simulated (about half a minute)."""
    cached = ds.default_cache_dir() / "test.npz"
    if cached.is_file():
        return cached
    path = tmp_path_factory.mktemp("nbody_benchmark") / "test.npz"
    ds.save_npz_split(path, ds.make_splits(42, 3000, 2000, 2000, only=("test",))["test"])
    return path


def _sinet_eval_mse(model, npz, tmp_path) -> float:
    out = tmp_path / "metrics.json"
    assert eval_main([model, str(npz), "--json", str(out)]) == 0
    return json.loads(out.read_text())["mse"]


@pytest.mark.slow
def test_committed_model_files_rescore_to_the_documented_test_mse(benchmark_test_npz, tmp_path):
    scored = {}
    for name in sorted(set(DOCUMENTED) | {f"best_seed{s}/best.pt" for s in (1, 2)}):
        path = RESULTS / name
        summary = json.loads((path.parent / ("best.json" if name == "best.pt" else "summary.json")).read_text())
        scored[name] = _sinet_eval_mse(str(path), benchmark_test_npz, tmp_path)
        # the number the former loop logged at the best epoch, to float32 rounding
        assert scored[name] == pytest.approx(summary["summary"]["test_mse_at_best"], rel=1e-6), name
        if name in DOCUMENTED:
            assert round(scored[name], 6 if DOCUMENTED[name] > 0.005 else 5) == DOCUMENTED[name], name
    # the documented means +- sample standard deviations over three seeds
    for pattern, mean, std in (("seed{}/best.pt", 0.00849, 0.00038), ("best_seed{}/best.pt", 0.00362, 0.00004)):
        values = [scored[pattern.format(s)] for s in range(3)]
        # the documented five decimals (half a unit of the last)
        assert abs(np.mean(values) - mean) <= 0.5e-5, pattern
        assert abs(np.std(values, ddof=1) - std) <= 0.5e-5, pattern


@pytest.mark.slow
def test_a_checkpoint_older_than_the_optimizer_and_valid_every_keys_resumes(cache, tmp_path):
    """Checkpoints written before ``training.optimizer`` and ``valid_every`` existed resume:
    their absence means the defaults (AdamW, every epoch), not a changed config."""
    raw = config_from_legacy(small_legacy(cache), str(tmp_path / "run"))
    raw["training"].update(optimizer="adamw", valid_every=1, epochs=2)
    assert Trainer(TrainConfig.from_dict(raw), quiet=True).run(stop_after_epoch=1)
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for key in ("optimizer", "valid_every"):
        del state["config"]["training"][key]
    torch.save(state, path)
    assert Trainer(TrainConfig.from_dict(raw), resume=True, quiet=True).run()["epochs_done"] == 2
    raw["training"]["optimizer"] = "adam"  # a real change is still refused
    with pytest.raises(ConfigError, match="training.optimizer"):
        Trainer(TrainConfig.from_dict(raw), resume=True, quiet=True)


@pytest.mark.slow
def test_nbody_trains_with_ddp_on_two_cpu_processes(cache, tmp_path):
    """The N-body task under ``torchrun`` (gloo, two ranks): the ranks end with the same
    weights and the validation MSE falls, as for the energy task."""
    import os
    import subprocess
    import sys

    overrides = [
        f"run_dir={tmp_path / 'ddp'}",
        f"nbody.cache_dir={cache}",
        f"nbody.dataset_seed={SIZES['seed']}",
        f"nbody.n_train={SIZES['n_train']}",
        f"nbody.n_valid={SIZES['n_valid']}",
        f"nbody.n_test={SIZES['n_test']}",
        "training.batch_size=10",
        "training.epochs=3",
        "training.valid_every=1",
        "training.lr=3e-3",
        "model.channels=8",
        "model.num_layers=1",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "sinet_ase.cli", str(ROOT / "training" / "nbody.yaml"), *overrides, "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("valid_loss")
    valid = [float(r.split(",")[column]) for r in rows[1:]]
    assert len(valid) == 3 and np.isfinite(valid).all() and valid[-1] < valid[0]
