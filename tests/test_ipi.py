"""i-PI client (sinet-ipi): 20 steps of i-PI NVE against the calculator, virial, bad input.

The i-PI tests start the ``i-pi`` server (``pip install 'sinet-ase[ipi]'``) and the
``sinet-ipi`` client as subprocesses; they are skipped without the ipi package."""

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.io import read

from sinet_ase import SINet, SINetCalculator, save_model
from sinet_ase.cli import ipi_main
from sinet_ase.integrations.ipi import _check_atom_count, connect, unix_socket_path

STEPS = 20
CLIENT = [sys.executable, "-m", "sinet_ase.integrations.ipi"]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ipi"


def input_xml(address, pbc):
    """The example's input.xml with a socket of its own, STEPS steps and the given pbc."""
    text = (EXAMPLE / "input.xml").read_text()
    for old, new in (
        ("<address>sinet</address>", f"<address>{address}</address>"),
        ("<total_steps>200</total_steps>", f"<total_steps>{STEPS}</total_steps>"),
        ("pbc='false'", f"pbc='{str(pbc).lower()}'"),
    ):
        assert old in text, f"examples/ipi/input.xml no longer holds {old}"
        text = text.replace(old, new)
    return text


#: columns of the example's sim.out
STEP, POTENTIAL, CONSERVED, VIRIAL = 0, 2, 3, slice(5, 11)


def ipi_server():
    pytest.importorskip("ipi")
    found = Path(sys.executable).with_name("i-pi")
    command = str(found) if found.exists() else shutil.which("i-pi")
    if command is None:
        pytest.skip("the i-pi command is not on PATH")
    return command


def ipi_ev_per_ase_ev():
    """An energy in eV as ASE's client sends it (in hartree, ASE's constant), read back in eV
    with i-PI's constant: ``E_ipi = E / this``."""
    import ase.units
    from ipi.utils.units import unit_to_internal

    return unit_to_internal("energy", "electronvolt", 1.0) * ase.units.Ha


def write_ipi_xyz(path, atoms, cellpar):
    """i-PI's xyz: the cell as a, b, c, alpha, beta, gamma in the comment line."""
    lines = [
        str(len(atoms)),
        "# CELL(abcABC): " + " ".join(f"{x:.10f}" for x in cellpar) + " positions{angstrom} cell{angstrom}",
    ]
    lines += [f"{s} {x:.10f} {y:.10f} {z:.10f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)]
    Path(path).write_text("\n".join(lines) + "\n")


def run_ipi(tmp_path, model, pbc, client_structure="init.xyz"):
    """i-PI NVE for STEPS steps from tmp_path/init.xyz with the sinet-ipi client; returns
    (properties, frames)."""
    server = ipi_server()
    address = f"sinet_test_{uuid.uuid4().hex[:12]}"
    (tmp_path / "input.xml").write_text(input_xml(address, pbc))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(tmp_path / "server.log", "w") as log:
        ipi = subprocess.Popen([server, "input.xml"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
        client = subprocess.Popen(
            CLIENT + [str(model), client_structure, "--unix", address, "--wait", "60"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + 300
            while client.poll() is None and time.monotonic() < deadline:
                if ipi.poll() not in (None, 0):  # i-PI failed: do not wait for the client
                    break
                time.sleep(0.2)
            if client.poll() is None:
                client.kill()
            stdout, stderr = client.communicate(timeout=60)
            if client.returncode != 0 and ipi.poll() is None:
                ipi.kill()  # a failed client leaves i-PI waiting for ever
            ipi.wait(timeout=60)
        finally:
            for process in (client, ipi):
                if process.poll() is None:
                    process.kill()
            Path(unix_socket_path(address)).unlink(missing_ok=True)  # left by a crashed i-PI
    assert ipi.returncode == 0 and client.returncode == 0, (
        f"client:\n{stderr[-2000:]}\ni-PI:\n{(tmp_path / 'server.log').read_text()[-2000:]}"
    )
    assert f"after {STEPS + 1} force evaluations" in stdout
    properties = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    frames = read(tmp_path / "sim.pos_0.extxyz", index=":")
    return properties, frames


@pytest.mark.slow
def test_ipi_nve_molecule_energies_match_the_calculator(tmp_path):
    # the example as its comment says to run it, for STEPS steps
    shutil.copy(EXAMPLE / "init.xyz", tmp_path / "init.xyz")
    properties, frames = run_ipi(tmp_path, "sinet-rmd17-ethanol", pbc=False)
    assert properties.shape[0] == STEPS + 1 and len(frames) == STEPS + 1
    np.testing.assert_array_equal(properties[:, STEP], np.arange(STEPS + 1))
    calc = SINetCalculator("sinet-rmd17-ethanol")
    reference = []
    for frame in frames:
        frame.pbc = False
        frame.calc = calc
        reference.append(frame.get_potential_energy())
    potential = properties[:, POTENTIAL]
    assert np.ptp(potential) > 0.01, "the molecule must move for the check to mean anything"
    # the client sends hartree with ASE's constant, i-PI prints eV with its own: they differ by
    # 1e-7, i.e. 4e-4 eV at 4,200 eV; i-PI prints 9 significant digits (1e-5 eV here)
    np.testing.assert_allclose(potential, np.array(reference) / ipi_ev_per_ase_ev(), rtol=0, atol=5e-5)
    # forces in the right units: NVE conserves i-PI's energy far better than the potential moves
    conserved = properties[:, CONSERVED]
    assert np.ptp(conserved) < 0.05 * np.ptp(potential)
    np.testing.assert_array_equal(properties[:, VIRIAL], 0.0)  # molecule: zero virial


@pytest.mark.slow
def test_ipi_periodic_virial_matches_the_stress(tmp_path):
    torch.manual_seed(0)
    model = SINet(
        elements=["Cu"],
        cutoff=4.0,
        lmax=1,
        channels=8,
        num_layers=1,
        mlp_hidden=16,
        radial_hidden=16,
        avg_num_neighbors=12.0,
    )
    save_model(model, tmp_path / "cu.pt")
    crystal = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))  # triclinic cell (primitive fcc)
    cellpar = crystal.cell.cellpar()
    # i-PI builds its cell from the six parameters: a along x, b in the xy plane
    crystal.set_cell(crystal.cell.fromcellpar(cellpar), scale_atoms=True)
    write_ipi_xyz(tmp_path / "init.xyz", crystal, cellpar)
    crystal.write(tmp_path / "client.extxyz")  # i-PI's xyz has no pbc: the client needs one
    properties, frames = run_ipi(tmp_path, tmp_path / "cu.pt", pbc=True, client_structure="client.extxyz")
    calc = SINetCalculator(tmp_path / "cu.pt")
    for k, frame in enumerate(frames):
        frame.set_cell(crystal.cell)
        frame.pbc = True
        frame.calc = calc
        assert properties[k, POTENTIAL] == pytest.approx(
            frame.get_potential_energy() / ipi_ev_per_ase_ev(), rel=1e-8, abs=1e-6
        )
        stress = frame.get_stress()  # ASE: xx, yy, zz, yz, xz, xy; i-PI: xx, yy, zz, xy, xz, yz
        np.testing.assert_allclose(properties[k, VIRIAL], -stress[[0, 1, 2, 5, 4, 3]], rtol=1e-6, atol=1e-8)
    assert np.abs(properties[:, VIRIAL]).max() > 1e-3


def test_no_server_is_a_clear_error(capsys):
    name = f"sinet_nobody_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConnectionError, match=f"/tmp/ipi_{name}"):
        connect(unixsocket=name, wait=0.3)
    with pytest.raises(ValueError, match="either"):
        connect(wait=0)
    assert ipi_main(["sinet-rmd17-ethanol", "ethanol", "--unix", name, "--wait", "0.2"]) == 2
    assert "no i-PI server answered" in capsys.readouterr().err


def test_structure_with_another_atom_count_is_a_clear_error():
    class Protocol:
        def recvposdata(self):
            return np.eye(3), np.eye(3), np.zeros((5, 3))

    class Client:
        protocol = Protocol()

    atoms = molecule("CH3CH2OH")
    client = Client()
    _check_atom_count(client, atoms)
    with pytest.raises(ValueError, match="i-PI sent 5 atoms, the client's structure has 9"):
        client.protocol.recvposdata()
