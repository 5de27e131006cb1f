r"""The halo exchange of domain decomposition as two torch operators.

A domain-decomposed MD code (``pair_style sinet``) runs the network on the graph of one
domain: its own atoms, whose features it computes, and ghost atoms, copies of its
neighbours' atoms within one cutoff, which only send messages. Before each layer the
ghosts' input features must be the features their owners computed: a *halo exchange*.
The two operators below are that exchange and its transpose; being operators of torch's
dispatcher (``torch.ops.sinet_halo``), they sit inside an exported program, which then runs
forward and backward in one pass with the communication where it belongs:

* ``fill(rows (n, ...), num_nodes) -> (num_nodes, ...)``: the features of the ``n`` nodes
  this domain computes (its first ``n`` nodes), followed by those of the ghost nodes,
  received from their owners;
* ``collect(grad (num_nodes, ...), num_rows) -> (num_rows, ...)``: the transpose of
  ``fill``: the gradient of the first ``num_rows`` nodes plus the gradients that other
  domains hold for ghost copies of them (``fill``'s gradient, which autograd calls).

Where every node is computed here (one process, the calculator's graph) ``fill`` copies its
input and ``collect`` takes the first rows. Otherwise the code that runs the program supplies
the communication: ``pair_style sinet`` defines these operators itself (with LAMMPS's forward
and reverse communication), and Python callers install an :class:`Exchange` with
:func:`exchange` (the tests do, to emulate several domains). In a Python process that has
loaded the LAMMPS plugin (LAMMPS driven through its Python module), the plugin's kernels
serve both: they exchange inside its ``compute`` and copy elsewhere, and an :class:`Exchange`
installed there is not called.
"""

import contextlib
import threading
from typing import Optional

import torch

_state = threading.local()  # the Exchange of this thread (each emulated domain has its own)


class Exchange:
    """What ``fill`` and ``collect`` do where a domain has ghost nodes: subclass and implement
    both (see the module docstring for the shapes); each returns a new tensor, never a view
    of its input (the rule for the outputs of torch operators)."""

    def fill(self, rows: torch.Tensor, num_nodes: int) -> torch.Tensor:
        raise NotImplementedError

    def collect(self, grad: torch.Tensor, num_rows: int) -> torch.Tensor:
        raise NotImplementedError


@contextlib.contextmanager
def exchange(handler: Exchange):
    """Use ``handler`` for the halo operators called in this thread inside the block."""
    previous = getattr(_state, "handler", None)
    _state.handler = handler
    try:
        yield handler
    finally:
        _state.handler = previous


def _handler(num_nodes: int, num_rows: int) -> Optional[Exchange]:
    handler = getattr(_state, "handler", None)
    if handler is None and num_nodes != num_rows:
        raise RuntimeError(
            f"a graph with {num_nodes - num_rows} ghost nodes needs a halo exchange: run the exported "
            "model through pair_style sinet, or install one with sinet_ase.ops.halo.exchange"
        )
    return handler


def _defined_elsewhere() -> bool:
    """Whether ``pair_style sinet`` (LAMMPS driven from this Python process, its plugin loaded
    before this module) has defined the operators: a second definition would fail, and its
    kernels, which do the exchange, must stay (they act as those below outside its compute)."""
    try:
        torch.ops.sinet_halo.fill
    except (AttributeError, RuntimeError):
        return False
    return True


if not _defined_elsewhere():
    torch.library.define("sinet_halo::fill", "(Tensor rows, SymInt num_nodes) -> Tensor")
    torch.library.define("sinet_halo::collect", "(Tensor grad, SymInt num_rows) -> Tensor")

    @torch.library.impl("sinet_halo::fill", "CPU")
    def _fill(rows, num_nodes):
        handler = _handler(num_nodes, rows.shape[0])
        return rows.clone() if handler is None else handler.fill(rows, num_nodes)

    @torch.library.impl("sinet_halo::collect", "CPU")
    def _collect(grad, num_rows):
        handler = _handler(grad.shape[0], num_rows)
        return grad[:num_rows].clone() if handler is None else handler.collect(grad, num_rows)


@torch.library.register_fake("sinet_halo::fill")
def _fill_shape(rows, num_nodes):
    return rows.new_empty((num_nodes,) + tuple(rows.shape[1:]))


@torch.library.register_fake("sinet_halo::collect")
def _collect_shape(grad, num_rows):
    return grad.new_empty((num_rows,) + tuple(grad.shape[1:]))


def _fill_setup(ctx, inputs, output):
    ctx.num_rows = inputs[0].shape[0]


def _collect_setup(ctx, inputs, output):
    ctx.num_nodes = inputs[0].shape[0]


torch.library.register_autograd(
    "sinet_halo::fill", lambda ctx, grad: (collect(grad, ctx.num_rows), None), setup_context=_fill_setup
)
torch.library.register_autograd(
    "sinet_halo::collect", lambda ctx, grad: (fill(grad, ctx.num_nodes), None), setup_context=_collect_setup
)


def fill(rows: torch.Tensor, num_nodes) -> torch.Tensor:
    """``(n, ...)`` features of the nodes computed here -> ``(num_nodes, ...)`` with the ghosts'."""
    return torch.ops.sinet_halo.fill(rows, num_nodes)


def collect(grad: torch.Tensor, num_rows) -> torch.Tensor:
    """``(num_nodes, ...)`` -> ``(num_rows, ...)``: the transpose of :func:`fill`."""
    return torch.ops.sinet_halo.collect(grad, num_rows)
