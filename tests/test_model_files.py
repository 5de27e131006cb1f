"""Every model file in the repository loads through ``sinet_ase.load_model`` and gives its
recorded numbers; format migrations, the model registry and the one set of backbone defaults.

The reference outputs (``data/model_file_outputs.json``) are float64 evaluations of each
file on fixed inputs (:func:`outputs`), recorded when the file was committed; a model file
added later needs its entry: ``python tests/test_model_files.py --record`` writes the
entries of files that lack one (it never changes an existing entry).
"""

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from sinet_ase import ModelFileError, SINet, SINetCalculator, atoms_to_graph, batch_graphs, load_model
from sinet_ase.hparams import DEFAULTS, BackboneConfig
from sinet_ase.io import FORMAT_VERSION, MIGRATIONS, model_from_dict, model_to_dict, save_model
from sinet_ase.model import SINetBackbone
from sinet_ase.nbody.model import NBodySINet, load_nbody_model
from sinet_ase.qm9.model import QM9DipoleModel, QM9ScalarModel
from sinet_ase.registry import model_kinds

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data" / "model_file_outputs.json"
#: folders whose model files are checked when the tree is not a git checkout
FOLDERS = ("sinet_ase/potentials", "training", "benchmarks", "tests")


def repository_model_files():
    """Paths (relative to the root) of the ``*.pt`` files git tracks, or, outside a git
    checkout, of those under :data:`FOLDERS` other than training checkpoints."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "*.pt"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        return sorted(p for p in listed.split("\0") if p)
    return sorted(
        p.relative_to(ROOT).as_posix()
        for folder in FOLDERS
        if (ROOT / folder).is_dir()
        for p in (ROOT / folder).rglob("*.pt")
        if p.name != "checkpoint.pt"
    )


MODEL_FILES = repository_model_files()


def inputs():
    """The fixed inputs every model file is evaluated on."""
    ethanol = molecule("CH3CH2OH")
    box = ethanol.copy()
    box.set_cell([7.0, 7.5, 8.0])
    box.center()
    box.pbc = True
    molecules = [molecule(name) for name in ("CH3CH2OH", "H2O", "NH3", "CH4", "HCN", "CF4")]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64) * 2
    v = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    q = torch.tensor([[1.0, -1, 1, -1, 1], [-1, -1, 1, 1, 1]], dtype=torch.float64)
    return {"ethanol": ethanol, "box": box, "molecules": molecules, "nbody": (x, v, q)}


def cluster_of(elements):
    """A fixed 8-atom cluster of ``elements`` (for potentials that do not know H, C, O),
    alone and in a periodic 6 Å box: a simple cubic 2x2x2 block with spacing 2.3 Å."""
    positions = [[2.3 * i, 2.3 * j, 2.3 * k] for i in range(2) for j in range(2) for k in range(2)]
    symbols = [elements[n % len(elements)] for n in range(8)]
    single = Atoms(symbols, positions=positions)
    single.rattle(0.1, seed=0)
    box = single.copy()
    box.set_cell([6.0, 6.2, 6.4])
    box.pbc = True
    return single, box


def outputs(model, task, data):
    """``{name: float64 array}`` of ``model`` (cast to float64) on :func:`inputs`:
    potentials: energy and forces of ethanol, energy, forces and stress of ethanol in a
    periodic box; QM9: predictions for six molecules (and the dipole vectors of a dipole
    model); N-body: predicted positions of two systems."""
    model = model.double()
    if task == "potential":
        single, box = data["ethanol"], data["box"]
        if not set(single.get_chemical_symbols()) <= set(model.elements):
            single, box = cluster_of(model.elements)
        a = model(atoms_to_graph(single, model.cutoff))
        b = model(atoms_to_graph(box, model.cutoff), compute_stress=True)
        out = {"e": a["energy"], "f": a["forces"], "pe": b["energy"], "pf": b["forces"], "ps": b["stress"]}
    elif task == "qm9":
        with torch.no_grad():
            result = model(batch_graphs([atoms_to_graph(m, model.cutoff) for m in data["molecules"]]))
        out = {k: result[k] for k in ("prediction", "dipole") if k in result}
    elif task == "nbody":
        with torch.no_grad():
            out = {"x": model(*data["nbody"])}
    else:
        raise ValueError(f"no reference inputs for task {task!r}")
    return {k: v.detach().numpy() for k, v in out.items()}


def task_of(model):
    return next(kind.task for kind in model_kinds().values() if type(model) is kind.cls)


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def data():
    return inputs()


def test_the_repository_has_model_files():
    if not (ROOT / "sinet_ase" / "potentials").is_dir():
        pytest.skip("not a source tree")
    assert any(p.startswith("sinet_ase/potentials/") for p in MODEL_FILES)


@pytest.mark.parametrize("path", MODEL_FILES)
def test_model_file_loads_and_gives_its_recorded_numbers(path, reference, data):
    model = load_model(ROOT / path)
    assert not model.training and model.metadata is not None
    expected = reference["files"].get(path)
    assert expected is not None, (
        f"{path} has no recorded outputs; record them with python tests/test_model_files.py --record"
    )
    got = outputs(model, task_of(model), data)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(
            got[key], np.array(value).reshape(got[key].shape), rtol=1e-9, atol=1e-9, err_msg=f"{path}: {key}"
        )


# --- format versions and migrations ---------------------------------------------------------


def small_models():
    torch.manual_seed(0)
    small = dict(cutoff=3.0, lmax=1, channels=4, num_layers=1, mlp_hidden=8, radial_hidden=8)
    return [
        SINet(["H", "C", "O"], atomic_energies={"H": -1.5}, **small),
        SINet(["H", "C", "O"], backbone="siformer", num_heads=2, **small),
        QM9ScalarModel(target="alpha", target_mean=1.0, target_std=2.0, atom_refs={"C": 3.0}, **small),
        QM9DipoleModel(target_std=1.5, **small),
        NBodySINet(lmax=1, channels=4, num_layers=1, radial_hidden=8, mlp_hidden=8),
        NBodySINet(
            lmax=1,
            channels=4,
            num_layers=1,
            radial_hidden=8,
            mlp_hidden=8,
            backbone="siformer",
            num_heads=2,
            coulomb_scalars=True,
            node_charges=False,
            orbit_scalars=True,
            galilean_horizon=1.0,
        ),
    ]


def as_version_1(payload):
    """What the version-1 writers stored for the same model (io module docstring)."""
    old = dict(payload, format_version=1, config=dict(payload["config"]))
    config = old["config"]
    off = {
        "backbone": "sinet",
        "coulomb_scalars": False,
        "node_charges": True,
        "orbit_scalars": False,
        "galilean_horizon": None,
    }
    if payload["model_type"] == "NBodySINet":
        old["format"] = "sinet-ase-nbody-model"
        del old["elements"]
        for key, value in off.items():
            if config[key] == value:
                del config[key]
        if "backbone" not in config:
            del config["num_heads"]
    elif payload["model_type"].startswith("QM9") and config["backbone"] == "sinet":
        del config["backbone"], config["num_heads"]
    if payload["model_type"] == "SINet":  # the ZBL keywords came with version 3
        del config["zbl"], config["zbl_cutoff_factor"]
    return old


def test_version_2_energy_files_migrate_to_no_zbl_term():
    """Format 3 added the ZBL keywords; a version-2 energy file (no such keys) loads with the
    term off and the same numbers."""
    model = small_models()[0]
    payload = model_to_dict(model)
    old = dict(payload, format_version=2, config=dict(payload["config"]))
    del old["config"]["zbl"], old["config"]["zbl_cutoff_factor"]
    migrated = model_from_dict(old)
    assert migrated.config == model.config and migrated.zbl is None
    assert migrated.config["zbl"] is False and migrated.config["zbl_cutoff_factor"] == 0.6


def test_saved_files_are_the_current_version_and_store_every_constructor_keyword(tmp_path):
    for k, model in enumerate(small_models()):
        save_model(model, tmp_path / f"{k}.pt", metadata={"k": k})
        payload = torch.load(tmp_path / f"{k}.pt", weights_only=True)
        assert payload["format"] == "sinet-ase-model" and payload["format_version"] == FORMAT_VERSION
        keywords = set(inspect.signature(type(model).__init__).parameters) - {"self"}
        assert set(payload["config"]) == keywords, type(model).__name__
        loaded = load_model(tmp_path / f"{k}.pt")
        assert type(loaded) is type(model) and loaded.config == model.config
        assert loaded.metadata == {"k": k}


def test_version_1_files_migrate_to_the_same_model(data):
    assert sorted(MIGRATIONS) == list(range(1, FORMAT_VERSION))
    for model in small_models():
        payload = model_to_dict(model)
        old = as_version_1(payload)
        migrated = model_from_dict(old)
        assert migrated.config == model.config, type(model).__name__
        task = task_of(model)
        expected, got = outputs(model.eval(), task, data), outputs(migrated, task, data)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


def test_a_version_1_energy_file_without_elements_is_damaged():
    old = as_version_1(model_to_dict(small_models()[0]))
    del old["elements"]
    with pytest.raises(ModelFileError, match="lacks the field 'elements'"):
        model_from_dict(old, "m.pt")


# --- the registry ---------------------------------------------------------------------------


def test_every_model_kind_is_registered_with_its_task():
    kinds = {name: (kind.cls, kind.task) for name, kind in model_kinds().items()}
    assert kinds == {
        "SINet": (SINet, "potential"),
        "QM9ScalarModel": (QM9ScalarModel, "qm9"),
        "QM9DipoleModel": (QM9DipoleModel, "qm9"),
        "NBodySINet": (NBodySINet, "nbody"),
    }
    with pytest.raises(TypeError, match="not a registered model type"):
        model_to_dict(SINetBackbone(["H"], channels=4, lmax=1, num_layers=1))


def test_loaders_of_one_task_refuse_another_tasks_file(tmp_path):
    qm9, nbody = small_models()[2], small_models()[4]
    save_model(qm9, tmp_path / "qm9.pt")
    save_model(nbody, tmp_path / "nbody.pt")
    assert type(load_model(tmp_path / "qm9.pt")) is QM9ScalarModel
    with pytest.raises(
        ModelFileError,
        match=r"qm9\.pt holds a QM9ScalarModel, a qm9 model; "
        r"a potential model is needed",
    ):
        SINetCalculator(tmp_path / "qm9.pt")
    with pytest.raises(ModelFileError, match="holds a NBodySINet, a nbody model"):
        load_model(tmp_path / "nbody.pt", task="qm9")
    with pytest.raises(ModelFileError, match="holds a QM9ScalarModel"):
        load_nbody_model(tmp_path / "qm9.pt")


def test_a_training_checkpoint_is_refused_with_the_file_to_load(tmp_path):
    """The message names the run's model file when it exists, else how the run writes it."""
    torch.save({"format": "sinet-ase-checkpoint", "format_version": 1}, tmp_path / "checkpoint.pt")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        ModelFileError,
        match=r"checkpoint\.pt is a training checkpoint \(the state that "
        r"sinet-train --resume continues from.*not a model file; the run exports its "
        r"model as .*best_model\.pt, which does not exist yet.*`sinet-train "
        r".*config\.json --resume`",
    ):
        load_model(tmp_path / "checkpoint.pt")
    save_model(small_models()[0], tmp_path / "best_model.pt")
    with pytest.raises(
        ModelFileError,
        match=r"load the run's exported model instead: " + re.escape(str(tmp_path / "best_model.pt")) + "$",
    ):
        SINetCalculator(tmp_path / "checkpoint.pt")


def test_an_unknown_config_key_says_another_version_wrote_the_file():
    payload = model_to_dict(small_models()[0])
    payload["config"]["bogus"] = 1
    with pytest.raises(ModelFileError, match="config does not fit this sinet-ase.*another version"):
        model_from_dict(payload, "m.pt")


# --- one place for the backbone defaults ----------------------------------------------------


def test_backbone_defaults_come_from_one_dataclass():
    for cls in (SINetBackbone, SINet, QM9ScalarModel, QM9DipoleModel):
        params = inspect.signature(cls.__init__).parameters
        assert {k: params[k].default for k in BackboneConfig.keys()} == DEFAULTS.as_dict(), cls
    assert BackboneConfig(channels=32.0, cutoff="4").as_dict()["channels"] == 32
    with pytest.raises(ValueError, match="channels must be an int, got 'many'"):
        BackboneConfig(channels="many")


def record_missing():
    """Write the outputs of the model files that have no entry yet (existing ones stay)."""
    from sinet_ase.files import atomic_write_text

    reference = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {"files": {}}
    reference["inputs"] = "tests/test_model_files.py: inputs() and outputs(), float64"
    data = inputs()
    for path in MODEL_FILES:
        if path not in reference["files"]:
            model = load_model(ROOT / path)
            reference["files"][path] = {k: v.ravel().tolist() for k, v in outputs(model, task_of(model), data).items()}
            print(f"recorded {path}")
    reference["files"] = dict(sorted(reference["files"].items()))
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(REFERENCE, json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_model_files.py --record")
    record_missing()
