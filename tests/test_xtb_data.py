"""Fast checks on the committed GFN2-xTB rMD17-style dataset.

Data: training/data/xtb_md17/<molecule>.extxyz.xz, made by
training/make_xtb_md17.py (see training/data/xtb_md17/README.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")

DATA = Path(__file__).resolve().parents[1] / "training" / "data" / "xtb_md17"
MIN_FRAMES = 2000

# Hill formulas of the ten revised-MD17 molecules.
FORMULAS = {
    "aspirin": "C9H8O4",
    "azobenzene": "C12H10N2",
    "benzene": "C6H6",
    "ethanol": "C2H6O",
    "malonaldehyde": "C3H4O2",
    "naphthalene": "C10H8",
    "paracetamol": "C8H9NO2",
    "salicylic_acid": "C7H6O3",
    "toluene": "C7H8",
    "uracil": "C4H4N2O2",
}
MOLECULES = sorted(FORMULAS)

# Must match XTB_SETTINGS in training/make_xtb_md17.py.
XTB_SETTINGS = dict(
    method="GFN2-xTB",
    accuracy=1.0,
    electronic_temperature=300.0,
    max_iterations=250,
    verbosity=0,
)


def path_of(name: str) -> Path:
    return DATA / f"{name}.extxyz.xz"


@lru_cache(maxsize=None)
def text_of(name: str) -> str:
    p = path_of(name)
    if not p.exists():
        pytest.fail(f"missing data file {p}")
    with lzma.open(p, "rt") as fh:
        return fh.read()


@lru_cache(maxsize=None)
def frames_of(name: str):
    # ase.io.read(p, index=":") reads the .xz file directly, but ASE's extxyz
    # reader seeks backwards once per frame and each backward seek restarts xz
    # decompression, so that is quadratic (~10 min for 2000 frames).
    # Decompressing into memory first is equivalent and takes ~1 s.
    return ase_io.read(io.StringIO(text_of(name)), index=":", format="extxyz")


def test_direct_xz_read_equivalent(tmp_path):
    """ase.io.read on an .xz path gives the same frames (checked on a prefix)."""
    name = "ethanol"
    n = 30
    lines = text_of(name).splitlines(keepends=True)
    natoms = int(lines[0])
    p = tmp_path / "prefix.extxyz.xz"
    with lzma.open(p, "wt") as fh:
        fh.write("".join(lines[: n * (natoms + 2)]))
    direct = ase_io.read(p, index=":")
    ref = frames_of(name)[:n]
    assert len(direct) == n
    for a, b in zip(direct, ref):
        assert a.info == b.info
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())


@lru_cache(maxsize=None)
def manifest():
    return json.loads((DATA / "manifest.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", MOLECULES)
def test_frames_energy_forces(name):
    frames = frames_of(name)
    assert len(frames) >= MIN_FRAMES
    n = len(frames[0])
    energies = np.array([a.get_potential_energy() for a in frames])
    forces = np.array([a.get_forces() for a in frames])
    assert energies.shape == (len(frames),)
    assert forces.shape == (len(frames), n, 3)
    assert np.all(np.isfinite(energies))
    assert np.all(np.isfinite(forces))
    assert all(np.all(np.isfinite(a.positions)) for a in frames)
    # sanity: MD at 500 K around a minimum, not exploded
    assert energies.std() < 5.0  # eV
    assert np.abs(forces).max() < 50.0  # eV/A


@pytest.mark.parametrize("name", MOLECULES)
def test_formula_and_info(name):
    frames = frames_of(name)
    numbers = frames[0].numbers
    assert frames[0].get_chemical_formula(mode="hill") == FORMULAS[name]
    assert all(np.array_equal(a.numbers, numbers) for a in frames)
    steps = []
    for a in frames:
        assert a.info["molecule"] == name
        assert isinstance(a.info["seed"], (int, np.integer))
        assert a.info["seed"] == frames[0].info["seed"]
        steps.append(a.info["md_step"])
    steps = np.array(steps)
    assert np.all(np.diff(steps) > 0)
    assert len(set(np.diff(steps))) == 1  # constant spacing
    assert np.diff(steps)[0] >= 10  # >= 5 fs between frames


@pytest.mark.parametrize("name", MOLECULES)
def test_manifest_matches_file(name):
    entry = manifest()["molecules"][name]
    p = path_of(name)
    assert entry["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert entry["frames"] == len(frames_of(name))
    assert entry["formula"] == FORMULAS[name]
    assert entry["n_atoms"] == len(frames_of(name)[0])


@pytest.mark.parametrize("name", MOLECULES)
def test_labels_reproduce_with_tblite(name):
    tblite_ase = pytest.importorskip("tblite.ase")
    from ase import Atoms

    frames = frames_of(name)
    for idx in (0, len(frames) - 1):
        ref = frames[idx]
        a = Atoms(numbers=ref.numbers, positions=ref.positions)
        a.calc = tblite_ase.TBLite(**XTB_SETTINGS)
        e = a.get_potential_energy()
        f = a.get_forces()
        assert abs(e - ref.get_potential_energy()) < 1e-6
        np.testing.assert_allclose(f, ref.get_forces(), rtol=0, atol=1e-6)
