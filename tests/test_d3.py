"""D3 dispersion on top of SINet (sinet_ase.integrations.d3): sum, forces, stress.

Skipped without torch-dftd (``pip install 'sinet-ase[dftd]'``)."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from sinet_ase import SINet, SINetCalculator

pytest.importorskip("torch_dftd")
from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator  # noqa: E402

from sinet_ase.integrations.d3 import d3_calculator, with_d3  # noqa: E402

# torch-dftd builds a tensor from atoms.get_cell() (a Cell object): harmless, and not ours
pytestmark = pytest.mark.filterwarnings("ignore:Creating a tensor from a list of numpy")


def make_model(elements=("H", "C", "O")):
    torch.manual_seed(0)
    return SINet(
        elements=list(elements),
        cutoff=4.0,
        lmax=2,
        channels=8,
        num_layers=2,
        mlp_hidden=16,
        radial_hidden=16,
        avg_num_neighbors=6.0,
    )


def test_energy_is_sinet_plus_d3_and_forces_are_its_gradient():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    model = make_model()
    atoms.calc = with_d3(SINetCalculator(model), xc="pbe", damping="bj")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()

    sinet, d3 = atoms.copy(), atoms.copy()
    sinet.calc = SINetCalculator(model)
    d3.calc = TorchDFTD3Calculator(xc="pbe", damping="bj", dtype=torch.float64)
    e_d3 = d3.get_potential_energy()
    assert -1.0 < e_d3 < -0.01, "PBE-D3(BJ) binds ethanol by about 0.1 eV"
    assert energy == pytest.approx(sinet.get_potential_energy() + e_d3, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(forces, sinet.get_forces() + d3.get_forces(), rtol=1e-9, atol=1e-9)

    h, numeric = 1e-4, np.zeros_like(forces)
    for i in range(len(atoms)):
        for a in range(3):
            e = []
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.positions[i, a] += sign * h
                displaced.calc = atoms.calc
                e.append(displaced.get_potential_energy())
            numeric[i, a] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(forces, numeric, rtol=1e-5, atol=1e-6)


def test_periodic_stress_adds_up():
    atoms = bulk("C", "diamond", a=3.6)
    calc = with_d3(SINetCalculator(make_model()), cutoff=8.0, cnthr=6.0)
    atoms.calc = calc
    stress = atoms.get_stress()
    sinet_part, d3_part = calc.results["stress_contributions"]
    assert np.abs(d3_part).max() > 1e-5
    np.testing.assert_allclose(stress, sinet_part + d3_part, rtol=1e-12, atol=1e-15)


def test_dtype_and_bad_functional():
    calc = with_d3(SINetCalculator(make_model(), dtype="float32"))
    assert calc.mixer.calcs[1].dtype == torch.float32
    with pytest.raises(ValueError, match="xc=pbe0x"):
        d3_calculator(xc="pbe0x")
    with pytest.raises(ValueError, match="dtype"):
        d3_calculator(dtype="half")
