r"""Memory of one energy + forces call: an estimate, the automatic chunk size, a check.

One call keeps, besides the process itself (torch, the model: a few hundred MB):

* per edge of the whole system, the neighbour list and the edge vectors:
  ``int64`` indices (graph, chunk plan), ``float64`` cell shifts, the vectors in
  the network dtype and their gradients, :data:`EDGE_BYTES` ``+ 12 d`` bytes
  (``d``: bytes per number of the network dtype);
* per atom, a few ``(N, c, M)`` feature tensors and their gradients,
  :data:`ATOM_FEATURES` ``c M d`` bytes (``M = (L+1)^2``);
* per edge *being worked on*, a layer's per-edge tensors and their gradients,
  ``W d`` bytes with ``W = 2 [2 (M+1) h + 5 M c + M (h+1)]`` numbers (``h``: the
  coefficient MLP's width; the largest per-edge tensors of
  :meth:`~sinet_ase.ops.scalar_interaction.ScalarInteraction.edge_sums`). Without
  chunks every edge is worked on at once, and the layers' saved tensors stay
  for the backward pass: :data:`WHOLE_GRAPH_FACTOR` ``W d`` per edge. With
  ``edge_chunk_size`` (:mod:`sinet_ase.ops.chunking`) one chunk at a time. With the fused
  edge kernels (:mod:`sinet_ase.ops.fused`) a whole-graph pass writes no ``(E, M, c)``
  edge tensor: ``W = 2 [2 (M+1) + 6 h + 4 (L+1) c]`` there (the per-edge coefficients,
  activations and invariants; matched to the peak of the 1,029-water test of
  ``tests/test_memory.py``, a quarter of the unfused figure); a chunk keeps the unfused
  figure, which matched the measured peak of a chunked call with the kernels as well.

For the shipped ``sinet-xtb-md17`` (``c = 32, L = 2, h = 64``) in float64, ``W d`` is
53 KB: 2.6 MB per atom of liquid water (54 edges per atom within 5 Å) for a whole-graph
pass, against about 16 KB per atom plus 130 MB for a chunk of 2,500 edges (constants
fitted to the peak resident memory of ``benchmarks/bench_memory.py``, which the estimate
matches within about 30 %).

:func:`auto_chunk_size` is the chunk whose working set is :data:`CHUNK_BYTES`, used by
the calculator's default ``edge_chunk_size="auto"`` where a whole-graph pass would need
more than :data:`AUTO_CHUNK_FROM_BYTES` or, if larger, half the memory available at the call
(:func:`auto_chunk_from`, :func:`update_auto_chunks`). :func:`check_memory`
raises :class:`~sinet_ase.InsufficientMemoryError` before a call whose estimate exceeds
:data:`AVAILABLE_FRACTION` of the memory available (or a given limit), instead of letting
the operating system kill the process part-way; for a periodic structure it runs before
the neighbour list, on the pair count its density implies (:func:`periodic_edge_estimate`).
The calculator and :func:`~sinet_ase.predict` (per batch) use the same check.
"""

import time
from typing import Optional

import numpy as np
import torch

from .errors import InsufficientMemoryError
from .ops import fused

#: bytes per edge of the whole system kept besides the network dtype's: int64 edge index
#: (16), chunk order and local indices (24), float64 cell shifts (24), allocator slack
EDGE_BYTES = 120
#: ``(N, c, M)`` tensors alive at the peak of a chunked call (features of every layer, their
#: gradients, outputs; fitted)
ATOM_FEATURES = 3
#: a whole-graph pass keeps this fraction of the per-edge working set per edge (fitted)
WHOLE_GRAPH_FACTOR = 0.95
#: working set of one chunk of edges that :func:`auto_chunk_size` aims at, by device type
CHUNK_BYTES = {"cpu": 128 * 2**20, "cuda": 2 * 2**30}
#: smallest automatic chunk (below it the per-chunk overhead dominates)
MIN_CHUNK = 256
#: automatic chunks apply where a whole-graph pass would need more than this, or more than
#: :data:`WHOLE_GRAPH_SHARE` of the memory available, whichever is larger
AUTO_CHUNK_FROM_BYTES = 2 * 2**30
#: a whole-graph pass may take this share of the memory available before automatic chunks
#: apply: chunks cost about 1.5x the time of a whole pass (``benchmarks/bench_chunk_cost.py``),
#: so memory that is there is used; half of it leaves room for other processes (the check
#: refuses calls above :data:`AVAILABLE_FRACTION`)
WHOLE_GRAPH_SHARE = 0.5
#: without ``memory_limit_gib``, a call may use this fraction of the memory available when it
#: starts: a call on a large structure lasts minutes, during which other processes grow, and
#: the C library's allocator keeps freed blocks (the estimate is of the call's own tensors)
AVAILABLE_FRACTION = 0.75
#: the density estimate of the pairs of a periodic structure, times this: a liquid's first
#: shell holds more pairs than a uniform density (water: 3.4 % more within 5 Å)
PAIR_DENSITY_MARGIN = 1.1


def _sizes(model):
    config = getattr(model, "config", {})
    lmax, channels = int(config.get("lmax", 2)), int(config.get("channels", 64))
    hidden = int(config.get("mlp_hidden", 64))
    return (lmax + 1) ** 2, channels, hidden, torch.finfo(model.dtype).bits // 8


def edge_work_bytes(model) -> int:
    """``W d``: bytes per edge that one layer works on, forward and backward (module docstring)."""
    M, c, h, d = _sizes(model)
    return d * 2 * (2 * (M + 1) * h + 5 * M * c + M * (h + 1))


def whole_graph_edge_bytes(model) -> int:
    """Bytes per edge that a whole-graph pass keeps for its backward pass: :data:`WHOLE_GRAPH_FACTOR`
    ``W d``, with the fused kernels' smaller ``W`` where the model uses them (module docstring)."""
    M, c, h, d = _sizes(model)
    if fused.in_use(model):
        return int(WHOLE_GRAPH_FACTOR * d * 2 * (2 * (M + 1) + 6 * h + 4 * int(round(M**0.5)) * c))
    return int(WHOLE_GRAPH_FACTOR * edge_work_bytes(model))


def auto_chunk_size(model, device="cpu") -> int:
    """Edges per chunk whose working set is about :data:`CHUNK_BYTES` of the device type."""
    budget = CHUNK_BYTES.get(torch.device(device).type, CHUNK_BYTES["cpu"])
    return max(MIN_CHUNK, int(budget // edge_work_bytes(model)))


def auto_chunk_from(model, available: Optional[int] = None) -> int:
    """Edge count above which automatic chunks apply: where a whole-graph pass would need
    more than :data:`AUTO_CHUNK_FROM_BYTES`, or, given the bytes ``available``, more than
    :data:`WHOLE_GRAPH_SHARE` of them if that is more (smaller graphs run whole: faster,
    and through the compiled network when there is one)."""
    M, c, h, d = _sizes(model)
    budget = max(AUTO_CHUNK_FROM_BYTES, int(WHOLE_GRAPH_SHARE * available) if available else 0)
    return int(budget // (EDGE_BYTES + 12 * d + whole_graph_edge_bytes(model)))


def update_auto_chunks(model, device="cpu") -> None:
    """For a model set up with ``edge_chunk_size="auto"`` (its ``edge_chunk_from`` is set):
    move the edge count from which chunks apply (:func:`auto_chunk_from`) to the memory
    available now (read at most every :data:`MEMINFO_MAX_AGE_S` on the CPU); other models are
    left as they are. Called before each calculator call and each structure of ``predict``."""
    if model.backbone.edge_chunk_from is not None:
        model.backbone.edge_chunk_from = auto_chunk_from(model, available_bytes(device))


def estimate_call_bytes(model, num_atoms: int, num_edges: int, edge_chunk_size: Optional[int] = None) -> int:
    """Estimated peak memory (bytes) of one energy + forces (+ stress) call of ``model`` on
    ``num_atoms`` atoms with ``num_edges`` directed pairs within the cutoff, beyond what
    the process holds before it (module docstring)."""
    M, c, h, d = _sizes(model)
    per_edge = EDGE_BYTES + 12 * d
    per_atom = ATOM_FEATURES * c * M * d
    if edge_chunk_size is None or num_edges <= edge_chunk_size:
        work = whole_graph_edge_bytes(model) * num_edges
    else:
        work = edge_work_bytes(model) * edge_chunk_size
    return int(per_edge * num_edges + per_atom * num_atoms + work)


#: seconds for which a reading of ``/proc/meminfo`` serves later calls: reading it costs
#: ~15 µs, 1-2 % of a compiled MD step of a small molecule, and what other processes take
#: in that time falls in the headroom that :data:`AVAILABLE_FRACTION` leaves
MEMINFO_MAX_AGE_S = 0.1
_meminfo = (-float("inf"), None)  # (time.monotonic() of the reading, MemAvailable in bytes)


def available_bytes(device="cpu") -> Optional[int]:
    """Memory a new allocation can use: ``MemAvailable`` of ``/proc/meminfo`` on the CPU
    (read at most every :data:`MEMINFO_MAX_AGE_S` seconds), the free memory of a CUDA
    device; ``None`` where it is unknown."""
    global _meminfo
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    now = time.monotonic()
    when, available = _meminfo
    if now - when < MEMINFO_MAX_AGE_S:
        return available
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    _meminfo = (now, available)
    return available


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**29 else f"{n / 2**20:.0f} MiB"


def periodic_edge_estimate(num_atoms: int, cell, cutoff: float) -> Optional[int]:
    """Directed pairs within ``cutoff`` of a fully periodic system, ``N^2 (4/3) pi r_c^3 / V`` (a
    uniform density) times :data:`PAIR_DENSITY_MARGIN`,
    known before the neighbour list is built (which itself takes memory per pair); ``None``
    for a cell without volume. A degenerate cell (vectors nearly parallel) has millions of
    pairs per atom."""
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    if not volume > 0:
        return None
    return int(PAIR_DENSITY_MARGIN * num_atoms * num_atoms * 4.0 / 3.0 * np.pi * cutoff**3 / volume)


def check_chunk_option(edge_chunk_size) -> None:
    """Raise ``ValueError`` unless ``edge_chunk_size`` is ``"auto"``, ``None`` or a positive
    number of edges (the option of the calculator and :func:`~sinet_ase.predict`)."""
    bad = (
        edge_chunk_size != "auto"
        if isinstance(edge_chunk_size, str)
        else edge_chunk_size is not None and (isinstance(edge_chunk_size, bool) or int(edge_chunk_size) < 1)
    )
    if bad:
        raise ValueError(f"edge_chunk_size must be 'auto', None or a positive number of edges, got {edge_chunk_size!r}")


def set_edge_chunks(model, edge_chunk_size, device="cpu") -> None:
    """Set ``model.backbone``'s chunking for the ``edge_chunk_size`` option: ``"auto"``,
    chunks of :func:`auto_chunk_size` above :func:`auto_chunk_from` edges (smaller graphs
    run whole, through the compiled network when there is one); a number: chunks of that
    many edges; ``None``: left as it is (whole graphs for a model just loaded)."""
    if edge_chunk_size == "auto":
        model.backbone.edge_chunk_size = auto_chunk_size(model, device)
        model.backbone.edge_chunk_from = auto_chunk_from(model)
    elif edge_chunk_size is not None:
        model.backbone.edge_chunk_size = int(edge_chunk_size)


def check_periodic_memory(model, atoms, device="cpu", limit_bytes: Optional[int] = None) -> None:
    """:func:`check_memory` of a fully periodic ``atoms`` from its density
    (:func:`periodic_edge_estimate`), before the neighbour list is built (which itself takes
    memory per pair); nothing for other structures."""
    if not (atoms.pbc.all() and len(atoms)):
        return
    guess = periodic_edge_estimate(len(atoms), atoms.cell.array, model.cutoff)
    if guess is not None:
        check_memory(
            model, len(atoms), guess, model.backbone.chunk_size_for(guess), device, limit_bytes, estimated_edges=True
        )


def memory_limit(device="cpu", limit_bytes: Optional[int] = None, available: Optional[int] = None) -> Optional[int]:
    """The bytes a call may use: ``limit_bytes`` when given, else :data:`AVAILABLE_FRACTION`
    of :func:`available_bytes` (``available``, when already read); ``None`` if unknown."""
    if limit_bytes is not None:
        return int(limit_bytes)
    available = available_bytes(device) if available is None else available
    return None if available is None else int(AVAILABLE_FRACTION * available)


def check_memory(
    model,
    num_atoms: int,
    num_edges: int,
    edge_chunk_size: Optional[int],
    device="cpu",
    limit_bytes: Optional[int] = None,
    estimated_edges: bool = False,
) -> int:
    """Raise :class:`InsufficientMemoryError` when :func:`estimate_call_bytes` exceeds
    ``limit_bytes``, or, when that is ``None``, :data:`AVAILABLE_FRACTION` of the memory
    available now (:func:`memory_limit`). Returns the estimate.
    ``estimated_edges``: ``num_edges`` is :func:`periodic_edge_estimate`'s, not a count."""
    estimate = estimate_call_bytes(model, num_atoms, num_edges, edge_chunk_size)
    available = None if limit_bytes is not None else available_bytes(device)
    limit = memory_limit(device, limit_bytes, available)
    if limit is None or estimate <= limit:
        return estimate
    source = (
        f"the memory_limit_gib given ({_gib(limit)})"
        if limit_bytes is not None
        else f"{_gib(limit)}, {AVAILABLE_FRACTION:.0%} of the {_gib(available)} available on {device} "
        "(the rest is headroom for other processes; memory_limit_gib sets another limit)"
    )
    chunk = (
        f"edges in chunks of {edge_chunk_size:,}"
        if edge_chunk_size is not None and num_edges > edge_chunk_size
        else "all edges at once (edge_chunk_size=None)"
    )
    hints = []
    if edge_chunk_size is None or num_edges <= edge_chunk_size:
        chunked = estimate_call_bytes(model, num_atoms, num_edges, auto_chunk_size(model, device))
        hints.append(f"edge_chunk_size='auto' (about {_gib(chunked)})")
    if model.dtype == torch.float64:
        hints.append("dtype='float32' (less)")
    hints.append("a smaller structure or a machine with more memory")
    raise InsufficientMemoryError(
        f"this structure ({num_atoms:,} atoms, {'about ' if estimated_edges else ''}{num_edges:,} pairs "
        f"within the cutoff{' for its density' if estimated_edges else ''}) needs about "
        f"{_gib(estimate)} for energy and forces with {chunk} in {str(model.dtype).replace('torch.', '')}, "
        f"more than {source}; use " + ", or ".join(hints)
    )
