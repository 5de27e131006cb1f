"""The fused edge kernels (sinet_ase.ops.fused): each against its torch form, its first and
second derivatives by finite differences, and the model and calculator with and without them.

Tests that need the kernels build them (torch's extension cache; about 20 s the first time on
a machine) and are marked slow; the option checks run without them."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from torch.autograd import gradcheck, gradgradcheck

from sinet_ase import SINetCalculator
from sinet_ase.graph import atoms_to_graph
from sinet_ase.ops import fused


@pytest.fixture(scope="module")
def kernels():
    module = fused.kernels(build=True)
    if module is None and not fused.can_build():
        pytest.skip(f"no C++ compiler or ninja here: {fused.build_error()}")
    assert module is not None, fused.build_error()
    return module


def _inputs(dtype, N=11, E=40, L=2, C=5, H=4, seed=0, sorted_destinations=False):
    g = torch.Generator().manual_seed(seed)
    M = (L + 1) ** 2

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()

    return dict(
        S=randn(N, M + 1, H),
        h=randn(N, M, C),
        w=randn(E, M + 1),
        x=randn(E, H),
        Y=randn(E, M),
        alpha=randn(E, L + 1, C),
        i=torch.randint(0, N, (E,), generator=g),
        j=torch.randint(0, N, (E,), generator=g).sort().values
        if sorted_destinations
        else torch.randint(0, N, (E,), generator=g),
        N=N,
        start=torch.arange(L + 2) ** 2,
        scale=1.0 / torch.sqrt(2.0 * torch.arange(L + 1, dtype=dtype) + 1.0),
        degree=torch.cat([torch.full((2 * l + 1,), l) for l in range(L + 1)]),
    )


def _cases(t):
    """(name, fused function, torch reference, differentiable inputs)."""
    N, i, j = t["N"], t["i"], t["j"]
    start, scale, degree = t["start"], t["scale"], t["degree"]

    def pair_reference(a, b):
        product = a[i] * b[j]
        return torch.stack([product[:, start[l] : start[l + 1]].sum(1) * scale[l] for l in range(len(scale))], 1)

    return [
        (
            "gather_contract",
            lambda S, w: fused.gather_contract(S, i, w),
            lambda S, w: (w.unsqueeze(-1) * S[i]).sum(1),
            (t["S"], t["w"]),
        ),
        (
            "gather_dot",
            lambda S, x: fused.gather_dot(S, i, x),
            lambda S, x: (S[i] * x.unsqueeze(1)).sum(-1),
            (t["S"], t["x"]),
        ),
        (
            "outer_scatter",
            lambda Y, x: fused.outer_scatter(Y, x, j, N),
            lambda Y, x: torch.zeros(N, Y.shape[1], x.shape[1], dtype=x.dtype).index_add(
                0, j, Y.unsqueeze(-1) * x.unsqueeze(1)
            ),
            (t["Y"], t["x"]),
        ),
        (
            "pair_degree_dot",
            lambda a, b: fused.pair_degree_dot(a, i, b, j, start, scale),
            pair_reference,
            (t["h"], t["h"] * 0.5 + 1.0),
        ),
        (
            "degree_scatter",
            lambda alpha, h: fused.degree_scatter(alpha, h, i, j, start, N),
            lambda alpha, h: torch.zeros_like(h).index_add(0, j, alpha[:, degree] * h[i]),
            (t["alpha"], t["h"]),
        ),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sorted_destinations", [False, True], ids=["any order", "sorted"])
def test_kernels_match_their_torch_forms_in_both_dtypes(kernels, dtype, threads, sorted_destinations):
    """Scatters of 1,024 edges or more run in parallel: over destination nodes where the
    destinations are sorted, else into private copies that are summed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        inputs = _inputs(dtype, N=60, E=3000, sorted_destinations=sorted_destinations)
        for name, function, reference, inputs in _cases(inputs):
            got, want = function(*inputs), reference(*inputs)
            tolerance = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance, msg=name)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
def test_kernels_first_and_second_derivatives_match_finite_differences(kernels):
    for name, function, _, inputs in _cases(_inputs(torch.float64)):
        inputs = tuple(x.detach().requires_grad_() for x in inputs)
        assert gradcheck(function, inputs), name
        assert gradgradcheck(function, inputs), name


def _structures():
    cell = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    cell.set_cell(cell.cell[:] + np.array([[0.0, 0.3, 0.1], [0.2, 0.0, 0.4], [0.1, 0.2, 0.0]]), scale_atoms=True)
    cell.symbols[:3] = "HCO"
    cell.rattle(0.05, seed=1)
    water = molecule("CH3CH2OH")
    water.rattle(0.05, seed=2)
    return {"triclinic cell": cell, "molecule": water}


@pytest.mark.slow
@pytest.mark.parametrize("avg_num_neighbors", [6.0, 40.0], ids=["per-edge embedding", "species-folded embedding"])
def test_model_with_kernels_gives_the_same_energy_forces_stress_and_training_gradient(
    kernels, small_model, avg_num_neighbors
):
    model = small_model(("H", "C", "O", "Cu"), avg_num_neighbors=avg_num_neighbors)
    for name, atoms in _structures().items():
        graph = atoms_to_graph(atoms, model.cutoff, model.elements)
        results = {}
        for on in (False, True):
            fused.set_fused(model, on)
            out = model(graph, compute_forces=True, compute_stress=bool(atoms.pbc.all()))
            # the force loss of training differentiates the forces (double backward)
            model.zero_grad()
            trained = model(graph, compute_forces=True, training=True)
            (trained["forces"] ** 2).sum().backward()
            grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            results[on] = {**{k: v.detach() for k, v in out.items()}, "parameter gradient": grads}
        for key, value in results[False].items():
            torch.testing.assert_close(results[True][key], value, rtol=1e-10, atol=1e-12, msg=f"{name}: {key}")
    fused.set_fused(model, False)


@pytest.mark.slow
@pytest.mark.parametrize("edge_chunk_size", [None, 50], ids=["whole graph", "edge chunks"])
def test_calculator_with_kernels_gives_the_calculator_results_without(kernels, small_model, edge_chunk_size):
    model = small_model(("H", "C", "O", "Cu"), avg_num_neighbors=40.0)
    for name, atoms in _structures().items():
        found = {}
        for option in (False, True):
            calc = SINetCalculator(
                model, compile=False, fused_kernels=option, compute_stress=True, edge_chunk_size=edge_chunk_size
            )
            assert calc.fused_kernels is option
            atoms.calc = calc
            found[option] = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
            if atoms.pbc.all():
                found[option]["stress"] = atoms.get_stress()
        for key, value in found[False].items():
            np.testing.assert_allclose(found[True][key], value, rtol=1e-10, atol=1e-12, err_msg=f"{name}: {key}")


def test_kernels_are_not_used_on_fake_tensors_or_when_off():
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = torch.zeros(3, 2, dtype=torch.float64)
    assert fused.kernels_for(real, wanted=False) is None
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(real)
        assert fused.kernels_for(fake, wanted=True) is None
    assert fused.kernels_for(real.to(torch.float16), wanted=True) is None


def test_fused_option_is_checked_and_auto_starts_one_background_build(monkeypatch, small_model):
    from sinet_ase.background import BACKGROUND_SWITCH

    model = small_model(("H", "C", "O"))
    with pytest.raises(ValueError, match="fused_kernels must be True, False or 'auto'"):
        SINetCalculator(model, fused_kernels="yes")
    # a machine where they are not built: "auto" runs without them and starts one build
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_failed", None)
    monkeypatch.setattr(fused, "_background_started", False)
    monkeypatch.setattr(fused, "_is_built", lambda: False)
    monkeypatch.setattr(fused, "can_build", lambda: True)
    started = []

    class FakeProcess:
        pid = 12345

    def fake_popen(command, **kwargs):
        started.append(command)
        return FakeProcess()

    monkeypatch.setattr(fused.subprocess, "Popen", fake_popen)
    assert SINetCalculator(model, compile=False).fused_kernels is False
    assert started == []  # the tests switch background processes off
    monkeypatch.setenv(BACKGROUND_SWITCH, "on")
    for _ in range(2):
        assert SINetCalculator(model, compile=False).fused_kernels is False
    assert len(started) == 1 and started[0][1:4] == ["-m", "sinet_ase.ops.fused", "--after-pid"]
    assert SINetCalculator(model, compile=False, fused_kernels=False).fused_kernels is False


@pytest.mark.slow
def test_predict_with_kernels_gives_the_same_results_and_restores_the_model(kernels, small_model):
    from sinet_ase import predict
    from sinet_ase.inference import prepare_model

    model = prepare_model(small_model(("H", "C", "O", "Cu"), avg_num_neighbors=40.0), "cpu", "float64")
    structures = list(_structures().values())
    without = predict(model, structures, fused_kernels=False)
    found = predict(model, structures, fused_kernels=True)
    np.testing.assert_allclose(found["energy"], without["energy"], rtol=1e-10)
    for a, b in zip(found["forces"], without["forces"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert not any(getattr(m, "use_fused", False) for m in model.modules())  # the caller's setting
