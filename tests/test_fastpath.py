"""The fast path (sinet_ase.fastpath): compile modes, the fallback without a compiler, the
precomputed gradient, and compiled results against eager ones (the compiling tests are slow)."""

import os
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from sinet_ase import SINetCalculator
from sinet_ase import background, fastpath
from sinet_ase.fastpath import AutoCompile, CompileFallbackWarning, compiled_network
from sinet_ase.graph import atoms_to_graph, batch_graphs
from sinet_ase.testing import small_sinet


def small_model(elements=("H", "C", "O"), cutoff=2.5, seed=0, dtype=torch.float64, **kw):
    return small_sinet(elements, dtype, cutoff=cutoff, seed=seed, **{"avg_num_neighbors": 4.0, **kw})


def hot_ethanol(seed=0):
    atoms = molecule("CH3CH2OH")
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(seed))
    return atoms


def md_trajectory(calc, steps, atoms=None):
    """Positions, forces and edge counts of ``steps`` VelocityVerlet steps (0.5 fs)."""
    atoms = hot_ethanol() if atoms is None else atoms
    atoms.calc = calc
    frames = []

    def record():
        graph = atoms_to_graph(atoms, calc.model.cutoff)
        frames.append(
            (atoms.positions.copy(), atoms.get_forces().copy(), atoms.get_potential_energy(), graph.edge_index.shape[1])
        )

    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.attach(record, interval=1)
    dyn.run(steps)
    return frames


def assert_same_trajectory(frames, reference, atol=1e-10):
    assert len(frames) == len(reference)
    for (x, f, e, _), (x_ref, f_ref, e_ref, _) in zip(frames, reference):
        np.testing.assert_allclose(x, x_ref, rtol=0, atol=atol)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=atol)
        assert e == pytest.approx(e_ref, rel=0, abs=atol)


@pytest.fixture
def no_inductor(monkeypatch):
    """``torch.compile`` that returns the function unchanged: the fast path's logic without a
    compilation (milliseconds instead of tens of seconds)."""
    made = []

    def fake_compile(fn, **kwargs):
        made.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    return made


def test_compile_values_are_checked_before_loading_anything():
    with pytest.raises(ValueError, match="compile must be True, False, 'auto'"):
        SINetCalculator("no-such-file.pt", compile="yes")
    with pytest.raises(ValueError, match="after_calls"):
        AutoCompile(after_calls=-1)
    assert fastpath.resolve_mode("auto") == AutoCompile(fastpath.AUTO_COMPILE_AFTER)


def test_auto_is_the_default_and_stays_eager_for_short_jobs(no_inductor):
    calc = SINetCalculator(small_model())
    network = compiled_network(calc.model)
    assert network is not None and network.after_calls == fastpath.AUTO_COMPILE_AFTER
    atoms = hot_ethanol()
    atoms.calc = calc
    for _ in range(3):
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
    assert network.calls == 3 and not network.active and not no_inductor
    assert compiled_network(SINetCalculator(small_model(), compile=False).model) is None


def test_auto_gives_the_eager_trajectory_through_the_precomputed_gradient(no_inductor):
    """After ``after_calls`` eager calls the compiled function (here: uncompiled, same code)
    takes over; the trajectory is the eager one, also where edges cross the cutoff."""
    reference = md_trajectory(SINetCalculator(small_model(), compile=False), 30)
    calc = SINetCalculator(small_model(), compile=AutoCompile(after_calls=5))
    frames = md_trajectory(calc, 30)
    network = compiled_network(calc.model)
    assert network.active and network.compile_seconds is not None
    assert no_inductor[0]["fullgraph"] is True
    assert len({edges for *_, edges in frames}) > 1  # the neighbour list changed during the run
    assert_same_trajectory(frames, reference)


def test_precomputed_gradient_stress_and_any_output_gradient(no_inductor):
    """Stress, a non-uniform output gradient (per-atom weights) and a double backward go
    through the exact recomputation and equal the eager model."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    eager = small_model(["Cu"], cutoff=3.0)
    fast = small_model(["Cu"], cutoff=3.0)
    fastpath.install(fast, True)
    graph = atoms_to_graph(atoms, eager.cutoff)
    ref, out = eager(graph, compute_stress=True), fast(graph, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12)
    # forces, stress and per-atom stresses from the compiled edge gradient (no autograd):
    # a batch of a triclinic cell and the cubic one, each graph its own virial
    triclinic = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    triclinic.rattle(0.05, seed=2)
    batch = batch_graphs([atoms_to_graph(triclinic, eager.cutoff), graph])
    ref = eager(batch, compute_stress=True, compute_stresses=True)
    with torch.no_grad():  # the autograd path would fail here: no graph over the positions
        out = fast(batch, compute_stress=True, compute_stresses=True)
    for key in ("energy", "energies", "forces", "stress", "stresses"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-11, atol=1e-12)
    assert ref["stress"].shape == (2, 3, 3) and float(ref["stress"][0].abs().max()) > 1e-4

    weights = torch.linspace(0.5, 2.0, len(atoms), dtype=torch.float64)
    ref_grad = weighted_energy_gradient(eager, graph, weights)
    out_grad = weighted_energy_gradient(fast, graph, weights)
    torch.testing.assert_close(out_grad, ref_grad, rtol=1e-12, atol=1e-12)
    # double backward: d/dx of sum(forces^2), through create_graph
    torch.testing.assert_close(
        force_norm_gradient(fast, graph), force_norm_gradient(eager, graph), rtol=1e-10, atol=1e-12
    )


def _network_inputs(model, graph, positions):
    from sinet_ase.model import edge_vectors, graph_batch

    vectors = edge_vectors(graph, positions, graph.cell.to(torch.float64), graph_batch(graph))
    return model.backbone.species(graph.z), vectors.to(model.dtype)


def weighted_energy_gradient(model, graph, weights):
    """Gradient of ``sum_i w_i E_i`` with respect to positions, through whatever network the
    model runs in its forward (``_compiled_network`` when set)."""
    positions = graph.pos.clone().requires_grad_(True)
    species, vectors = _network_inputs(model, graph, positions)
    network = model._compiled_network or model.network_energies
    energies = network(species, graph.edge_index, vectors)
    (grad,) = torch.autograd.grad((weights * energies).sum(), [positions])
    return grad


def force_norm_gradient(model, graph):
    positions = graph.pos.clone().requires_grad_(True)
    species, vectors = _network_inputs(model, graph, positions)
    network = model._compiled_network or model.network_energies
    energy = network(species, graph.edge_index, vectors).sum()
    (forces,) = torch.autograd.grad(energy, [positions], create_graph=True)
    (grad,) = torch.autograd.grad((forces**2).sum(), [positions])
    return grad


def test_without_a_compiler_auto_says_why_once_and_runs_eagerly(monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile must not be called without a compiler")

    monkeypatch.setattr(torch, "compile", no_compile)
    monkeypatch.setattr(fastpath, "compile_problem", lambda device: "no working C++ compiler found")
    reference = md_trajectory(SINetCalculator(small_model(), compile=False), 6)
    calc = SINetCalculator(small_model(), compile=AutoCompile(after_calls=2))
    with pytest.warns(CompileFallbackWarning) as record:
        frames = md_trajectory(calc, 6)
    record = [r for r in record if r.category is CompileFallbackWarning]
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "eagerly" in message and "no working C++ compiler found" in message
    assert compiled_network(calc.model).fallback_reason == "no working C++ compiler found"
    assert "network eager: no working C++ compiler" in compiled_network(calc.model).describe()
    assert_same_trajectory(frames, reference, atol=0)


def test_a_failed_compilation_falls_back_under_auto_and_raises_under_true(monkeypatch, tmp_path):
    # an empty cache folder: a network saved by an earlier run would load without compiling
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("C++ compile error\nlong compiler output")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(fastpath, "compile_problem", lambda device: None)
    reference = md_trajectory(SINetCalculator(small_model(), compile=False), 4)
    calc = SINetCalculator(small_model(), compile=AutoCompile(after_calls=1))
    with pytest.warns(CompileFallbackWarning, match=r"compiling failed \(RuntimeError: C\+\+ compile error\)"):
        frames = md_trajectory(calc, 4)
    assert_same_trajectory(frames, reference, atol=0)
    strict = SINetCalculator(small_model(), compile=True)
    atoms = hot_ethanol()
    atoms.calc = strict
    with pytest.raises(RuntimeError, match="C\\+\\+ compile error"):
        atoms.get_forces()


def test_compile_true_keeps_its_errors_and_auto_skips_what_cannot_compile(monkeypatch):
    with pytest.raises(ValueError, match="do not combine"):
        SINetCalculator(small_model(), compile=True, edge_chunk_size=100)
    assert compiled_network(SINetCalculator(small_model(), edge_chunk_size=100).model) is None
    monkeypatch.setenv(fastpath.ENVIRONMENT_SWITCH, "off")
    assert compiled_network(SINetCalculator(small_model()).model) is None
    assert compiled_network(SINetCalculator(small_model(), compile=True).model) is not None


def test_energy_only_calls_stay_eager(no_inductor):
    model = small_model()
    network = fastpath.install(model, True)
    graph = atoms_to_graph(hot_ethanol(), model.cutoff)
    with torch.no_grad():
        model(graph, compute_forces=False)
    assert network.calls == 0 and not no_inductor


# ------------------------------------------------------------------ with inductor (slow)


def _compiles_here():
    return fastpath.compile_problem("cpu") is None


needs_compiler = pytest.mark.skipif(not _compiles_here(), reason="no C++ compiler for torch.compile")


@pytest.mark.slow
@needs_compiler
def test_compiled_auto_gives_the_eager_md_trajectory_in_float64():
    """Inductor for real: 40 steps of hot ethanol whose edges cross the cutoff, compiled from
    the third call, equal the eager run to 1e-10."""
    reference = md_trajectory(SINetCalculator(small_model(), compile=False), 40)
    calc = SINetCalculator(small_model(), compile=AutoCompile(after_calls=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        frames = md_trajectory(calc, 40)
    assert compiled_network(calc.model).active
    assert len({edges for *_, edges in frames}) > 1
    assert_same_trajectory(frames, reference)


@pytest.mark.slow
@needs_compiler
def test_cached_artefacts_are_not_reused_for_another_model_or_dtype(tmp_path, monkeypatch):
    """One fresh inductor cache, compilations in turn (dynamo reset between them, so each
    goes to the disk caches): other weights (the saved network serves them, weights are
    inputs), another average neighbour count (a constant in the code) and float32 are each
    equal to their own eager model; then, without saved networks, inductor's caches alone."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    atoms = hot_ethanol()
    atoms.rattle(0.02, seed=3)
    tiny = dict(lmax=1, num_layers=1)  # three cold compilations: the smallest graph that has them
    cases = [
        ("first", tiny, "float64", "compiled and saved"),
        ("other weights", dict(tiny, seed=1), "float64", "loaded"),
        ("other constant", dict(tiny, avg_num_neighbors=9.0), "float64", "compiled and saved"),
        ("float32", tiny, "float32", "compiled and saved"),
        ("no saved network", dict(tiny, seed=2), "float64", None),
        ("no saved network, other weights", dict(tiny, seed=3), "float64", None),
    ]
    counters.clear()
    for name, change, dtype, state in cases:
        if state is None:
            monkeypatch.setattr(fastpath, "PRECOMPILE", False)
        torch._dynamo.reset()
        eager = SINetCalculator(small_model(**change), compile=False, dtype=dtype)
        fast = SINetCalculator(small_model(**change), compile=True, dtype=dtype)
        tol = 1e-10 if dtype == "float64" else 1e-4
        f_ref, f_out = eager.get_forces(atoms), fast.get_forces(atoms)
        network = compiled_network(fast.model)
        assert network.active and network.artefact_state == state, (name, network.artefact_state)
        np.testing.assert_allclose(f_out, f_ref, rtol=tol, atol=tol, err_msg=name)
        assert fast.get_potential_energy(atoms) == pytest.approx(eager.get_potential_energy(atoms), rel=tol, abs=tol), (
            name
        )
        # another structure (atoms and edges are dynamic): no recompilation, same numbers
        other = molecule("CH3OH")
        np.testing.assert_allclose(fast.get_forces(other), eager.get_forces(other), rtol=tol, atol=tol, err_msg=name)
    # the last compilation came from inductor's AOTAutograd cache (our autograd.Functions allowed)
    assert counters["aot_autograd"]["autograd_cache_hit"] >= 1, dict(counters["aot_autograd"])


# ------------------------------------------------------------------ sinet-md


def test_sinet_md_compiles_long_runs_only():
    from sinet_ase.md import compile_mode

    long_run = fastpath.MD_AUTO_COMPILE_STEPS
    assert compile_mode("auto", long_run) == AutoCompile(after_calls=0)
    assert compile_mode("auto", long_run - 1) is False
    assert compile_mode("on", 1) is True and compile_mode("off", 10**6) is False


def test_sinet_md_help_and_summary_name_the_compile_state(tmp_path, capsys, monkeypatch):
    from sinet_ase.cli import md_main

    with pytest.raises(SystemExit):
        md_main(["--help"])
    assert f"runs of {fastpath.MD_AUTO_COMPILE_STEPS} steps" in " ".join(capsys.readouterr().out.split())
    # a long run on a machine without a compiler: eager, and the summary says why in one line
    monkeypatch.setattr(fastpath, "MD_AUTO_COMPILE_STEPS", 3)
    monkeypatch.setattr("sinet_ase.md.MD_AUTO_COMPILE_STEPS", 3)
    monkeypatch.setattr(fastpath, "compile_problem", lambda device: "no working C++ compiler found")
    monkeypatch.setattr("sinet_ase.md.compile_problem", lambda device: "no working C++ compiler found")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)  # reported in the summary instead
        assert (
            md_main(
                [
                    "ethanol",
                    "--steps",
                    "4",
                    "--interval",
                    "2",
                    "--no-progress",
                    "--trajectory",
                    str(tmp_path / "t.traj"),
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "start-up (model, first force call): " in out
    assert "network eager: no working C++ compiler found" in out


class _Args:
    """The ``sinet-md`` arguments :func:`sinet_ase.md.defer_first_compilation` reads."""

    def __init__(self, model, steps):
        self.model, self.potential, self.steps, self.dtype = str(model), None, steps, "float64"


def _md_setup(tmp_path, steps):
    from sinet_ase import save_model

    model_file = tmp_path / "model.pt"
    save_model(small_model(), model_file)
    atoms = hot_ethanol()
    atoms.calc = SINetCalculator(model_file, compile=AutoCompile(after_calls=0))
    return atoms, _Args(model_file, steps), compiled_network(atoms.calc.model)


def test_a_first_run_shorter_than_a_compilation_pays_back_runs_eagerly_and_compiles_in_the_background(
    tmp_path, monkeypatch
):
    from sinet_ase import background_compile
    from sinet_ase.md import defer_first_compilation

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    started = []
    monkeypatch.setattr(background_compile, "start", lambda *a: started.append(a) or "4242")
    atoms, args, network = _md_setup(tmp_path, fastpath.MD_COLD_COMPILE_STEPS - 1)
    artefact = network.artefact_file("cpu")
    assert artefact is not None and artefact.startswith(str(tmp_path / "inductor"))
    defer_first_compilation(atoms, args, network)
    assert not network.active and "low-priority background process (pid 4242)" in network.describe()
    (model_file, dtype, device, structure, path) = started[0]
    assert (model_file, dtype, device, path) == (args.model, "float64", "cpu", artefact)
    assert structure is atoms

    # long runs compile in the run; so does every run once the compiled network is saved
    atoms, args, network = _md_setup(tmp_path, fastpath.MD_COLD_COMPILE_STEPS)
    defer_first_compilation(atoms, args, network)
    assert network.fallback_reason is None and not started[1:]
    atoms, args, network = _md_setup(tmp_path, 1000)
    os.makedirs(os.path.dirname(artefact))
    with open(artefact, "wb"):
        pass
    defer_first_compilation(atoms, args, network)
    assert len(started) == 1
    assert network.fallback_reason is None and network.after_calls == 0


def test_without_a_background_process_the_first_run_says_how_to_compile(tmp_path, monkeypatch):
    from sinet_ase.md import defer_first_compilation

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    atoms, args, network = _md_setup(tmp_path, 2000)
    defer_first_compilation(atoms, args, network)  # conftest.py switches the process off
    assert "--compile on compiles it in the run" in network.describe()


def test_background_start_writes_the_structure_takes_the_lock_and_cleans_up_when_it_cannot_start(tmp_path, monkeypatch):
    import subprocess

    from ase.io import read

    from sinet_ase import background_compile

    monkeypatch.delenv(background.BACKGROUND_SWITCH)
    artefact = str(tmp_path / "sinet_ase" / "network-x.bin")
    atoms = hot_ethanol()
    commands = []
    me = str(os.getpid())  # stands for the background process: alive while the test runs
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = ended.stdout.strip()  # the id of a process that has ended

    class FakePopen:
        def __init__(self, command, **kwargs):
            commands.append((command, kwargs))
            self.pid = int(me)

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    assert background_compile.start("m.pt", "float32", "cpu", atoms, artefact) == me
    command, kwargs = commands[0]
    assert command[1:5] == ["-m", "sinet_ase.background_compile", "m.pt", command[4]]
    lock = ["--lock", artefact + ".lock"]
    # it compiles after the run that starts it
    assert command[5:] == ["--dtype", "float32", "--device", "cpu", *lock, "--after-pid", me]
    np.testing.assert_allclose(read(command[4]).positions, atoms.positions)
    assert kwargs["preexec_fn"] is not None and os.path.exists(artefact + ".lock")
    with open(artefact + ".lock") as handle:
        assert handle.read() == me  # the background process's id
    # a lock whose process runs: a second run starts nothing; one whose process is gone
    # (killed), or an old one, is taken over
    assert background_compile.start("m.pt", "float32", "cpu", atoms, artefact) is None
    with open(artefact + ".lock", "w") as handle:
        handle.write(killed)
    assert background_compile.start("m.pt", "float32", "cpu", atoms, artefact) == me
    stale = time.time() - background_compile.STALE_LOCK_SECONDS - 60
    os.utime(artefact + ".lock", (stale, stale))
    assert background_compile.start("m.pt", "float32", "cpu", atoms, artefact) == me
    # a process that cannot start leaves no lock and no structure file behind
    os.unlink(artefact + ".lock")

    def no_process(command, **kwargs):
        raise OSError("fork failed")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    before = set(os.listdir(tmp_path / "sinet_ase"))
    assert background_compile.start("m.pt", "float32", "cpu", atoms, artefact) is None
    assert set(os.listdir(tmp_path / "sinet_ase")) == before
    monkeypatch.setenv(background.BACKGROUND_SWITCH, "off")
    assert background_compile.start("m.pt", "float32", "cpu", atoms, artefact) is None


@pytest.mark.slow
@needs_compiler
def test_the_background_process_waits_for_the_run_that_started_it(monkeypatch):
    import subprocess

    monkeypatch.setattr(background, "PARENT_POLL_S", 0.01)
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    start = time.monotonic()
    assert background.wait_for_exit(run.pid, timeout=0.1) is False  # still running
    reaper = threading.Thread(target=run.wait)  # as the shell reaps sinet-md when it ends
    reaper.start()
    assert background.wait_for_exit(run.pid, timeout=30) is True
    assert run.poll() is not None and time.monotonic() - start >= 0.45
    reaper.join()


def test_the_background_process_saves_the_network_that_the_next_run_loads(tmp_path, monkeypatch):
    from ase.io import write

    from sinet_ase import background_compile, save_model

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model_file, structure, lock = tmp_path / "model.pt", tmp_path / "start.extxyz", tmp_path / "x.lock"
    save_model(small_model(lmax=1, num_layers=1), model_file)
    atoms = hot_ethanol()
    write(structure, atoms)
    lock.write_text("")
    torch._dynamo.reset()
    assert background_compile.main([str(model_file), str(structure), "--lock", str(lock)]) == 0
    assert not structure.exists() and not lock.exists()
    torch._dynamo.reset()
    fast = SINetCalculator(model_file, compile=True)
    assert os.path.exists(compiled_network(fast.model).artefact_file("cpu"))
    forces = fast.get_forces(atoms)
    assert compiled_network(fast.model).artefact_state == "loaded"
    eager = SINetCalculator(model_file, compile=False)
    np.testing.assert_allclose(forces, eager.get_forces(atoms), rtol=1e-10, atol=1e-10)
