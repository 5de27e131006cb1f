"""OpenMM through openmm-ml's ASE bridge (examples/openmm_md.py): energies, forces, NVE.

Skipped without OpenMM and openmm-ml (``pip install 'sinet-ase[openmm]'``)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from sinet_ase import SINet, SINetCalculator, save_model

pytest.importorskip("openmm")
pytest.importorskip("openmmml")
from openmm import unit  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "openmm_md.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("openmm_md", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sinet():
    torch.manual_seed(0)
    return SINet(
        elements=["H", "C", "O"],
        cutoff=4.0,
        lmax=2,
        channels=8,
        num_layers=2,
        mlp_hidden=16,
        radial_hidden=16,
        avg_num_neighbors=6.0,
    )


def test_openmm_energy_forces_and_nve_match_the_calculator(example, sinet):
    atoms = molecule("CH3CH2OH")
    calc = SINetCalculator(sinet)
    simulation = example.build_simulation(atoms, calc, timestep_fs=0.5, temperature=600.0)
    state = simulation.context.getState(getEnergy=True, getForces=True)
    reference = atoms.copy()
    reference.calc = calc
    kj_per_mol = example.EV_IN_KJ_PER_MOL
    potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kj_per_mol
    assert potential == pytest.approx(reference.get_potential_energy(), rel=1e-12, abs=1e-9)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
    np.testing.assert_allclose(forces / kj_per_mol, reference.get_forces(), rtol=1e-9, atol=1e-10)

    simulation.step(1)  # leapfrog: from here on the velocities are at half steps
    potentials, totals = [], []
    for _ in range(20):
        simulation.step(1)
        e_pot, e_tot = example.energies_ev(simulation)
        potentials.append(e_pot)
        totals.append(e_tot)
    assert np.ptp(potentials) > 1e-3
    assert np.ptp(totals) < 0.05 * np.ptp(potentials)
    # the positions OpenMM moved to are evaluated like any other structure
    moved = atoms.copy()
    moved.positions = (
        simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    )
    moved.calc = SINetCalculator(sinet)
    assert potentials[-1] == pytest.approx(moved.get_potential_energy(), rel=1e-12, abs=1e-9)


@pytest.mark.slow
def test_openmm_example_runs(sinet, tmp_path):
    save_model(sinet, tmp_path / "tiny.pt")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "tiny.pt"), "--steps", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "energy drift" in result.stdout and "step     20" in result.stdout
    openmm_energy, calculator_energy = [
        float(w) for w in result.stdout.split("\n")[0].split() if w.replace(".", "").replace("-", "").isdigit()
    ]
    assert openmm_energy == pytest.approx(calculator_energy, abs=2e-6)
