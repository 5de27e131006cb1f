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
RMD17 = [
    "aspirin",
    "azobenzene",
    "benzene",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "paracetamol",
    "salicylic_acid",
    "toluene",
    "uracil",
]


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
    assert md_main(["aspirin", "--steps", "50", "--interval", "25", "--trajectory", str(traj), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "NVE energy drift" in out and "ms/step" in out
    frames = read(traj, index=":")
    assert len(frames) == 3 and len(frames[0]) == 21


def test_sinet_eval_takes_a_shipped_potential_by_name(tmp_path, capsys):
    from ase.io import write

    from sinet_ase.cli import eval_main

    frames = read(pretrained_path(SHIPPED).parent / card()["test_slice"]["file"], index="::20")
    data = tmp_path / "slice.extxyz"
    write(data, frames)
    assert eval_main([SHIPPED, str(data), "--json", str(tmp_path / "m.json")]) == 0
    assert 5 < json.loads((tmp_path / "m.json").read_text())["all"]["forces_mae_mev_a"] < 100


def test_main_job_rejects_unknown_structure(capsys):
    assert md_main(["not-a-molecule", "--steps", "1"]) == 2
    assert "unknown structure" in capsys.readouterr().err
    assert md_main(["ethanol", "--potential", "nope", "--steps", "1"]) == 2
    assert capsys.readouterr().err.startswith("sinet-md: error: no shipped potential named 'nope';")


#: potentials trained on the shared DFT benchmarks (training/dft/publish_dft_potential.py)
DFT_POTENTIALS = [name for name in list_pretrained() if name != SHIPPED]


@pytest.mark.parametrize("name", DFT_POTENTIALS)
def test_dft_potential_reproduces_its_card_and_runs_md_from_its_start(name, tmp_path, capsys):
    card = potential_card(name)
    info = card["test_slice"]
    model = load_model(pretrained_path(name)).double()
    with_stress = info.get("stress_mae_mev_a3") is not None
    result, frames, _ = evaluate_files(
        model, [pretrained_path(name).parent / info["file"]], require_forces=True, require_stress=with_stress
    )
    assert len(frames) == info["n_structures"]
    keys = ("energy_mae_mev", "forces_mae_mev_a", "forces_rmse_mev_a")
    for key in keys + (("stress_mae_mev_a3",) if with_stress else ()):
        assert result["all"][key] == pytest.approx(info[key], rel=1e-6), key
    assert card["start_structure"] in shipped_structure_names()
    traj = tmp_path / "md.traj"
    assert (
        md_main(["--potential", name, "--steps", "20", "--interval", "10", "--trajectory", str(traj), "--no-progress"])
        == 0
    )
    assert "NVE energy drift" in capsys.readouterr().out


#: SHA-256 of each shipped potential's weights (sinet_ase.files.arrays_sha256 of the state dict)
#: as published (training_domain was added to the metadata afterwards, weights untouched)
WEIGHT_DIGESTS = {
    "sinet-xtb-md17": "b9df7652f56eb3e32b948fe6f682e2903857f7d5267b88fe6f5f5bbb1c25ca55",
    "sinet-rmd17-aspirin": "21109ad2e14c127ba81b47405542c83061653ef955e36f5b37b14ce5ee7930f3",
    "sinet-acac": "8e9b49b9cdf6c9abf9d333ba28b0c1fe22d8e16045627a98b6e0d754ead71669",
    "sinet-rmd17-ethanol": "3c2deb8d58d1095ed08409f85669f51761901c3da08b55d05511a44df6ad8482",
}


@pytest.mark.parametrize("name", sorted(WEIGHT_DIGESTS))
def test_shipped_potentials_carry_their_training_domain_with_the_published_weights(name):
    """``training/add_training_domain.py`` added the training data's statistics to the metadata
    and left every weight as published (so energies are bit-identical)."""
    from sinet_ase.files import arrays_sha256
    from sinet_ase.io import read_model_file

    payload = read_model_file(pretrained_path(name))
    state = {k: v.numpy() for k, v in payload["state_dict"].items()}
    assert arrays_sha256(state) == WEIGHT_DIGESTS[name]
    domain = payload["metadata"]["training_domain"]
    elements = payload["elements"]
    assert {"H-C", "C-O", "H-O"} <= set(domain["min_distance"])
    assert all(0.8 < d < 2.5 for d in domain["min_distance"].values())
    assert 5 <= domain["max_neighbours"] <= 30
    low, high = domain["energy_per_atom"]
    assert low < high and set(domain["atomic_energies"]) == set(elements)


def test_the_shipped_potential_warns_about_a_squeezed_molecule():
    """A shipped molecule is inside the domain of ``sinet-xtb-md17``; with an H pushed to 0.6 Å
    from its carbon it is outside, which the calculator says (once) or raises, by option."""
    import warnings

    from sinet_ase import SINetInputError
    from sinet_ase.domain import OutOfDomainWarning
    from sinet_ase.pretrained import shipped_structure

    atoms = shipped_structure("ethanol")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.calc = SINetCalculator.from_pretrained(SHIPPED)
        atoms.get_potential_energy()
    squeezed = atoms.copy()
    carbon = next(i for i, s in enumerate(squeezed.get_chemical_symbols()) if s == "C")
    hydrogen = int(
        np.argmin(
            [
                squeezed.get_distance(carbon, i) if s == "H" else np.inf
                for i, s in enumerate(squeezed.get_chemical_symbols())
            ]
        )
    )
    squeezed.set_distance(carbon, hydrogen, 0.6, fix=0)
    squeezed.calc = SINetCalculator.from_pretrained(SHIPPED)
    with pytest.warns(OutOfDomainWarning, match=r"\(H-C\) are 0.600 Å apart.*training data \(0.9[0-9]{2} Å\)"):
        squeezed.get_potential_energy()
    squeezed.calc = SINetCalculator.from_pretrained(SHIPPED, out_of_domain="raise")
    with pytest.raises(SINetInputError, match="outside the potential's training data"):
        squeezed.get_potential_energy()
