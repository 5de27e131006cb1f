"""Test helpers shipped with the package, so every head and model inherits them.

``random_orthogonal(parity)`` draws a rotation (times -1 for an improper one);
``rotate_features`` applies the Wigner matrices ``D^l`` of a layout to
``(n, c, M)`` features; ``rattled_ethanol``, ``triclinic_copper`` and
``backbone_features`` are the structures and the probe the model tests share.

Reference forms of Scalar Interaction (slow, plain, per edge; as e3nn keeps its slow
reference implementations beside its tests): :func:`scalar_interaction_messages` writes
steps 1-3 of :mod:`sinet_ase.ops.scalar_interaction` out on ``(E, c, M)`` edge tensors,
:func:`scalar_interaction_reference` sums them over neighbours. The production
:class:`~sinet_ase.ops.ScalarInteraction` (channels-last, linear parts regrouped per node)
is tested against them. :func:`scalar_interaction_messages_channels_last` is the per-edge
form on ``(E, M, c)`` tensors that the operation benchmark (``benchmarks/bench_ops.py``,
the paper's Figure 3 setting: messages of independent edges) times.
"""

import contextlib

import torch
from e3nn import o3

from .ops import ScalarInteraction, SphericalLayout


@contextlib.contextmanager
def default_dtype(dtype):
    """Temporarily set torch's default dtype (e3nn builds Wigner matrices from
    constants in the default dtype, so float64 checks need it), then restore it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def wigner_D(irreps, R: torch.Tensor) -> torch.Tensor:
    """Block-diagonal ``D(R)`` of ``irreps``, computed in float64."""
    with default_dtype(torch.float64):
        return irreps.D_from_matrix(R.detach().to(torch.float64))


def random_orthogonal(parity: bool, dtype=torch.float64) -> torch.Tensor:
    """A random rotation matrix, multiplied by -1 when ``parity`` (an improper rotation)."""
    with default_dtype(torch.float64):
        R = o3.rand_matrix()
    R = R.to(dtype)
    return -R if parity else R


def rotate_features(layout: SphericalLayout, h: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``h^l -> D^l(R) h^l`` for every degree, including parity ``(-1)^l`` when det R = -1."""
    D = wigner_D(layout.irreps, R).to(h.dtype)
    return layout.from_e3nn(layout.to_e3nn(h) @ D.T)


def rotate_harmonics(layout: SphericalLayout, Y: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``Y^l -> D^l(R) Y^l`` for spherical harmonics ``(E, M)``."""
    return Y @ wigner_D(layout.sh_irreps, R).to(Y.dtype).T


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max(max|b|, tiny)`` in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def rattled_ethanol(rng=None):
    """Ethanol from ``ase.build.molecule``, positions moved by N(0, 0.05 Å) when ``rng`` is given."""
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    if rng is not None:
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def triclinic_copper(rng):
    """Two Cu atoms in a triclinic cell much smaller than a 4 Å cutoff, slightly rattled."""
    import numpy as np
    from ase import Atoms

    cell = np.array([[2.6, 0.0, 0.0], [0.9, 2.4, 0.0], [0.4, 0.7, 2.5]])
    atoms = Atoms("Cu2", scaled_positions=[[0, 0, 0], [0.5, 0.45, 0.55]], cell=cell, pbc=True)
    atoms.positions += rng.normal(scale=0.05, size=(2, 3))
    return atoms


def backbone_features(model, graph) -> torch.Tensor:
    """Node features ``(N, c, M)`` of a SINet model's backbone for one graph."""
    from .model import edge_vectors, graph_batch

    vectors = edge_vectors(graph, graph.pos, graph.cell, graph_batch(graph)).to(model.dtype)
    return model.backbone(graph, vectors)


# --- reference forms of Scalar Interaction -------------------------------------------------

def _check_inputs(op: ScalarInteraction, h_dst, edge_scalars):
    if op.with_receiver and h_dst is None:
        raise ValueError("this ScalarInteraction was built with_receiver=True: pass h_dst")
    if op.num_edge_scalars and edge_scalars is None:
        raise ValueError(f"this ScalarInteraction expects {op.num_edge_scalars} edge scalars")


def scalar_interaction_messages(op: ScalarInteraction, h_src: torch.Tensor, Y: torch.Tensor,
                                h_dst=None, edge_scalars=None, edge_weight=None) -> torch.Tensor:
    """The messages ``u_ij m_ij`` of every edge, ``(E, c, M)``, as the module docstring of
    :mod:`sinet_ase.ops.scalar_interaction` defines them: invariants ``[q, h_j^0, p, h_i^0, s]``
    in the stored ``(c, L+1)`` order, the coefficient MLP, ``alpha h_j + beta Y``.

    ``h_src, h_dst (E, c, M)``, ``Y (E, M)``, ``edge_scalars (E, s)``, ``edge_weight (E,)``.
    """
    _check_inputs(op, h_dst, edge_scalars)
    layout, E = op.layout, h_src.shape[0]
    c, L = layout.channels, layout.lmax
    parts = [layout.inner_with_harmonics(h_src, Y).reshape(E, -1), h_src[:, :, 0]]  # q, h_j^0
    if op.with_receiver:
        parts += [layout.inner(h_dst, h_src).reshape(E, -1), h_dst[:, :, 0]]  # p, h_i^0
    if op.num_edge_scalars:
        parts.append(edge_scalars)
    coeff = op.coefficients(torch.cat(parts, dim=-1))
    if edge_weight is not None:
        coeff = coeff * edge_weight.unsqueeze(-1)
    alpha, beta = coeff.view(-1, 2, c, L + 1).unbind(1)  # (E, c, L+1) each
    return layout.combine_with_harmonics(alpha, h_src, beta, Y)


def scalar_interaction_reference(op: ScalarInteraction, h: torch.Tensor, edge_index: torch.Tensor,
                                 Y: torch.Tensor, edge_scalars=None, edge_weight=None,
                                 num_receivers=None) -> torch.Tensor:
    """``sum_j u_ij m_ij`` from the per-edge messages, ``(N, c, M)`` for ``h (N, c, M)``: what
    ``op(h.transpose(1, 2), edge_index, ...)`` computes channels-last (``edge_index[0]``
    receives, ``edge_index[1]`` sends; ``num_receivers`` rows when given)."""
    receiver, sender = edge_index[0], edge_index[1]
    messages = scalar_interaction_messages(op, h[sender], Y, h[receiver] if op.with_receiver else None,
                                           edge_scalars, edge_weight)
    num_rows = h.shape[0] if num_receivers is None else int(num_receivers)
    return messages.new_zeros((num_rows,) + messages.shape[1:]).index_add(0, receiver, messages)


def _inner_with_harmonics_channels_last(layout: SphericalLayout, h: torch.Tensor,
                                        Y: torch.Tensor) -> torch.Tensor:
    """``<h^{l,k}, Y^l>/sqrt(2l+1)``: ``(E, M, c) x (E, M) -> (E, L+1, c)``, one batched
    product with an ``(E, L+1, M)`` left factor (slices and sums while ``torch.compile``
    traces, which inductor fuses)."""
    if torch.compiler.is_compiling():
        return layout.degree_sum_channels_last(h * Y.unsqueeze(-1))
    return torch.bmm(Y.unsqueeze(1) * layout.inner_product.t(), h)


def _combine_with_harmonics_channels_last(layout: SphericalLayout, alpha, h, beta, Y) -> torch.Tensor:
    """``alpha^{l,k} h^{l,k} + beta^{l,k} Y^l``: ``alpha, beta (E, L+1, c)``, ``h (E, M, c)``,
    ``Y (E, M)`` -> ``(E, M, c)``; the ``Y`` term one batched product added by ``baddbmm``
    (element-wise while ``torch.compile`` traces, which inductor fuses)."""
    if torch.compiler.is_compiling():
        return (layout.per_degree_channels_last(alpha) * h
                + layout.per_degree_channels_last(beta) * Y.unsqueeze(-1))
    return torch.baddbmm(layout.per_degree_channels_last(alpha) * h,
                         Y.unsqueeze(-1) * layout.degree_onehot.t(), beta)


def scalar_interaction_messages_channels_last(op: ScalarInteraction, h_src: torch.Tensor,
                                              Y: torch.Tensor, h_dst=None, edge_scalars=None,
                                              edge_weight=None) -> torch.Tensor:
    """:func:`scalar_interaction_messages` on channels-last edge tensors: ``h_src, h_dst
    (E, M, c)`` -> ``(E, M, c)``. The stored MLP weights are read in ``(L+1, c)`` order
    (the module's ``edge_columns``, ``src_columns``, ``dst_columns``, ``output_rows``), so
    no invariant or coefficient is transposed."""
    _check_inputs(op, h_dst, edge_scalars)
    layout, E = op.layout, h_src.shape[0]
    c, L = layout.channels, layout.lmax
    parts = [_inner_with_harmonics_channels_last(layout, h_src, Y).reshape(E, -1)]  # q (E, (L+1) c)
    if op.with_receiver:
        parts.append(layout.degree_sum_channels_last(h_dst * h_src).reshape(E, -1))  # p
    if op.num_edge_scalars:
        parts.append(edge_scalars)
    first, activation, last = op.coefficients
    scalar_terms = op._first_layer_term(h_src, op.src_columns, with_bias=not op.with_receiver)
    if op.with_receiver:
        scalar_terms = scalar_terms + op._first_layer_term(h_dst, op.dst_columns, with_bias=True)
    hidden = activation(torch.addmm(scalar_terms, torch.cat(parts, dim=-1),
                                    first.weight.index_select(1, op.edge_columns).t()))
    coeff = torch.nn.functional.linear(hidden, last.weight.index_select(0, op.output_rows),
                                       last.bias.index_select(0, op.output_rows))
    if edge_weight is not None:
        coeff = coeff * edge_weight.unsqueeze(-1)
    alpha, beta = coeff.view(-1, 2, L + 1, c).unbind(1)  # (E, L+1, c) each
    return _combine_with_harmonics_channels_last(layout, alpha, h_src, beta, Y)


def emt_frames(formula: str, n: int, seed: int, rattle: float = 0.08):
    """``n`` rattled copies of ``ase.build.molecule(formula)`` labelled with ASE's EMT
    energy and forces (fast, deterministic): training data for tests."""
    import numpy as np
    from ase.build import molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule(formula)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


class FullDiskFile:
    """A file handle on a disk that fills up after ``room`` more bytes: a write that does
    not fit writes what fits, then raises ``OSError(ENOSPC)`` as a real full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data):
        import errno
        import os

        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def domain_test_structures(seed: int = 0):
    """Three small structures in LAMMPS's cell form (lower-triangular cell, positive
    diagonal), each rattled: ``"triclinic"`` (Cu with two O, periodic, tilted cell),
    ``"slab"`` (a Cu(111) slab with an O adatom, periodic in x and y) and ``"molecule"``
    (ethanol and a water molecule in a 16 Å box, no periodicity). The deployed-model and
    LAMMPS tests compare them with the calculator."""
    import numpy as np
    from ase import Atoms
    from ase.build import bulk, fcc111, molecule

    rng = np.random.default_rng(seed)
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    crystal.symbols[[1, 6]] = "O"
    cell = crystal.cell.array.copy()
    cell[1, 0], cell[2, 0], cell[2, 1] = 0.7, 0.3, -0.4
    crystal.set_cell(cell, scale_atoms=True)
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0, orthogonal=False)
    slab += Atoms("O", positions=[slab.positions[-1] + [1.2, 0.7, 1.5]])
    system = molecule("CH3CH2OH")
    water = molecule("H2O")
    water.positions += [3.5, 0.5, 0.3]
    system += water
    system.cell = np.diag([16.0, 16.0, 16.0])
    system.positions += 8.0 - system.positions.mean(axis=0)
    system.pbc = False
    structures = {"triclinic": crystal, "slab": slab, "molecule": system}
    for atoms in structures.values():
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.wrap()
    return structures
