"""Memory of large structures: the chunked call stays near its estimate, far below a whole-graph pass."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, "benchmarks")
    from bench_scaling import water_box
    from sinet_ase import SINetCalculator
    from sinet_ase.graph import atoms_to_graph
    from sinet_ase.memory import estimate_call_bytes

    torch.set_num_threads(1)
    chunk = json.loads(sys.argv[1])
    calc = SINetCalculator("sinet-xtb-md17", edge_chunk_size=chunk, out_of_domain="ignore")
    atoms = water_box(7)  # 1,029 atoms, 56,042 edges
    def status_bytes(key):  # VmRSS / VmHWM of /proc/self/status, in bytes
        with open("/proc/self/status") as handle:
            line = next(l for l in handle if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    # the high-water mark so far (imports, model loading) could exceed the call's own peak:
    # reset it to the current resident size first (Linux: clear_refs 5)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = status_bytes("VmRSS")
    atoms.calc = calc
    forces = atoms.get_forces()
    peak = status_bytes("VmHWM")
    edges = atoms_to_graph(atoms, calc.model.cutoff).edge_index.shape[1]
    size = calc.model.backbone.chunk_size_for(edges)
    print(json.dumps({"used": peak - before, "chunk": size, "forces": forces.tolist(),
                      "estimate": estimate_call_bytes(calc.model, len(atoms), edges, size)}))
""")


def _measure(chunk):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    for allocator_variable in ("LD_PRELOAD", "MALLOC_CONF"):  # the C library's malloc, as measured
        env.pop(allocator_variable, None)
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, json.dumps(chunk)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_chunked_call_uses_a_fraction_of_the_memory_with_the_same_forces():
    """1,029 atoms of liquid water with the shipped potential in float64 (fresh processes, peak
    resident memory): in chunks of 1,000 edges the call needs under 0.3 GiB, a tenth of the
    whole-graph pass, and within 40 % of its estimate; the forces agree to 1e-10 eV/Å."""
    import numpy as np

    chunked, whole = _measure(1000), _measure(None)
    assert chunked["chunk"] == 1000 and whole["chunk"] is None
    assert chunked["used"] < 0.3 * 2**30
    assert chunked["used"] < 0.1 * whole["used"]
    for run in (chunked, whole):
        assert 0.6 < run["estimate"] / run["used"] < 1.4, run
    np.testing.assert_allclose(chunked["forces"], whole["forces"], rtol=0, atol=1e-10)


def test_a_million_atoms_of_water_are_refused_on_24_gib_before_the_neighbour_list(monkeypatch):
    """985,527 atoms at liquid water's density (69^3 molecules, ``bench_scaling.water_box(69)``'s
    cell) with the shipped potential, default settings (float64), on a 24 GiB machine with
    nothing else running (22 GiB available): the density-based estimate (about 18 GiB: pairs
    with a margin over a uniform density) exceeds the 75 % of the available memory that a call
    may use, so the call is refused at once, before the neighbour list (gigabytes) is built."""
    import numpy as np
    from ase import Atoms

    from sinet_ase import InsufficientMemoryError, SINetCalculator, calculator, memory

    def no_neighbour_list(*args, **kwargs):
        raise AssertionError("the structure passed the memory check")

    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 22 * 2**30)
    monkeypatch.setattr(calculator, "atoms_to_graph", no_neighbour_list)
    side = 69 * 29.9 ** (1 / 3)  # bench_scaling.WATER_VOLUME_A3 per molecule
    atoms = Atoms(numbers=np.tile([8, 1, 1], 69**3), cell=[side] * 3, pbc=True)
    assert len(atoms) == 985_527
    atoms.calc = SINetCalculator("sinet-xtb-md17", compile=False)
    with pytest.raises(
        InsufficientMemoryError,
        match=r"985,527 atoms, about [\d,]+ pairs within the "
        r"cutoff for its density\) needs about 1[78]\.\d GiB .* more than 16\.5 GiB, 75% "
        r"of the 22\.0 GiB available on cpu",
    ):
        atoms.get_potential_energy()


def test_the_default_limit_leaves_headroom(monkeypatch):
    """Without memory_limit_gib a call may use 75 % of the memory available: an estimate of
    90 % of it is refused, one of 70 % runs."""
    from ase.build import molecule

    from sinet_ase import InsufficientMemoryError, SINetCalculator, memory
    from sinet_ase.graph import atoms_to_graph

    atoms = molecule("CH3CH2OH")
    calc = SINetCalculator("sinet-xtb-md17", compile=False)
    edges = atoms_to_graph(atoms, calc.model.cutoff).edge_index.shape[1]
    estimate = memory.estimate_call_bytes(calc.model, len(atoms), edges, None)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": int(estimate / 0.9))
    with pytest.raises(InsufficientMemoryError, match="75% of the"):
        calc.get_potential_energy(atoms)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": int(estimate / 0.7))
    assert calc.get_potential_energy(atoms) < 0


def test_the_available_memory_is_read_at_most_every_max_age(monkeypatch):
    """One reading of /proc/meminfo serves the calls of the next MEMINFO_MAX_AGE_S seconds
    (an MD step is ~1 ms), then it is read again."""
    import time

    from sinet_ase import memory

    monkeypatch.setattr(memory, "_meminfo", (time.monotonic(), 12345))
    monkeypatch.setattr(memory, "MEMINFO_MAX_AGE_S", 3600.0)
    assert memory.available_bytes("cpu") == 12345
    monkeypatch.setattr(memory, "MEMINFO_MAX_AGE_S", 0.0)
    fresh = memory.available_bytes("cpu")
    if fresh is not None:  # Linux: MemAvailable, bytes
        assert fresh > 2**20 and memory._meminfo[1] == fresh
