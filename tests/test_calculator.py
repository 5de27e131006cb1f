"""SINetCalculator: ASE integration, caching, units, dtype, model files, bad input."""

import pickle

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE

from sinet_ase import (
    ModelFileError,
    SINet,
    SINetCalculator,
    SINetInputError,
    UnknownElementError,
    list_pretrained,
    load_model,
    save_model,
)
from sinet_ase.graph import atoms_to_graph
from sinet_ase.io import FORMAT_VERSION, model_to_dict
from sinet_ase.testing import small_sinet


def make_model(elements=("H", "C", "O"), cutoff=4.0, seed=0, **kw):
    return small_sinet(elements, torch.float32, cutoff=cutoff, seed=seed, **kw)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    save_model(make_model(), path)
    return path


def count_model_calls(calc):
    calls = []
    calc.model.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_properties_and_units(dtype):
    atoms = molecule("CH3CH2OH")
    atoms.calc = SINetCalculator(make_model(), dtype=str(dtype).replace("torch.", ""))
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    assert atoms.get_potential_energies().shape == (9,)
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, rel=1e-6)
    assert atoms.get_forces().shape == (9, 3) and atoms.get_forces().dtype == np.float64
    assert atoms.calc.get_property("free_energy") == energy
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_stress_for_periodic_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = SINetCalculator(make_model(["Cu"]))
    assert atoms.get_stress().shape == (6,)


def test_float32_option_leaves_default_dtype_alone():
    before = torch.get_default_dtype()
    atoms = molecule("CH3CH2OH")
    m = make_model()
    atoms.calc = SINetCalculator(m, dtype="float32")
    atoms.get_forces()
    assert torch.get_default_dtype() == before
    assert atoms.calc.model.dtype == torch.float32
    assert next(m.parameters()).requires_grad, "the caller's model must not be modified"
    with pytest.raises(ValueError, match="float32"):
        SINetCalculator(m, dtype="half")


def test_results_recomputed_only_when_the_structure_changes():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = SINetCalculator(make_model(["Cu", "Ag"]))
    calls = count_model_calls(atoms.calc)
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energy()
    assert len(calls) == 1
    atoms.get_stress()  # stress not yet computed: one more call
    assert len(calls) == 2
    atoms.get_forces()
    assert len(calls) == 2
    changes = [
        lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 0.01),
        lambda a: a.set_cell(a.cell * 1.01, scale_atoms=False),
        lambda a: a.set_pbc([True, True, False]),
        lambda a: a.numbers.__setitem__(0, 47),
    ]
    for k, change in enumerate(changes):
        change(atoms)
        atoms.get_forces()
        assert len(calls) == 3 + k


@pytest.mark.parametrize("committee", [False, True], ids=["single", "committee"])
def test_compute_stress_comes_with_the_forces_of_a_bulk_cell(committee):
    """``compute_stress=True``: one ``get_forces`` on a periodic cell also computes the stress,
    which ``get_stress`` then reads without a second model call, equal to the stress a
    calculator without the option computes when asked; off: no stress until asked for; a
    molecule gets forces and no stress (and no error)."""
    model = [make_model(["Cu"]), make_model(["Cu"], seed=1)] if committee else make_model(["Cu"])
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(scale=0.02, size=(3, 3))), scale_atoms=True)
    atoms.calc = SINetCalculator(model, compute_stress=True)
    calls = count_model_calls(atoms.calc)
    atoms.get_forces()
    assert len(calls) == 1 and "stress" in atoms.calc.results
    assert ("stress_std" in atoms.calc.results) == committee
    in_results = atoms.calc.results["stress"].copy()
    stress = atoms.get_stress()
    assert len(calls) == 1  # served from the results of the force call
    np.testing.assert_array_equal(stress, in_results)

    reference = atoms.copy()
    reference.calc = SINetCalculator(model)  # off (the default)
    reference_calls = count_model_calls(reference.calc)
    np.testing.assert_array_equal(reference.get_forces(), atoms.get_forces())
    assert "stress" not in reference.calc.results
    assert np.abs(stress).max() > 1e-4  # a strained, rattled cell: a stress worth comparing
    np.testing.assert_allclose(reference.get_stress(), stress, rtol=1e-12, atol=1e-15)
    assert len(reference_calls) == 2  # without the option the stress costs a second call

    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.4]])
    dimer.calc = SINetCalculator(model, compute_stress=True)
    assert dimer.get_forces().shape == (2, 3) and "stress" not in dimer.calc.results
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        dimer.get_stress()
    with pytest.raises(TypeError, match="compute_stress must be True or False"):
        SINetCalculator(model, compute_stress="yes")


def test_nve_energy_conserved():
    atoms = molecule("CH3CH2OH")
    atoms.calc = SINetCalculator(make_model(), compile=False)  # 500 steps: "auto" would compile
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dyn.run(500)
    energies = np.array(energies)
    assert np.ptp(atoms.get_potential_energies()) > 0  # a non-trivial surface
    assert abs(energies[-1] - energies[0]) < 1e-4
    assert np.ptp(energies) < 1e-3


def test_works_with_ase_optimisers_and_langevin():
    mol = molecule("CH3CH2OH")
    mol.calc = SINetCalculator(make_model())
    for optimiser in (BFGS, FIRE):
        mol.positions += 0.02
        e0 = mol.get_potential_energy()
        optimiser(mol, logfile=None).run(fmax=0.05, steps=30)
        assert mol.get_potential_energy() <= e0 + 1e-9
    Langevin(mol, 0.5 * units.fs, temperature_K=300, friction=0.01, rng=np.random.default_rng(0)).run(10)
    assert np.all(np.isfinite(mol.positions))

    crystal = bulk("Cu", "fcc", a=3.7, cubic=True)
    crystal.calc = SINetCalculator(make_model(["Cu"]))
    e0 = crystal.get_potential_energy()
    BFGS(FrechetCellFilter(crystal), logfile=None).run(fmax=0.05, steps=20)
    assert crystal.get_potential_energy() <= e0 + 1e-9


def test_copper_md_with_random_weights():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.calc = SINetCalculator(SINet(elements=["Cu"], cutoff=4.0))
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(3)
    assert np.all(np.isfinite(atoms.get_forces()))


def test_save_load_same_energies(tmp_path):
    model = make_model(atomic_energies={"H": -13.6, "C": -1029.5, "O": -2041.3})
    path = tmp_path / "sub" / "m.pt"
    save_model(model, path, metadata={"note": "test"})
    loaded = load_model(path)
    assert loaded.metadata == {"note": "test"}
    atoms = molecule("CH3CH2OH")
    e = [SINetCalculator(m).get_potential_energy(atoms) for m in (model, loaded, path)]
    assert e[0] == e[1] == e[2]
    # loads with weights_only=True: no code in the file
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION and payload["elements"] == ["H", "C", "O"]
    assert not list(tmp_path.glob("sub/.*tmp")), "no temporary files left behind"


def test_bad_model_files(tmp_path, model_file):
    newer = model_to_dict(make_model())
    newer["format_version"] = FORMAT_VERSION + 1
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ModelFileError, match="newer"):
        SINetCalculator(tmp_path / "newer.pt")

    data = model_file.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a readable"):
        SINetCalculator(tmp_path / "truncated.pt")

    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "text.pt")

    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not a sinet-ase model"):
        load_model(tmp_path / "foreign.pt")

    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran while loading!",))


def test_model_file_with_code_is_refused(tmp_path, capsys):
    payload = model_to_dict(make_model())
    payload["metadata"] = {"evil": _Exploit()}
    with open(tmp_path / "evil.pt", "wb") as handle:
        torch.save(payload, handle, pickle_module=pickle)
    with pytest.raises(ModelFileError, match="safe load refuses"):
        load_model(tmp_path / "evil.pt")
    assert "code ran" not in capsys.readouterr().out


def test_bad_input_errors():
    calc = SINetCalculator(make_model())
    with pytest.raises(UnknownElementError, match=r"Cu unknown.*H, C, O"):
        calc.get_potential_energy(Atoms("HCu", positions=[[0, 0, 0], [1.5, 0, 0]]))
    with pytest.raises(SINetInputError, match="NaN"):
        calc.get_potential_energy(Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(SINetInputError, match="empty"):
        calc.get_potential_energy(Atoms())
    with pytest.raises(SINetInputError, match="apart"):
        calc.get_potential_energy(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0]]))
    with pytest.raises(TypeError, match="path or a torch.nn.Module"):
        SINetCalculator(42)


def test_pretrained_registry_errors_clearly():
    with pytest.raises(KeyError, match="no shipped potential named 'nope'"):
        SINetCalculator.from_pretrained("nope")
    assert isinstance(list_pretrained(), list)


@pytest.mark.parametrize("backbone", ["sinet", "siformer"])
def test_edge_chunks_give_the_same_energy_forces_and_stress(backbone):
    """``edge_chunk_size`` (layers run one chunk of receiving atoms at a time, with their halo)
    changes memory, not results: float64 energies, per-atom energies, forces and stress agree
    with the whole-graph pass to 1e-10, for chunks of one receiver up to more than the graph."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=1)
    atoms.symbols[[3, 9]] = "O"  # two species, so the embedding's species sums are checked
    model = make_model(["Cu", "O"], backbone=backbone, num_heads=2)
    whole = SINetCalculator(model, edge_chunk_size=None)

    def properties(calc):
        return {
            "energy": calc.get_potential_energy(atoms),
            "energies": calc.get_potential_energies(atoms),
            "forces": calc.get_forces(atoms),
            "stress": calc.get_stress(atoms),
        }

    ref = properties(whole)
    num_edges = atoms_to_graph(atoms, model.cutoff).edge_index.shape[1]
    for chunk in (1, 97, num_edges + 1):  # 1: a receiver per chunk; 97: not a divisor of the edge count
        chunked = SINetCalculator(model, edge_chunk_size=chunk)
        out = properties(chunked)
        assert out["energy"] == pytest.approx(ref["energy"], rel=1e-12, abs=1e-10)
        for key in ("energies", "forces", "stress"):
            np.testing.assert_allclose(out[key], ref[key], rtol=0, atol=1e-10)
        assert chunked.model.backbone.edge_chunk_size == chunk
    assert float(np.abs(ref["forces"]).max()) > 1e-4  # the comparison has something to compare
    assert model.backbone.edge_chunk_size is None  # the caller's model is untouched
    with pytest.raises(ValueError, match="positive"):
        SINetCalculator(model, edge_chunk_size=0)
    with pytest.raises(ValueError, match="'auto'"):
        SINetCalculator(model, edge_chunk_size="big")


def test_receiver_chunks_cover_every_atom_once_with_their_halo():
    """Each atom receives in exactly one chunk; a chunk's local edges are exactly the edges into
    its receivers, and its nodes are those receivers plus the senders of those edges."""
    from sinet_ase.ops.chunking import ReceiverChunks

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    graph = atoms_to_graph(atoms, 4.0)
    chunks = ReceiverChunks.build(graph.edge_index, len(atoms), 50, graph.pos)
    receivers = torch.cat([c.receivers for c in chunks.chunks])
    assert sorted(receivers.tolist()) == list(range(len(atoms)))
    ordered = graph.edge_index[:, chunks.edge_order]
    for c in chunks.chunks:
        edges = ordered[:, c.start : c.stop]
        assert set(edges[0].tolist()) <= set(c.receivers.tolist())
        assert torch.equal(c.nodes[c.edge_index], edges)  # local numbers map back to the atoms
        assert set(c.nodes.tolist()) == set(c.receivers.tolist()) | set(edges[1].tolist())
        assert c.stop - c.start <= 50 + int(torch.bincount(graph.edge_index[0]).max())
    assert len(chunks) > 5


def test_automatic_chunks_and_the_early_memory_error():
    """The default ``edge_chunk_size="auto"`` runs a graph whole while that needs less than
    2 GiB and in chunks above; a structure whose estimated memory exceeds ``memory_limit_gib``
    is refused before the call, with the estimate and what to change."""
    from sinet_ase.memory import (
        AUTO_CHUNK_FROM_BYTES,
        InsufficientMemoryError,
        auto_chunk_from,
        auto_chunk_size,
        estimate_call_bytes,
    )

    model = make_model(["Cu"])
    calc = SINetCalculator(model)
    backbone = calc.model.backbone
    chunk, start = auto_chunk_size(calc.model), auto_chunk_from(calc.model)
    assert backbone.edge_chunk_size == chunk >= 256 and backbone.edge_chunk_from == start > chunk
    assert backbone.chunk_size_for(start) is None and backbone.chunk_size_for(start + 1) == chunk
    whole_at_start = estimate_call_bytes(calc.model, 0, start, None)
    assert 0.9 * AUTO_CHUNK_FROM_BYTES < whole_at_start <= AUTO_CHUNK_FROM_BYTES
    assert SINetCalculator(model, edge_chunk_size=None).model.backbone.chunk_size_for(10**9) is None
    assert SINetCalculator(model, edge_chunk_size=50).model.backbone.chunk_size_for(51) == 50

    big = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(4)
    num_edges = atoms_to_graph(big, model.cutoff).edge_index.shape[1]
    whole = estimate_call_bytes(calc.model, len(big), num_edges, None)
    assert estimate_call_bytes(calc.model, len(big), num_edges, 100) < whole
    tight = SINetCalculator(model, edge_chunk_size=None, memory_limit_gib=whole / 2**30 / 2)
    with pytest.raises(InsufficientMemoryError, match=r"256 atoms.*needs about.*edge_chunk_size='auto'"):
        tight.get_potential_energy(big)
    with pytest.raises(MemoryError):  # also a MemoryError (and a SINetInputError, a ValueError)
        tight.get_potential_energy(big)
    roomy = SINetCalculator(model, edge_chunk_size=None, memory_limit_gib=2 * whole / 2**30)
    assert np.isfinite(roomy.get_potential_energy(big))
    with pytest.raises(ValueError, match="memory_limit_gib"):
        SINetCalculator(model, memory_limit_gib=0)
    # a degenerate periodic cell (two nearly parallel vectors): 200 atoms would have about 2e8
    # pairs; refused from the density, before the neighbour list (gigabytes) is built
    degenerate = Atoms(
        "Cu200",
        scaled_positions=np.random.default_rng(0).random((200, 3)),
        cell=[[3.0, 0, 0], [3.0, 0.01, 0], [0, 0, 3.0]],
        pbc=True,
    )
    with pytest.raises(
        InsufficientMemoryError,
        match=r"200 atoms, about [\d,]+ pairs within the cutoff "
        r"for its density",
    ):
        SINetCalculator(model, memory_limit_gib=4).get_potential_energy(degenerate)


def test_automatic_chunks_start_where_a_whole_pass_would_take_half_the_memory_available(monkeypatch):
    """Memory that is there is used: before each call the calculator moves the edge count
    from which ``"auto"`` chunks apply to half the memory available, never below 2 GiB."""
    from sinet_ase import memory
    from sinet_ase.memory import WHOLE_GRAPH_SHARE, auto_chunk_from, estimate_call_bytes

    model = make_model(["Cu"])
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    calc = SINetCalculator(model)
    backbone = calc.model.backbone
    floor = auto_chunk_from(calc.model)
    for available, expected in [(64 * 2**30, "more"), (2**30, "floor"), (None, "floor")]:
        monkeypatch.setattr(memory, "available_bytes", lambda device="cpu", value=available: value)
        atoms.positions[0, 0] += 0.01
        calc.get_forces(atoms)
        if expected == "floor":
            assert backbone.edge_chunk_from == floor
        else:
            start = backbone.edge_chunk_from
            assert start == auto_chunk_from(calc.model, available) > 10 * floor
            whole = estimate_call_bytes(calc.model, 0, start, None)
            assert 0.9 * WHOLE_GRAPH_SHARE * available < whole <= WHOLE_GRAPH_SHARE * available
            assert backbone.chunk_size_for(start) is None and backbone.chunk_size_for(start + 1) is not None
    # a fixed edge_chunk_size stays fixed
    fixed = SINetCalculator(model, edge_chunk_size=50)
    fixed.get_forces(atoms)
    assert fixed.model.backbone.chunk_size_for(51) == 50


@pytest.mark.slow
def test_compiled_network_gives_the_eager_energy_forces_and_stress():
    """``compile=True`` (torch.compile, inductor) changes speed, not results; training stays eager."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    torch.manual_seed(0)
    # one layer: compiling takes tens of seconds, growing with the graph
    model = SINet(
        ["Cu"], cutoff=4.0, lmax=2, channels=8, num_layers=1, mlp_hidden=16, radial_hidden=16, avg_num_neighbors=6.0
    )
    eager, compiled = SINetCalculator(model), SINetCalculator(model, compile=True)
    assert compiled.model._compiled_network is not None and model._compiled_network is None
    ref = {
        "energy": eager.get_potential_energy(atoms),
        "forces": eager.get_forces(atoms),
        "stress": eager.get_stress(atoms),
    }
    out = {
        "energy": compiled.get_potential_energy(atoms),
        "forces": compiled.get_forces(atoms),
        "stress": compiled.get_stress(atoms),
    }
    assert out["energy"] == pytest.approx(ref["energy"], rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out["stress"], ref["stress"], rtol=1e-9, atol=1e-11)
    # another atom and edge count, as in MD: recompiled once with dynamic shapes, same numbers
    other = atoms.copy()
    del other[3]
    np.testing.assert_allclose(compiled.get_forces(other), eager.get_forces(other), rtol=1e-9, atol=1e-11)
    assert compiled.get_potential_energy(other) == pytest.approx(
        eager.get_potential_energy(other), rel=1e-12, abs=1e-10
    )
    # training needs the double backward that compiled graphs lack: the same model, eager
    from sinet_ase.graph import atoms_to_graph

    graph = atoms_to_graph(atoms, model.cutoff)
    forces = compiled.model(graph, training=True)["forces"]
    assert forces.requires_grad
    np.testing.assert_allclose(forces.detach().numpy(), ref["forces"], rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="do not combine"):
        SINetCalculator(model, compile=True, edge_chunk_size=100)
