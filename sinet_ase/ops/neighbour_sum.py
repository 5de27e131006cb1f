"""Row gathers and neighbour sums that ``torch.compile`` leaves to ATen.

Message passing gathers node rows onto edges (``x[index]``, ``(N, ...) -> (E, ...)``) and
sums edge rows back onto nodes (``out[index[e]] += src[e]``, ``(E, ...) -> (N, ...)``); the
backward of each is the other. In eager mode these are ``index_select`` and
``index_add_``. Under ``torch.compile`` (inductor, CPU, torch 2.13) a neighbour sum is
generated as vectorised atomic adds, and with more than one thread inductor fails an
assertion while generating them; before this module, :meth:`sinet_ase.SINet.enable_compile`
therefore ran every generated kernel on one thread.

:func:`gather_rows` and :func:`sum_rows` are the same two operations as
``torch.library`` custom operators (``sinet_ase::gather_rows``,
``sinet_ase::sum_rows``): inductor calls them as opaque ATen kernels and generates only
the element-wise work between them, which can then use every thread. Each one's
gradient is the other, so forces (and second derivatives) flow through them. Outside
compilation the helpers call ``index_select`` / ``index_add_`` directly, without the
custom-operator dispatch.
"""

import torch


def _gather_rows_eager(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # index_select, not x[index]: its backward is index_add_, several times faster on CPU
    # than the accumulating index_put_ behind advanced indexing (profiled)
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


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along the first axis: ``(N, ...)``, ``index (E,)`` -> ``(E, ...)``."""
    if torch.compiler.is_compiling():
        return _gather_rows_op(x, index)
    return _gather_rows_eager(x, index)


def sum_rows(src: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``out[n] = sum_{e: index[e] = n} src[e]``: ``(E, ...)``, ``index (E,)`` -> ``(num_rows, ...)``."""
    if torch.compiler.is_compiling():
        return _sum_rows_op(src, index, num_rows)
    return _sum_rows_eager(src, index, num_rows)
