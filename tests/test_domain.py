"""Domain of validity: training-data statistics in the exported model, and the calculator's
check of each structure against them."""

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import write
from test_resume import raw_config

from sinet_ase import OutOfDomainError, SINet, SINetCalculator, SINetInputError, load_model
from sinet_ase.domain import DomainCheck, OutOfDomainWarning, domain_problems, training_domain
from sinet_ase.graph import atoms_to_graph
from sinet_ase.train import Trainer
from sinet_ase.train.config import TrainConfig
from sinet_ase.testing import emt_frames


def water_model(domain=None, zbl=False):
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
        zbl=zbl,
    )
    model.metadata = {"training_domain": domain} if domain else {}
    return model


def test_training_domain_holds_the_shortest_distance_per_pair_and_the_energy_range():
    frames = emt_frames("H2O", 5, 0)
    graphs = [atoms_to_graph(a, 3.0, ["H", "O"], with_labels=True) for a in frames]
    domain = training_domain(graphs, {"H": -1.0, "O": -2.0})
    hh = min(a.get_distance(1, 2) for a in frames)
    oh = min(min(a.get_distance(0, 1), a.get_distance(0, 2)) for a in frames)
    assert domain["min_distance"] == {"H-H": pytest.approx(hh, abs=1e-4), "H-O": pytest.approx(oh, abs=1e-4)}
    assert domain["max_neighbours"] == 2
    per_atom = [(a.get_potential_energy() + 4.0) / 3 for a in frames]
    assert domain["energy_per_atom"] == pytest.approx([min(per_atom), max(per_atom)])
    assert domain_problems(graphs[0], domain, frames[0].get_potential_energy()) == []


def test_the_calculator_warns_once_about_atoms_much_closer_than_in_training():
    domain = {"min_distance": {"H-H": 1.4, "H-O": 0.9}, "max_neighbours": 2}
    calc = SINetCalculator(water_model(domain))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calc.get_potential_energy(molecule("H2O"))  # inside: no warning
    squeezed = molecule("H2O")
    squeezed.positions[1] = squeezed.positions[0] + [0.6, 0.0, 0.0]  # outside, not far outside
    with pytest.warns(
        OutOfDomainWarning,
        match=r"atoms 0 and 1 \(H-O\) are 0.600 Å apart.*shortest "
        r"H-O distance in the training data \(0.900 Å\)",
    ):
        calc.get_potential_energy(squeezed)
    squeezed.positions[1, 0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calc.get_potential_energy(squeezed)  # reported once per calculator

    strict = SINetCalculator(water_model(domain), out_of_domain="raise")
    with pytest.raises(SINetInputError, match="outside the potential's training data"):
        strict.get_potential_energy(squeezed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SINetCalculator(water_model(domain), out_of_domain="ignore").get_potential_energy(squeezed)
    with pytest.raises(ValueError, match="out_of_domain must be"):
        SINetCalculator(water_model(domain), out_of_domain="sometimes")


def test_far_outside_the_domain_is_an_error_by_default_every_time():
    """Atoms closer than half the shortest training distance of their pair: the default
    ``out_of_domain="warn"`` refuses the structure (no number), on every call, not only the
    first; ``"ignore"`` returns the number; a model with ZBL repulsion only warns."""
    domain = {"min_distance": {"H-H": 1.4, "H-O": 0.9}, "max_neighbours": 2}
    squeezed = molecule("H2O")
    squeezed.positions[1] = squeezed.positions[0] + [0.3, 0.0, 0.0]
    calc = SINetCalculator(water_model(domain))
    for shift in (0.0, 0.01):
        squeezed.positions[1, 0] += shift
        with pytest.raises(
            OutOfDomainError,
            match=r"far outside the potential's training data: atoms 0 "
            r"and 1 \(H-O\) are 0.3[01]0 Å apart, less than 0.5 times the shortest H-O "
            r"distance in the training data \(0.900 Å\).*arbitrary \(it gave E = .* eV, "
            r"not returned\).*out_of_domain='ignore'",
        ):
            calc.get_potential_energy(squeezed)
        assert "energy" not in calc.results
    assert isinstance(OutOfDomainError("x"), SINetInputError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(SINetCalculator(water_model(domain), out_of_domain="ignore").get_potential_energy(squeezed))
    with pytest.warns(OutOfDomainWarning, match=r"\(H-O\) are 0.310 Å apart, much closer"):
        SINetCalculator(water_model(domain, zbl=True)).get_potential_energy(squeezed)


def test_the_severity_of_neighbour_counts_and_energies():
    """Outside: over 2x the most neighbours or an energy over one margin beyond the training
    range; far outside: over 8x, or 10 margins (margin: the range, at least 1 eV/atom)."""
    domain = {
        "min_distance": {"H-H": 0.7},
        "max_neighbours": 3,
        "energy_per_atom": [100.0, 100.5],
        "atomic_energies": {},
    }
    check = DomainCheck(domain)
    crowded = Atoms("H", positions=[[0, 0, 0]], cell=[1.0, 1.0, 1.0], pbc=True)  # 92 neighbours
    outside, far = check(atoms_to_graph(crowded, 3.0, ["H", "O"]))
    assert outside == [] and far == [
        "an atom has 92 neighbours within the cutoff, the training data "
        "at most 3 (a too-small or degenerate periodic cell?)"
    ]
    roomy = Atoms("H", positions=[[0, 0, 0]], cell=[2.0, 2.0, 2.0], pbc=True)  # 18 neighbours: > 6, < 24
    graph = atoms_to_graph(roomy, 3.0, ["H", "O"])
    assert len(check(graph)[0]) == 1 and check(graph)[1] == []
    lone = Atoms("H", positions=[[0, 0, 0]])
    graph = atoms_to_graph(lone, 3.0, ["H", "O"])
    for energy, levels in (
        (100.2, (0, 0)),
        (101.6, (1, 0)),
        (98.9, (1, 0)),
        (111.0, (0, 1)),
        (89.0, (0, 1)),
        (-1.7e14, (0, 1)),
    ):
        outside, far = check(graph, energy)
        assert (len(outside), len(far)) == levels, energy
    outside, far = DomainCheck(domain, repulsive=True)(graph, 111.0)  # ZBL: high energies are physical
    assert len(outside) == 1 and far == []


def test_a_tiny_periodic_cell_and_an_absurd_energy_are_out_of_domain():
    domain = {
        "min_distance": {"H-H": 0.7},
        "max_neighbours": 3,
        "energy_per_atom": [100.0, 100.5],
        "atomic_energies": {},
    }
    crowded = Atoms("H", positions=[[0, 0, 0]], cell=[1.0, 1.0, 1.0], pbc=True)
    problems = domain_problems(atoms_to_graph(crowded, 3.0, ["H", "O"]), domain, energy=-1.7e14)
    assert any("an atom has 92 neighbours within the cutoff, the training data at most 3" in p for p in problems)
    assert any("-1.7e+14 eV/atom above the atomic references" in p for p in problems)


def test_training_exports_the_domain_in_the_model_file(tmp_path):
    data = tmp_path / "water.extxyz"
    write(data, emt_frames("H2O", 12, 0))
    Trainer(TrainConfig.from_dict(raw_config(data, tmp_path / "run", epochs=1)), quiet=True).run()
    domain = load_model(tmp_path / "run" / "best_model.pt").metadata["training_domain"]
    assert set(domain["min_distance"]) == {"H-H", "H-O"} and domain["max_neighbours"] == 2
    lo, hi = domain["energy_per_atom"]
    assert lo <= hi and set(domain["atomic_energies"]) == {"H", "O"}
    assert np.isfinite([lo, hi]).all()


def test_sinet_md_stops_with_exit_code_3_when_the_run_goes_far_outside(tmp_path, capsys, monkeypatch):
    """An MD step that reaches a structure far outside the domain (here: the calculator's
    check made to fail at the 6th call) stops sinet-md like an instability: exit code 3, a
    one-line message with the step, and the frames written so far read back."""
    from ase.io import read

    from sinet_ase.calculator import SINetCalculator as Calculator
    from sinet_ase.cli import md_main

    calls = []
    real = Calculator._check_domain

    def check(self, graph, energy):
        calls.append(1)
        if len(calls) >= 6:
            raise OutOfDomainError("structure far outside the potential's training data: (a test)")
        return real(self, graph, energy)

    monkeypatch.setattr(Calculator, "_check_domain", check)
    traj = tmp_path / "md.extxyz"
    code = md_main(
        ["ethanol", "--steps", "20", "--interval", "2", "--trajectory", str(traj), "--no-progress", "--compile", "off"]
    )
    err = capsys.readouterr().err
    assert code == 3, err
    assert "the MD became unstable at step" in err and "far outside the potential's training data" in err
    assert str(traj) in err and err.count("\n") == 1
    assert len(read(traj, index=":")) >= 2


def test_the_check_reads_float32_and_gradient_graphs_and_each_composition_has_its_reference():
    """A graph in float32 with positions that need gradients reads as its float64 twin; the
    per-composition reference energy is not reused for another composition."""
    domain = {
        "min_distance": {"H-H": 0.7},
        "max_neighbours": 30,
        "energy_per_atom": [0.0, 0.5],
        "atomic_energies": {"H": 10.0},
    }
    check = DomainCheck(domain)
    h2 = atoms_to_graph(Atoms("H2", positions=[[0, 0, 0], [0.45, 0, 0]]), 3.0, ["H", "O"])
    expected = check(h2, 20.2)  # (20.2 - 2 x 10) / 2 = 0.1 eV/atom: inside; 0.45 Å: closer than 0.75 x 0.7
    assert len(expected[0]) == 1 and "0.450 Å apart" in expected[0][0]
    h2.pos = h2.pos.float().requires_grad_(True)
    h2.shifts, h2.cell = h2.shifts.float(), h2.cell.float()
    assert check(h2, 20.2) == expected
    h3 = atoms_to_graph(Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0]]), 3.0, ["H", "O"])
    assert check(h3, 30.3) == ([], [])  # reference 30 eV, not the 20 eV of H2
    assert len(check(h3, 35.0)[0]) == 1  # 1.67 eV/atom: over one margin (1 eV) above the range
