"""The shipped potential and the main job (``sinet-md``)."""

import json

import numpy as np
import pytest
from ase.io import read

from sinet_ase import SINetCalculator, list_pretrained
from sinet_ase.cli import md_main
from sinet_ase.evaluate import evaluate_files
from sinet_ase.io import load_model
from sinet_ase.pretrained import potential_card, pretrained_path, shipped_structure_names

SHIPPED = "sinet-xtb-md17"
RMD17 = ["aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene",
         "paracetamol", "salicylic_acid", "toluene", "uracil"]


def card():
    return json.loads(pretrained_path(SHIPPED).with_suffix(".json").read_text())


def test_shipped_potential_and_structures_are_listed():
    assert SHIPPED in list_pretrained()
    assert set(RMD17) <= set(shipped_structure_names())


def test_shipped_potential_reproduces_its_card_on_the_committed_test_slice():
    info = card()["test_slice"]
    frames = read(pretrained_path(SHIPPED).parent / info["file"], index=":")
    assert len(frames) == 10 * info["frames_per_molecule"]
    calc = SINetCalculator.from_pretrained(SHIPPED)
    errors, energy_errors = [], []
    for atoms in frames:
        reference_f, reference_e = atoms.get_forces(), atoms.get_potential_energy()
        atoms.calc = calc
        errors.append(np.abs(atoms.get_forces() - reference_f).ravel())
        energy_errors.append(abs(atoms.get_potential_energy() - reference_e) / len(atoms))
    f_mae = 1000 * np.concatenate(errors).mean()
    e_mae = 1000 * np.mean(energy_errors)
    assert f_mae == pytest.approx(info["f_mae_mev_a"], rel=0.05)
    assert e_mae == pytest.approx(info["e_mae_mev_atom"], rel=0.05)


def test_main_job_runs_50_steps(tmp_path, capsys):
    traj = tmp_path / "aspirin.traj"
    assert md_main(["aspirin", "--steps", "50", "--interval", "25", "--trajectory", str(traj),
                    "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "NVE energy drift" in out and "ms/step" in out
    frames = read(traj, index=":")
    assert len(frames) == 3 and len(frames[0]) == 21


def test_main_job_rejects_unknown_structure(capsys):
    assert md_main(["not-a-molecule", "--steps", "1"]) == 2
    assert "unknown structure" in capsys.readouterr().err


#: potentials trained on the shared DFT benchmarks (training/dft/publish_dft_potential.py)
DFT_POTENTIALS = [name for name in list_pretrained() if name != SHIPPED]


@pytest.mark.parametrize("name", DFT_POTENTIALS)
def test_dft_potential_reproduces_its_card_and_runs_md_from_its_start(name, tmp_path, capsys):
    card = potential_card(name)
    info = card["test_slice"]
    model = load_model(pretrained_path(name)).double()
    with_stress = info.get("stress_mae_mev_a3") is not None
    result, frames, _ = evaluate_files(model, [pretrained_path(name).parent / info["file"]],
                                       require_forces=True, require_stress=with_stress)
    assert len(frames) == info["n_structures"]
    keys = ("energy_mae_mev", "forces_mae_mev_a", "forces_rmse_mev_a")
    for key in keys + (("stress_mae_mev_a3",) if with_stress else ()):
        assert result["all"][key] == pytest.approx(info[key], rel=1e-6), key
    assert card["start_structure"] in shipped_structure_names()
    traj = tmp_path / "md.traj"
    assert md_main(["--potential", name, "--steps", "20", "--interval", "10",
                    "--trajectory", str(traj), "--no-progress"]) == 0
    assert "NVE energy drift" in capsys.readouterr().out
