"""A SINetCalculator shared by threads returns each thread its own structure's results."""

import copy
import threading

import numpy as np
import torch
from ase.build import molecule

from sinet_ase import SINet, SINetCalculator


def test_threads_sharing_a_calculator_get_their_own_results():
    torch.manual_seed(0)
    model = SINet(
        elements=["H", "C", "O"],
        cutoff=4.0,
        lmax=1,
        channels=4,
        num_layers=1,
        mlp_hidden=8,
        radial_hidden=8,
        avg_num_neighbors=4.0,
    )
    calc = SINetCalculator(model)
    structures = [molecule("CH3CH2OH"), molecule("H2O")]
    expected = []
    for atoms in structures:
        expected.append(calc.get_potential_energy(atoms))
    assert expected[0] != expected[1]
    wrong, errors = [], []

    def work(k):
        rng = np.random.default_rng(k)
        atoms = structures[k].copy()
        base = atoms.positions.copy()
        try:
            for _ in range(40):
                # a new structure each call, so the cache never answers
                atoms.positions = base + rng.normal(scale=1e-9, size=base.shape)
                energy = calc.get_potential_energy(atoms)
                if abs(energy - expected[k]) > 1e-5:
                    wrong.append((k, energy))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not wrong, f"{len(wrong)} results of another structure; {errors}"


def test_a_calculator_with_its_lock_can_still_be_copied():
    torch.manual_seed(0)
    model = SINet(
        elements=["H", "O"],
        cutoff=3.0,
        lmax=1,
        channels=4,
        num_layers=1,
        mlp_hidden=8,
        radial_hidden=8,
        avg_num_neighbors=2.0,
    )
    calc = SINetCalculator(model)
    twin = copy.deepcopy(calc)
    assert twin._lock is not calc._lock
    assert twin.get_potential_energy(molecule("H2O")) == calc.get_potential_energy(molecule("H2O"))
