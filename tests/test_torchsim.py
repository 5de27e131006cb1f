"""torch-sim adapter (sinet_ase.integrations.torchsim): batched states against the calculator.

Skipped without torch-sim (``pip install 'sinet-ase[torchsim]'``)."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.stress import voigt_6_to_full_3x3_stress

from sinet_ase import SINet, SINetCalculator, SINetInputError

ts = pytest.importorskip("torch_sim")
from sinet_ase.integrations.torchsim import SINetModel  # noqa: E402

ELEMENTS = ["H", "C", "O", "Si", "Fe", "Cu"]


@pytest.fixture(scope="module")
def sinet():
    torch.manual_seed(0)
    return SINet(
        elements=ELEMENTS,
        cutoff=4.0,
        lmax=2,
        channels=8,
        num_layers=2,
        mlp_hidden=16,
        radial_hidden=16,
        avg_num_neighbors=12.0,
    )


def crystals():
    """Three periodic structures of 2, 8 and 16 atoms: triclinic, rattled, two elements."""
    rng = np.random.default_rng(0)
    silicon = bulk("Si", "diamond", a=5.43)  # primitive (triclinic) cell
    mixed = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    mixed.symbols[[1, 6]] = "Fe"
    iron = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 2))
    for atoms in (silicon, mixed, iron):
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    mixed.set_cell(mixed.cell.array + [[0.0, 0.2, 0.1], [0.1, 0.0, -0.2], [0.0, 0.15, 0.0]], scale_atoms=True)
    return [silicon, mixed, iron]


def test_batched_state_matches_the_calculator(sinet):
    structures = crystals()
    model = SINetModel(sinet, device="cpu", per_atom_stresses=True)
    state = ts.io.atoms_to_state(structures, torch.device("cpu"), torch.float64)
    out = model(state)
    assert out["energy"].shape == (3,) and out["forces"].shape == (26, 3)
    assert out["stress"].shape == (3, 3, 3) and out["stresses"].shape == (26, 3, 3)
    assert all(v.dtype == torch.float64 and not v.requires_grad for v in out.values())
    calc = SINetCalculator(sinet)
    start = 0
    for g, atoms in enumerate(structures):
        atoms.calc = calc
        rows = slice(start, start + len(atoms))
        start += len(atoms)
        assert out["energy"][g].item() == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
        np.testing.assert_allclose(out["forces"][rows].numpy(), atoms.get_forces(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(out["stress"][g].numpy(), atoms.get_stress(voigt=False), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            out["stresses"][rows].numpy(), voigt_6_to_full_3x3_stress(atoms.get_stresses()), rtol=1e-9, atol=1e-13
        )


def test_torch_sim_validates_the_model(sinet):
    # torch-sim's own check: shapes, batch = one at a time, input not changed
    from torch_sim.models.interface import validate_model_outputs

    validate_model_outputs(SINetModel(sinet, device="cpu"), torch.device("cpu"), torch.float64)


def test_float32_and_molecules(sinet):
    structures = [molecule("CH3CH2OH"), molecule("H2O")]
    for atoms in structures:
        atoms.center(vacuum=5.0)
    state = ts.io.atoms_to_state(structures, torch.device("cpu"), torch.float32)
    with pytest.raises(SINetInputError, match="compute_stress=False"):
        SINetModel(sinet, device="cpu", dtype=torch.float32)(state)
    model = SINetModel(sinet, device="cpu", dtype=torch.float32, compute_stress=False)
    out = model(state)
    assert set(out) == {"energy", "forces"} and out["energy"].dtype == torch.float32
    calc = SINetCalculator(sinet, dtype="float32")
    for g, atoms in enumerate(structures):
        atoms.calc = calc
        assert out["energy"][g].item() == pytest.approx(atoms.get_potential_energy(), rel=1e-5)
    with pytest.raises(ValueError, match="dtype"):
        SINetModel(sinet, dtype=torch.float16)


def test_unknown_element_names_the_system(sinet):
    structures = [bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.05)]
    state = ts.io.atoms_to_state(structures, torch.device("cpu"), torch.float64)
    with pytest.raises(SINetInputError, match="system 1: element.*Al"):
        SINetModel(sinet, device="cpu")(state)


def test_nve_in_torch_sim_conserves_energy(sinet):
    # forces and units as torch-sim's integrator expects them: velocity Verlet conserves the
    # total energy far better than the potential energy moves
    from torch_sim.quantities import calc_kinetic_energy
    from torch_sim.units import MetalUnits

    model = SINetModel(sinet, device="cpu")
    state = ts.io.atoms_to_state(crystals()[1:], torch.device("cpu"), torch.float64)
    dt = torch.tensor(0.5e-3 * MetalUnits.time, dtype=torch.float64)  # 0.5 fs
    kT = torch.tensor(600 * MetalUnits.temperature, dtype=torch.float64)
    init, update = ts.nve(model=model, dt=dt, kT=kT, seed=1)
    state = init(state)
    potential, total = [], []
    for _ in range(20):
        state = update(state)
        kinetic = calc_kinetic_energy(masses=state.masses, momenta=state.momenta, system_idx=state.system_idx)
        potential.append(state.energy.clone())
        total.append(state.energy + kinetic)
    potential, total = torch.stack(potential), torch.stack(total)
    spread = potential.max(0).values - potential.min(0).values
    drift = total.max(0).values - total.min(0).values
    assert torch.all(spread > 1e-5) and torch.all(drift < 0.01 * spread), (spread, drift)
