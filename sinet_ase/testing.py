"""Test helpers shipped with the package, so every head and model inherits them.

``random_orthogonal(parity)`` draws a rotation (times -1 for an improper one);
``rotate_features`` applies the Wigner matrices ``D^l`` of a layout to
``(n, c, M)`` features; ``rattled_ethanol``, ``triclinic_copper`` and
``backbone_features`` are the structures and the probe the model tests share;
``small_sinet`` builds the small energy model they run on; ``TOLERANCE`` is the
relative error allowed per dtype.

Model-test mixins (NequIP's habit: one contract, inherited by every model kind):
:class:`ModelTests` checks what any model on atoms must satisfy (O(3) equivariance with
parity and translation, permutation, a batch equal to its structures one at a time,
smoothness as an atom crosses the cutoff); :class:`EnergyModelTests` adds what an energy
model must satisfy (finite-difference forces and stress, additivity of far-apart systems,
per-atom energies, float32 against float64, backbone equivariance at every degree). A
test class inherits one and says how to build and evaluate its model::

    class TestSiFormer(EnergyModelTests):
        model_options = {"backbone": "siformer", "num_heads": 2}

The mixins need pytest (``sinet-ase[test]``); the helpers above do not.

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
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from e3nn import o3

try:
    import pytest
except ImportError:  # the helpers work without pytest; the mixins' marks become no-ops
    pytest = None

from .ops import ScalarInteraction, SphericalLayout

#: relative error allowed per dtype (e3nn's habit: measured in float64, 1e-9 or 1e-4)
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


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


def scalar_interaction_messages(
    op: ScalarInteraction, h_src: torch.Tensor, Y: torch.Tensor, h_dst=None, edge_scalars=None, edge_weight=None
) -> torch.Tensor:
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


def scalar_interaction_reference(
    op: ScalarInteraction,
    h: torch.Tensor,
    edge_index: torch.Tensor,
    Y: torch.Tensor,
    edge_scalars=None,
    edge_weight=None,
    num_receivers=None,
) -> torch.Tensor:
    """``sum_j u_ij m_ij`` from the per-edge messages, ``(N, c, M)`` for ``h (N, c, M)``: what
    ``op(h.transpose(1, 2), edge_index, ...)`` computes channels-last (``edge_index[0]``
    receives, ``edge_index[1]`` sends; ``num_receivers`` rows when given)."""
    receiver, sender = edge_index[0], edge_index[1]
    messages = scalar_interaction_messages(
        op, h[sender], Y, h[receiver] if op.with_receiver else None, edge_scalars, edge_weight
    )
    num_rows = h.shape[0] if num_receivers is None else int(num_receivers)
    return messages.new_zeros((num_rows,) + messages.shape[1:]).index_add(0, receiver, messages)


def _inner_with_harmonics_channels_last(layout: SphericalLayout, h: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
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
        return layout.per_degree_channels_last(alpha) * h + layout.per_degree_channels_last(beta) * Y.unsqueeze(-1)
    return torch.baddbmm(layout.per_degree_channels_last(alpha) * h, Y.unsqueeze(-1) * layout.degree_onehot.t(), beta)


def scalar_interaction_messages_channels_last(
    op: ScalarInteraction, h_src: torch.Tensor, Y: torch.Tensor, h_dst=None, edge_scalars=None, edge_weight=None
) -> torch.Tensor:
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
    hidden = activation(
        torch.addmm(scalar_terms, torch.cat(parts, dim=-1), first.weight.index_select(1, op.edge_columns).t())
    )
    coeff = torch.nn.functional.linear(
        hidden, last.weight.index_select(0, op.output_rows), last.bias.index_select(0, op.output_rows)
    )
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


def small_sinet(
    elements: Sequence[str],
    dtype=torch.float64,
    cutoff: float = 4.0,
    lmax: int = 2,
    channels: int = 8,
    num_layers: int = 2,
    seed: int = 0,
    **options,
):
    """A small SINet energy model (``mlp_hidden = radial_hidden = 16``, ``avg_num_neighbors = 6``
    unless given) with random weights from ``seed``, in ``dtype`` and eval mode."""
    from .model import SINet

    torch.manual_seed(seed)
    options = {"mlp_hidden": 16, "radial_hidden": 16, "avg_num_neighbors": 6.0, **options}
    model = SINet(
        elements=list(elements), cutoff=cutoff, lmax=lmax, channels=channels, num_layers=num_layers, **options
    )
    return model.to(dtype).eval()


# --- model-test mixins ------------------------------------------------------------------------


def _mark(name: str, *args, **kwargs):
    """``pytest.mark.<name>(*args, **kwargs)``, or a no-op decorator without pytest."""
    if pytest is None:
        return lambda f: f
    return getattr(pytest.mark, name)(*args, **kwargs)


def _fixture(f):
    return f if pytest is None else pytest.fixture(f)


_PARITY = _mark("parametrize", "parity", [False, True], ids=["proper", "improper"])
_DTYPE = _mark("parametrize", "dtype", [torch.float32, torch.float64], ids=["float32", "float64"])


def _max_error(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    """``max|a - b| / max(max|scale|, tiny)`` in float64."""
    a, b, scale = a.detach().double(), b.detach().double(), scale.detach().double()
    return float((a - b).abs().max() / scale.abs().max().clamp_min(1e-300))


class ModelTests:
    """What every model on atoms satisfies, for the outputs it declares.

    A subclass sets (class attributes, or properties):

    * ``elements``: the elements its models know;
    * ``per_structure``, ``per_atom``: ``{output name: rank}`` with rank 0 (invariant) or 1
      (a polar vector: ``v -> R v``, also for improper ``R``); per-atom outputs are rows of
      the batch's atoms;
    * ``model_options``: keywords every model of the class is built with;

    and implements ``build(elements, dtype, **options)`` (a small model with random weights,
    eval mode; ``options`` may set ``cutoff``, ``lmax``, ``channels``, ``seed``) and
    ``evaluate(model, structures)`` (a dict of tensors for a list of ``ase.Atoms``, batched).
    The fixture ``make_model`` gives ``build`` with the class's ``model_options``.
    """

    elements: Sequence[str] = ("H", "C", "O")
    per_structure: Dict[str, int] = {}
    per_atom: Dict[str, int] = {}
    model_options: Dict[str, Any] = {}
    #: degree of the model in the equivariance test
    equivariance_lmax: int = 3

    def build(self, elements, dtype=torch.float64, **options):
        raise NotImplementedError

    def evaluate(self, model, structures) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    @_fixture
    def rng(self):
        return np.random.default_rng(0)

    @_fixture
    def make_model(self):
        """``make_model(elements=None, dtype=float64, **options)``: a small model of this class."""

        def make(elements=None, dtype=torch.float64, **options):
            return self.build(list(elements or self.elements), dtype, **{**self.model_options, **options})

        return make

    def structures(self, rng) -> List:
        """Small molecules of the class's elements (a batch for the batch test)."""
        from ase.build import molecule

        names = [
            name
            for name in ("CH3CH2OH", "H2O", "NH3", "CH4", "HCN", "CF4", "H2")
            if set(molecule(name).get_chemical_symbols()) <= set(self.elements)
        ]
        out = []
        for name in names[:4]:
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            out.append(atoms)
        return out

    def _outputs(self, model, structures):
        out = self.evaluate(model, structures)
        return {k: out[k] for k in list(self.per_structure) + list(self.per_atom)}

    @_PARITY
    @_DTYPE
    def test_equivariant_under_rotation_inversion_and_translation(self, make_model, parity, dtype, rng):
        """Rank-0 outputs unchanged, rank-1 outputs rotated, when every position moves by
        ``x -> R x + t`` with ``R`` in O(3)."""
        model = make_model(dtype=dtype, lmax=self.equivariance_lmax)
        structures = self.structures(rng)
        R = random_orthogonal(parity).numpy()
        moved = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.set_cell(atoms.cell.array @ R.T)  # periodic images move with the atoms
            atoms.positions = atoms.positions @ R.T + np.array([3.0, 0.1, -7.0])
            moved.append(atoms)
        before, after = self._outputs(model, structures), self._outputs(model, moved)
        R = torch.tensor(R)
        tol = TOLERANCE[dtype] * 10
        for name, rank in {**self.per_structure, **self.per_atom}.items():
            expected = before[name] @ R.T.to(before[name].dtype) if rank == 1 else before[name]
            assert relative_error(after[name], expected) < tol, name
            if rank == 1:
                assert before[name].abs().max() > 1e-4, f"{name} is ~0: the check means nothing"

    @_DTYPE
    def test_permutation_equivariant(self, make_model, dtype, rng):
        """Reordering the atoms reorders the per-atom outputs and leaves the rest unchanged."""
        model = make_model(dtype=dtype)
        atoms = self.structures(rng)[0]
        perm = rng.permutation(len(atoms))
        before, after = self._outputs(model, [atoms]), self._outputs(model, [atoms[perm]])
        tol = TOLERANCE[dtype] * 10
        for name in self.per_structure:
            assert relative_error(after[name], before[name]) < tol, name
        for name in self.per_atom:
            assert relative_error(after[name], before[name][torch.as_tensor(perm)]) < tol, name

    @_DTYPE
    def test_batch_equals_one_at_a_time(self, make_model, dtype, rng):
        """A batch of structures gives each structure's outputs alone (errors on the scale of
        the batch: a symmetric structure has outputs ~0 by symmetry)."""
        model = make_model(dtype=dtype)
        structures = self.structures(rng)
        batched = self._outputs(model, structures)
        singles = [self._outputs(model, [atoms]) for atoms in structures]
        tol = TOLERANCE[dtype] * 10
        for name in self.per_structure:
            joined = torch.cat([single[name] for single in singles])
            assert _max_error(batched[name], joined, batched[name]) < tol, name
        for name in self.per_atom:
            joined = torch.cat([single[name] for single in singles])
            assert _max_error(batched[name], joined, batched[name]) < tol, name

    @_mark("parametrize", "partner", ["only_neighbour", "one_of_many"])
    def test_smooth_as_an_atom_crosses_the_cutoff(self, make_model, partner):
        """Outputs continuous at ``r_c``, also when the entering atom is the only neighbour of
        its receiver (where a softmax without a sink would jump from 0 to 1)."""
        from ase import Atoms
        from ase.build import molecule

        model = make_model(elements=sorted(set(self.elements) | {"H", "O"}), cutoff=3.0)
        base = molecule("H2O")
        direction = np.array([1.0, 0.0, 0.0] if partner == "only_neighbour" else [0.0, 1.0, 0.0])

        def outputs(d):
            atoms = base + Atoms("H", positions=[base.positions[0] + d * direction])
            return self._outputs(model, [atoms]), self.num_edges(model, atoms)

        # the outputs also depend on d smoothly (the test atom's other neighbours, a dipole's
        # positions): a jump across r_c is measured against the change over the same step
        # just outside, where nothing enters or leaves
        eps = 1e-9
        (inside, n_in), (outside, n_out) = outputs(3.0 - eps), outputs(3.0 + eps)
        (beyond, _), (near, _) = outputs(3.0 + 3 * eps), outputs(2.5)
        assert n_in > n_out, "the test atom must enter the neighbour list"
        for name in list(self.per_structure) + list(self.per_atom):
            scale = max(float(outside[name].detach().abs().max()), 1.0)
            tol = 1e-9 if name in self.per_structure else 1e-6  # per-atom: forces, derivatives
            jump = float((inside[name] - outside[name]).detach().abs().max())
            drift = float((beyond[name] - outside[name]).detach().abs().max())
            assert jump < tol * scale + 2 * drift, (name, jump, drift)
        assert any(float((near[k] - outside[k]).detach().abs().max()) > 1e-6 for k in self.per_structure), (
            "the test atom must interact inside the cutoff"
        )

    def num_edges(self, model, atoms) -> int:
        from .graph import atoms_to_graph

        return int(atoms_to_graph(atoms, float(model.config["cutoff"])).edge_index.shape[1])


class EnergyModelTests(ModelTests):
    """:class:`ModelTests` for energy models (``SINet`` with any backbone), plus conservative
    forces and stress (finite differences through the calculator), additivity of far-apart
    systems, per-atom energies that sum to the energy, float32 against float64, and the
    backbone's features equivariant at every degree ``L = 0..6``."""

    elements = ("H", "C", "O", "Cu")
    per_structure = {"energy": 0}
    per_atom = {"forces": 1, "energies": 0}

    def build(self, elements, dtype=torch.float64, **options):
        return small_sinet(elements, dtype, **options)

    def evaluate(self, model, structures):
        from .graph import atoms_to_graph, batch_graphs

        graphs = [atoms_to_graph(atoms, model.cutoff) for atoms in structures]
        return model(batch_graphs(graphs), compute_stress=any(atoms.pbc.any() for atoms in structures))

    def structures(self, rng):
        from ase.build import bulk, molecule

        return [rattled_ethanol(rng), triclinic_copper(rng), bulk("Cu", "fcc", a=3.6) * (2, 1, 1), molecule("H2O")]

    @_mark("parametrize", "lmax", range(7))
    @_PARITY
    @_DTYPE
    def test_backbone_equivariant(self, make_model, lmax, parity, dtype, rng):
        """Node features ``h^l -> D^l(R) h^l`` (parity ``(-1)^l``) for ``x -> R x + t`` at every
        degree up to 6, proper and improper ``R``; the ``l > 0`` features are not ~0."""
        from .graph import atoms_to_graph

        model = make_model(elements=["H", "C", "O"], dtype=dtype, lmax=lmax, channels=4, seed=lmax)
        atoms = rattled_ethanol(rng)
        R = random_orthogonal(parity).numpy()
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ R.T + np.array([1.0, -2.0, 0.5])
        h = backbone_features(model, atoms_to_graph(atoms, model.cutoff))
        h_rot = backbone_features(model, atoms_to_graph(rotated, model.cutoff))
        expected = rotate_features(model.backbone.layout, h, torch.tensor(R))
        assert lmax == 0 or h[:, :, 1:].abs().max() > 1e-3
        assert relative_error(h_rot, expected) < TOLERANCE[dtype]

    def test_stress_of_a_batch_equals_one_at_a_time(self, make_model, rng):
        model = make_model()
        structures = self.structures(rng)
        batched = self.evaluate(model, structures)["stress"]
        periodic = [k for k, atoms in enumerate(structures) if atoms.pbc.any()]
        singles = torch.cat([self.evaluate(model, [structures[k]])["stress"] for k in periodic])
        assert _max_error(batched[periodic], singles, batched[periodic]) < 1e-8

    def test_per_atom_energies_sum_and_forces_sum_to_zero(self, make_model, rng):
        model = make_model(elements=["H", "C", "O"])
        out = self.evaluate(model, [rattled_ethanol(rng)])
        assert abs(float((out["energies"].sum() - out["energy"].sum()).detach())) < 1e-12
        assert float(out["forces"].detach().sum(0).abs().max()) < 1e-12

    @_mark(
        "parametrize",
        "system",
        [
            "molecule",
            "triclinic",
            "slab",
            *([] if pytest is None else [pytest.param("molecule_all_atoms", marks=pytest.mark.slow)]),
        ],
    )
    def test_forces_match_finite_differences(self, make_model, system, rng):
        """Forces through the calculator against central differences of its energy (in the
        inner loop the molecule's C, O and one H; every atom in the slow variant)."""
        from ase.build import fcc111
        from ase.calculators.fd import calculate_numerical_forces

        from .calculator import SINetCalculator

        iatoms = None
        if system.startswith("molecule"):
            atoms, elements = rattled_ethanol(rng), ["H", "C", "O"]
            iatoms = [0, 2, 8] if system == "molecule" else None  # C, O, H
        elif system == "triclinic":
            atoms, elements = triclinic_copper(rng), ["Cu"]
        else:
            atoms, elements = fcc111("Cu", (1, 1, 3), vacuum=4.0), ["Cu"]
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = SINetCalculator(make_model(elements=elements))
        analytic = atoms.get_forces()[slice(None) if iatoms is None else iatoms]
        numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=iatoms)
        assert np.abs(analytic).max() > 1e-3, "forces too small for the check to mean anything"
        np.testing.assert_allclose(analytic, numeric, atol=1e-7 + 1e-6 * np.abs(analytic).max())

    def test_stress_matches_finite_differences_on_small_triclinic_cell(self, make_model, rng):
        from ase.calculators.fd import calculate_numerical_stress

        from .calculator import SINetCalculator

        atoms = triclinic_copper(rng)
        atoms.calc = SINetCalculator(make_model(elements=["Cu"]))
        analytic = atoms.get_stress()
        numeric = calculate_numerical_stress(atoms, eps=1e-5)
        assert np.abs(analytic).max() > 1e-4
        np.testing.assert_allclose(analytic, numeric, atol=1e-8 + 1e-6 * np.abs(analytic).max())

    def test_far_apart_molecules_add_up(self, make_model, rng):
        from ase.build import molecule

        model = make_model(elements=["H", "C", "O"])
        a, b = rattled_ethanol(rng), molecule("H2O")
        b.positions += [100.0, 0.0, 0.0]

        def energy(atoms):
            return float(self.evaluate(model, [atoms])["energy"].sum())

        together, apart = energy(a + b), energy(a) + energy(b)
        assert abs(together - apart) < 1e-10 * max(1.0, abs(apart))

    def test_float32_and_float64_agree(self, make_model, rng):
        atoms = rattled_ethanol(rng)
        e64 = float(self.evaluate(make_model(elements=["H", "C", "O"]), [atoms])["energy"].sum())
        e32 = float(self.evaluate(make_model(elements=["H", "C", "O"], dtype=torch.float32), [atoms])["energy"].sum())
        assert abs(e64 - e32) < 1e-4 * max(1.0, abs(e64))
