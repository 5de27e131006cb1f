"""Row gathers and neighbour sums that ``torch.compile`` can use on every thread.

Message passing gathers node rows onto edges (``x[index]``, ``(N, ...) -> (E, ...)``) and
sums edge rows back onto nodes (``out[index[e]] += src[e]``, ``(E, ...) -> (N, ...)``); the
backward of each is the other. In eager mode these are ``index_select`` and
``index_add_``. Under ``torch.compile`` (inductor, CPU, torch 2.13) a neighbour sum is
generated as vectorised atomic adds, and with more than one thread inductor fails an
assertion while generating them, which would confine every compiled kernel to one thread.

The sum is a ``torch.library`` custom operator (``sinet_ase::sum_rows``), which inductor
calls as an opaque ATen kernel. While ``torch.compile`` traces, :func:`gather_rows` and
:func:`sum_rows` are autograd functions whose every sum, forward or backward, is that
operator, and whose every gather is a plain ``index_select``: inductor generates the
gathers as indexed loads inside the kernels that read them, and nothing as atomic adds.
The gathers are not custom operators because fused into their readers they are cheaper
than as opaque calls (A/B in ``benchmarks/README.md``). Outside
compilation the helpers call ``index_select`` / ``index_add_`` directly.
``sinet_ase::gather_rows`` stays as the custom operator's registered gradient (the
gradient of each operator is the other, so second derivatives flow through them).
"""

import torch


def _gather_rows_eager(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # index_select, not x[index]: its backward is index_add_, several times faster on CPU
    # than the accumulating index_put_ behind advanced indexing
    return x.index_select(0, index)


def _sum_rows_eager(src: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    return src.new_zeros((num_rows,) + tuple(src.shape[1:])).index_add_(0, index, src)


@torch.library.custom_op("sinet_ase::gather_rows", mutates_args=())
def _gather_rows_op(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return _gather_rows_eager(x, index)


@torch.library.custom_op("sinet_ase::sum_rows", mutates_args=())
def _sum_rows_op(src: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    return _sum_rows_eager(src, index, num_rows)


@_gather_rows_op.register_fake
def _(x, index):
    return x.new_empty((index.shape[0],) + tuple(x.shape[1:]))


@_sum_rows_op.register_fake
def _(src, index, num_rows):
    return src.new_empty((num_rows,) + tuple(src.shape[1:]))


def _gather_setup(ctx, inputs, output):
    x, index = inputs
    ctx.save_for_backward(index)
    ctx.num_rows = x.shape[0]


def _gather_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    return _sum_rows_op(grad, index, ctx.num_rows), None


def _sum_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _sum_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    return _gather_rows_op(grad, index), None, None


_gather_rows_op.register_autograd(_gather_backward, setup_context=_gather_setup)
_sum_rows_op.register_autograd(_sum_backward, setup_context=_sum_setup)


class _FusableGather(torch.autograd.Function):
    """``index_select`` forward (fused by inductor), the ``sum_rows`` operator backward."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.num_rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return _sum_rows_op(grad, index, ctx.num_rows), None


class _FusableSum(torch.autograd.Function):
    """The ``sum_rows`` operator forward, ``index_select`` backward (fused by inductor)."""

    @staticmethod
    def forward(ctx, src, index, num_rows):
        ctx.save_for_backward(index)
        return _sum_rows_op(src, index, num_rows)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along the first axis: ``(N, ...)``, ``index (E,)`` -> ``(E, ...)``."""
    if torch.compiler.is_compiling():
        return _FusableGather.apply(x, index)
    return _gather_rows_eager(x, index)


def sum_rows(src: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``out[n] = sum_{e: index[e] = n} src[e]``: ``(E, ...)``, ``index (E,)`` -> ``(num_rows, ...)``."""
    if torch.compiler.is_compiling():
        return _FusableSum.apply(src, index, num_rows)
    return _sum_rows_eager(src, index, num_rows)
