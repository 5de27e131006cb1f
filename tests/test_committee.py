"""Committee calculator: mean and spread of several models on one graph; bad committees."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

import sinet_ase.calculator
from sinet_ase import SINetCalculator, save_model
from sinet_ase.committee import COMMITTEE_PROPERTIES
from sinet_ase.testing import small_sinet


def make_model(seed, elements=("H", "C", "O", "Cu"), cutoff=4.0):
    return small_sinet(elements, torch.float32, cutoff=cutoff, seed=seed)


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def single(model, atoms, stress=False):
    atoms = atoms.copy()
    atoms.calc = SINetCalculator(model)
    return (
        atoms.get_potential_energy(),
        atoms.get_potential_energies(),
        atoms.get_forces(),
        atoms.get_stress() if stress else None,
    )


def test_committee_of_one_equals_the_single_calculator():
    model = make_model(0)
    for atoms, stress in ((ethanol(), False), (copper(), True)):
        energy, energies, forces, stress_ref = single(model, atoms, stress)
        atoms.calc = SINetCalculator([model])
        assert atoms.get_potential_energy() == energy
        np.testing.assert_array_equal(atoms.get_potential_energies(), energies)
        np.testing.assert_array_equal(atoms.get_forces(), forces)
        assert atoms.calc.results["energy_std"] == 0.0
        assert not atoms.calc.results["forces_std"].any()
        if stress:
            np.testing.assert_array_equal(atoms.get_stress(), stress_ref)
            assert not atoms.calc.results["stress_std"].any()


def test_committee_of_three_mean_and_std(tmp_path):
    models = [make_model(seed) for seed in (0, 1, 2)]
    for k, model in enumerate(models):
        save_model(model, tmp_path / f"member_{k}.pt")
    atoms = copper()
    refs = [single(m, atoms, stress=True) for m in models]
    energy = np.array([r[0] for r in refs])
    energies = np.stack([r[1] for r in refs])
    forces = np.stack([r[2] for r in refs])
    stress = np.stack([r[3] for r in refs])
    atoms.calc = SINetCalculator(str(tmp_path / "member_*.pt"))  # a glob
    assert len(atoms.calc.models) == 3 and atoms.calc.committee
    assert atoms.get_potential_energy() == pytest.approx(energy.mean(), rel=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), energies.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), stress.mean(0), rtol=1e-12, atol=1e-14)
    r = atoms.calc.results
    assert r["energy_std"] > 0 and r["forces_std"].shape == (len(atoms), 3) and r["forces_std"].all()
    assert r["energy_std"] == pytest.approx(np.std(energy), rel=1e-9)
    assert r["energy_var"] == pytest.approx(np.var(energy), rel=1e-9)
    np.testing.assert_allclose(r["forces_std"], np.std(forces, axis=0), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(r["stress_std"], np.std(stress, axis=0), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(r["energy_comm"], energy, rtol=1e-12)
    assert r["forces_comm"].shape == (3, len(atoms), 3) and r["stress_comm"].shape == (3, 6)
    # through ASE's property interface too
    assert atoms.calc.get_property("energy_std", atoms) == r["energy_std"]


def test_one_graph_for_all_members(monkeypatch):
    calls = []
    build = sinet_ase.calculator.atoms_to_graph
    monkeypatch.setattr(sinet_ase.calculator, "atoms_to_graph", lambda *a, **k: calls.append(1) or build(*a, **k))
    atoms = ethanol()
    atoms.calc = SINetCalculator([make_model(s) for s in range(3)])
    atoms.get_forces()
    assert len(calls) == 1


def test_force_spread_norm_is_rotation_invariant():
    models = [make_model(s) for s in range(3)]
    atoms = ethanol()
    atoms.calc = SINetCalculator(models)
    atoms.get_forces()
    std, comm = atoms.calc.results["forces_std"], atoms.calc.results["forces_comm"]
    R = Rotation.random(random_state=3).as_matrix()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ R.T
    rotated.calc = SINetCalculator(models)
    rotated.get_forces()
    np.testing.assert_allclose(rotated.calc.results["forces_comm"], comm @ R.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        np.linalg.norm(rotated.calc.results["forces_std"], axis=1), np.linalg.norm(std, axis=1), rtol=1e-8, atol=1e-10
    )
    assert rotated.calc.results["energy_std"] == pytest.approx(atoms.calc.results["energy_std"], rel=1e-8)


def test_single_model_has_no_committee_keys():
    atoms = ethanol()
    atoms.calc = SINetCalculator(make_model(0))
    atoms.get_forces()
    assert not set(COMMITTEE_PROPERTIES) & set(atoms.calc.results)
    assert not atoms.calc.committee


def test_bad_committees(tmp_path):
    with pytest.raises(ValueError, match="cutoff"):
        SINetCalculator([make_model(0), make_model(1, cutoff=5.0)])
    with pytest.raises(ValueError, match="elements"):
        SINetCalculator([make_model(0), make_model(1, elements=("H", "C", "N", "Cu"))])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        SINetCalculator(str(tmp_path / "nothing_*/best_model.pt"))
    with pytest.raises(ValueError, match="empty"):
        SINetCalculator([])
    with pytest.raises(TypeError, match="path or a torch.nn.Module"):
        SINetCalculator([make_model(0), 3])
    # the same elements in another order are one committee (the graph holds atomic numbers)
    atoms = ethanol()
    atoms.calc = SINetCalculator([make_model(0), make_model(1, elements=("Cu", "O", "C", "H"))])
    assert atoms.get_potential_energy() == pytest.approx(
        0.5 * (single(make_model(0), atoms)[0] + single(make_model(1, elements=("Cu", "O", "C", "H")), atoms)[0]),
        rel=1e-12,
    )


def test_sinet_train_committee_option(tmp_path, capsys):
    import json

    import yaml
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from sinet_ase.cli import train_main

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(12):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    write(tmp_path / "train.extxyz", frames)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "committee"),
                "seed": 5,
                "data": {"train": [str(tmp_path / "train.extxyz")], "valid_size": 0.25},
                "model": {
                    "cutoff": 4.0,
                    "lmax": 1,
                    "channels": 4,
                    "num_layers": 1,
                    "mlp_hidden": 8,
                    "radial_hidden": 8,
                },
                "training": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0, "dtype": "float64"},
            }
        )
    )
    assert train_main([str(config), "--committee", "3", "--quiet"]) == 0
    pattern = str(tmp_path / "committee" / "member_*" / "best_model.pt")
    assert pattern in capsys.readouterr().out
    for k in range(3):
        member = tmp_path / "committee" / f"member_{k}"
        assert (member / "best_model.pt").is_file()
        assert json.loads((member / "config.json").read_text())["seed"] == 5 + k
    atoms = frames[0].copy()
    atoms.calc = SINetCalculator(pattern)
    atoms.get_forces()
    assert len(atoms.calc.models) == 3 and atoms.calc.results["energy_std"] > 0
    # a second run into the same folder overwrites nothing
    assert train_main([str(config), "--committee", "3", "--quiet"]) == 2
    assert "exist" in capsys.readouterr().err
