"""The row gather and neighbour sum of ``sinet_ase.ops.neighbour_sum``, and the forms of the
layout operations that are used while ``torch.compile`` traces (``torch.compiler.is_compiling()``)."""

import functools

import pytest
import torch

from sinet_ase.ops import SphericalLayout
from sinet_ase.ops.neighbour_sum import _gather_rows_op, _sum_rows_op, gather_rows, sum_rows
from sinet_ase.testing import _combine_with_harmonics_channels_last, _inner_with_harmonics_channels_last


def _graph(num_nodes=5, num_edges=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, num_nodes, (num_edges,), generator=g)
    index[:num_nodes] = torch.arange(num_nodes)  # every node has an edge, one twice or more
    return index


def test_custom_operators_compute_index_select_and_index_add():
    index = _graph()
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    src = torch.randn(17, 3, 4, dtype=torch.float64)
    expected_sum = torch.zeros(5, 3, 4, dtype=torch.float64).index_add_(0, index, src)
    assert torch.equal(_gather_rows_op(x, index), x[index])
    torch.testing.assert_close(_sum_rows_op(src, index, 5), expected_sum, rtol=0, atol=1e-14)
    # the eager helpers are the same functions
    assert torch.equal(gather_rows(x, index), x[index])
    torch.testing.assert_close(sum_rows(src, index, 5), expected_sum, rtol=0, atol=1e-14)
    # a node that no edge points at gets zeros, and the output has num_rows rows
    assert torch.equal(_sum_rows_op(src, index, 7)[5:], torch.zeros(2, 3, 4, dtype=torch.float64))


@pytest.mark.parametrize("op", ["gather", "sum"])
def test_custom_operators_have_exact_first_and_second_derivatives(op):
    index = _graph()
    if op == "gather":
        x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
        fn = lambda t: _gather_rows_op(t, index) ** 2  # noqa: E731 (non-linear: a second derivative)
    else:
        x = torch.randn(17, 2, 3, dtype=torch.float64, requires_grad=True)
        fn = lambda t: _sum_rows_op(t, index, 6) ** 2  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_custom_operators_pass_the_torch_library_checks():
    index = _graph()
    x = torch.randn(5, 3, 4, requires_grad=True)
    src = torch.randn(17, 3, 4, requires_grad=True)
    torch.library.opcheck(_gather_rows_op, (x, index))
    torch.library.opcheck(_sum_rows_op, (src, index, 5))


def _traced(fn):
    """``fn`` traced by Dynamo (so ``is_compiling()`` is true inside) and run eagerly: no C++."""
    return torch.compile(fn, backend="eager", fullgraph=True, dynamic=False)


@pytest.mark.parametrize("lmax", [0, 1, 3])
def test_layout_operations_traced_for_compile_equal_the_eager_ones(lmax):
    torch.manual_seed(lmax)
    layout = SphericalLayout(lmax, channels=3).double()
    E, M, L1 = 7, (lmax + 1) ** 2, lmax + 1
    h = torch.randn(E, M, 3, dtype=torch.float64)
    Y = torch.randn(E, M, dtype=torch.float64)
    alpha, beta = torch.randn(E, L1, 3, dtype=torch.float64), torch.randn(E, L1, 3, dtype=torch.float64)
    cases = {
        "per_degree_channels_last": (layout.per_degree_channels_last, (alpha,)),
        "degree_sum_channels_last": (layout.degree_sum_channels_last, (h,)),
        # the per-edge reference form's helpers (sinet_ase.testing; bench_ops.py compiles them)
        "inner_with_harmonics_channels_last": (functools.partial(_inner_with_harmonics_channels_last, layout), (h, Y)),
        "combine_with_harmonics_channels_last": (
            functools.partial(_combine_with_harmonics_channels_last, layout),
            (alpha, h, beta, Y),
        ),
    }
    for name, (fn, args) in cases.items():
        torch._dynamo.reset()
        torch.testing.assert_close(_traced(fn)(*args), fn(*args), rtol=1e-12, atol=1e-12, msg=name)


def test_neighbour_sum_helpers_traced_for_compile_sum_only_through_the_custom_operator():
    """Under torch.compile every sum, forward and backward, is ``sinet_ase::sum_rows`` (inductor
    would generate an ATen scatter or index_add as atomic adds) and every gather a plain
    ``index_select`` that inductor can fuse; values and gradients equal the eager ones."""
    from torch._dynamo.backends.common import aot_autograd

    index = _graph()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def message_passing(nodes):
        return sum_rows(gather_rows(nodes, index) * 2.0, index, nodes.shape[0])

    graphs = {}

    def capture(name):
        def compiler(gm, example_inputs):
            graphs[name] = gm.code
            return gm

        return compiler

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=capture("forward"), bw_compiler=capture("backward"))
    out = torch.compile(message_passing, backend=backend, fullgraph=True)(x)
    ref = message_passing(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
    (grad_ref,) = torch.autograd.grad(ref.pow(2).sum(), x)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-13)
    for name in ("forward", "backward"):
        code = graphs[name]
        assert "sinet_ase.sum_rows" in code and "index_select" in code, (name, code)
        for scatter in ("index_add", "scatter", "index_put"):
            assert scatter not in code, (name, code)
