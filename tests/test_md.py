"""sinet-md: argument checks, one-line errors, and the stability checks that stop a blown-up run."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.io import read

from sinet_ase import md as md_module
from sinet_ase.cli import md_main
from sinet_ase.md import MDInstabilityError, StabilityMonitor
from sinet_ase.testing import FullDiskFile


def emt_ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.calc = EMT()
    atoms.set_velocities(np.zeros((len(atoms), 3)))
    return atoms


def test_monitor_accepts_the_starting_structure():
    atoms = emt_ethanol()
    monitor = StabilityMonitor(atoms, cutoff=5.0, max_temperature=2500.0, max_drift=0.05)
    assert monitor.problem() is None
    monitor.check(0)


def test_monitor_stops_a_temperature_runaway():
    atoms = emt_ethanol()
    monitor = StabilityMonitor(atoms, cutoff=5.0, max_temperature=2500.0)  # no drift check
    atoms.set_velocities(np.full((len(atoms), 3), 0.5))  # ~1e5 K
    with pytest.raises(MDInstabilityError, match=r"at step 7: the temperature reached \d+ K.*--max-temperature"):
        monitor.check(7)


def test_monitor_counts_the_degrees_of_freedom_that_the_log_counts():
    """Ethanol in NVE moves in 3N - 6 = 21 degrees of freedom: the limit applies to the
    temperature the log prints (27/21 of ASE's 3N temperature), not to ASE's."""
    from sinet_ase.md import degrees_of_freedom, kinetic_temperature

    atoms = emt_ethanol()
    atoms.set_velocities(np.random.default_rng(0).normal(size=(len(atoms), 3)) * 0.05)
    n_dof = degrees_of_freedom(atoms, "nve")
    logged = kinetic_temperature(atoms, n_dof)
    assert n_dof == 21 and logged == pytest.approx(atoms.get_temperature() * 27 / 21)
    limit = 0.5 * (logged + atoms.get_temperature())  # above ASE's temperature, below the log's
    assert StabilityMonitor(atoms, cutoff=5.0, max_temperature=limit).problem() is None
    with pytest.raises(MDInstabilityError, match=f"the temperature reached {logged:.0f} K"):
        StabilityMonitor(atoms, cutoff=5.0, max_temperature=limit, n_dof=n_dof).check()


def test_monitor_stops_an_nve_energy_drift():
    atoms = emt_ethanol()
    monitor = StabilityMonitor(atoms, cutoff=5.0, max_temperature=1e9, max_drift=0.05)
    atoms.positions[0] += 0.3  # same atoms, higher potential energy, no kinetic energy to match
    assert (atoms.get_potential_energy() - monitor.e_start) / len(atoms) > 0.05
    with pytest.raises(MDInstabilityError, match="drifted by .* eV/atom.*--max-drift"):
        monitor.check()


def test_monitor_stops_a_structure_that_falls_apart():
    atoms = emt_ethanol()
    monitor = StabilityMonitor(atoms, cutoff=5.0, max_temperature=1e9)
    atoms.positions[8] += [20.0, 0.0, 0.0]  # one hydrogen far away, at rest
    with pytest.raises(MDInstabilityError, match=r"1 atom\(s\) \(index 8\) lost every neighbour.*fell apart"):
        monitor.check()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--interval", "0", "not a positive whole number"),
        ("--steps", "-5", "not a positive whole number"),
        ("--timestep", "-0.5", "not a positive number"),
        ("--temperature", "-300", "not zero or a positive number"),
        ("--timestep", "nan", "not a positive number"),
        ("--trajectory", "out.pdb", "ending in .traj, .extxyz, .xyz"),
    ],
)
def test_bad_md_arguments_are_usage_errors(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        md_main(["ethanol", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(capsys):
    assert md_main(["ethanol", "--steps", "1", "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sinet-md: error: --device cuda: CUDA is not available") and "Traceback" not in err


def test_os_and_floating_point_errors_are_one_line_errors(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "out.traj"
    folder.mkdir()  # a folder where the trajectory file should go
    assert md_main(["ethanol", "--steps", "1", "--trajectory", str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sinet-md: error: ") and str(folder) in err and err.count("\n") == 1

    def non_finite(atoms, args):
        raise FloatingPointError("the model returned a non-finite energy")

    monkeypatch.setattr(md_module, "run_md", non_finite)
    assert md_main(["ethanol", "--steps", "1", "--no-progress"]) == 3
    assert "non-finite energy (try a smaller --timestep)" in capsys.readouterr().err


def test_a_blown_up_run_stops_with_exit_code_3_and_keeps_its_trajectory(tmp_path, capsys):
    traj = tmp_path / "hot.extxyz"
    code = md_main(
        [
            "ethanol",
            "--steps",
            "2000",
            "--timestep",
            "20",
            "--interval",
            "10",
            "--trajectory",
            str(traj),
            "--no-progress",
            "--compile",
            "off",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3, err
    assert "the MD became unstable at step" in err and str(traj) in err
    frames = read(traj, index=":")  # every frame written so far reads back
    assert 2 <= len(frames) < 200


def test_a_full_disk_during_extxyz_output_keeps_whole_frames_and_says_so(tmp_path, capsys, monkeypatch):
    import builtins

    real_open, calls = builtins.open, []

    def filling_disk(path, mode="r", *args, **kw):
        calls.append(path)
        handle = real_open(path, mode, *args, **kw)
        return FullDiskFile(handle, 50) if len(calls) == 3 else handle

    monkeypatch.setattr(md_module, "open", filling_disk, raising=False)
    traj = tmp_path / "out.extxyz"
    assert md_main(["ethanol", "--steps", "30", "--interval", "10", "--trajectory", str(traj), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"sinet-md: error: the disk is full ({traj}); free some space and run again\n"
    assert len(read(traj, index=":")) == 2  # the torn third frame was cut off


def test_each_check_can_be_switched_off_with_inf():
    atoms = emt_ethanol()
    monitor = StabilityMonitor(atoms, cutoff=float("inf"), max_temperature=float("inf"), max_drift=float("inf"))
    atoms.set_velocities(np.full((len(atoms), 3), 0.5))
    atoms.positions[8] += [20.0, 0.0, 0.0]
    assert monitor.problem() is None


def test_default_potential_is_the_xtb_one_whatever_else_ships(monkeypatch):
    from sinet_ase import pretrained

    monkeypatch.setattr(pretrained, "list_pretrained", lambda: ["sinet-acac", "sinet-xtb-md17"])
    assert pretrained.default_potential() == "sinet-xtb-md17"
    monkeypatch.setattr(pretrained, "list_pretrained", lambda: ["sinet-acac"])
    assert pretrained.default_potential() == "sinet-acac"


def test_md_without_a_structure_needs_a_card_that_names_one(capsys, monkeypatch):
    from sinet_ase import pretrained

    monkeypatch.setattr(pretrained, "potential_card", lambda name: {})
    assert md_main(["--steps", "1", "--no-progress"]) == 2
    assert "give a structure" in capsys.readouterr().err
    seen = {}

    def fake_run(atoms, args):
        seen["symbols"] = atoms.get_chemical_formula()
        return "ok"

    monkeypatch.setattr(pretrained, "potential_card", lambda name: {"start_structure": "ethanol"})
    monkeypatch.setattr(md_module, "run_md", fake_run)
    assert md_main(["--steps", "1", "--no-progress"]) == 0
    assert seen["symbols"] == "C2H6O"
