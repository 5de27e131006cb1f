r"""A SINet energy model as a compiled package that runs without Python (LAMMPS, C++).

:func:`export_model` writes an AOTInductor package (``.pt2``): ``torch.export`` of the
function below, compiled by inductor into a shared library with the weights inside, loaded
in C++ by ``torch::inductor::AOTIModelPackageLoader`` (libtorch only, no Python) and in
Python by ``torch._inductor.aoti_load_package``. TorchScript is not an option: scripting
the model fails on e3nn's modules.

The exported function works on the graph of one domain of a domain-decomposed MD code,
whose edges carry their vectors, so that periodic images need no cell shifts. Its nodes are
the ``n`` nodes the domain computes (two padding nodes, then the atoms it owns), followed by
ghost nodes, copies of other domains' atoms within one cutoff, which only send messages;
its edges are the edges into the computed nodes:

inputs (``N`` nodes, ``n`` of them computed here, ``E`` edges)
    ``species (N,)`` int64, model species indices (0 .. len(elements) - 1);
    ``local (n,)`` float64, 1 for a node whose energy counts (an atom the domain owns), else 0;
    ``edge_index (2, E)`` int64 (row 0 receives, a node ``< n``; row 1 sends, any node) and
    ``vectors (E, 3)`` float64, ``r_ij = x_j - x_i`` (Å).
outputs
    ``energy ()`` = ``sum_i local_i E_i`` (eV), ``energies (n,)`` the per-node ``E_i``, and
    ``dE/d vectors (E, 3)`` (eV/Å).

Before each layer the ghosts' features must be those their owners computed: the function
calls the halo exchange (:mod:`sinet_ase.ops.halo`: ``fill`` before each layer, and its
transpose ``collect`` in the backward pass), which ``pair_style sinet`` implements with
LAMMPS's forward and reverse communication. So each domain does the work of its own atoms
only, whatever the number of layers, and needs ghosts one cutoff deep. Where every atom is
a computed node (one process, the check against the calculator) the exchange copies.

Forces and virial follow from the edge gradients ``g_e = dE/d vectors[e]``
(:func:`forces_and_virial`): ``r_e = x_j - x_i`` gives ``F_i += g_e``, ``F_j -= g_e`` and
the virial ``W = -sum_e r_e (x) g_e`` (LAMMPS's sign: ``W = sum_i x_i (x) F_i``; ASE's
stress is ``-W / V``). Forces on ghost nodes are what a domain-decomposed code sums back onto
the atoms' owners (LAMMPS's reverse communication).

Dynamic sizes: ``N >= 2``, ``n >= 2`` and ``E >= 2`` (``torch.export`` fixes sizes 0 and 1):
callers put two dummy nodes first, joined by two edges longer than the cutoff
(:func:`pad_graph`), whose messages are exactly zero (the envelope vanishes there) and
whose energies the mask drops.

The package's metadata (``AOTIModelPackageLoader::get_metadata``) holds the format name and
version, the elements in species order, the cutoff, ``num_layers``, the dtype and the
width of the exchanged features, so that a reader maps its atom types without Python.
"""

from pathlib import Path
from typing import Dict, Union

import numpy as np
import torch
from .errors import ModelFileError
from .ops import fused, halo

FORMAT_NAME = "sinet-ase-lammps"
# 3: one edge list into the computed nodes, ghosts' features by halo exchange (1 and 2: an
# edge list per step over a ghost shell num_layers + 1 cutoffs deep)
FORMAT_VERSION = 3

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ExportedEnergy(torch.nn.Module):
    """The function that :func:`export_model` compiles (see the module docstring).

    ``forward(species, local, edge_index, vectors)`` -> ``(energy, energies, grad)``. Same
    energies as :class:`~sinet_ase.SINet` on the structure's whole graph (tested); forces
    come from the edge gradients computed inside, by autograd.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        if type(model).__name__ != "SINet":
            raise TypeError(f"only SINet energy models export, got {type(model).__name__}")
        if model.backbone.edge_chunk_size is not None:
            raise ValueError("export a model without edge_chunk_size")
        self.model = model

    def node_energies(self, species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor, n):
        """``E_i`` of the ``n`` computed nodes ``(n,)``, float64; ghosts' features by halo exchange."""
        model, backbone = self.model, self.model.backbone
        num_nodes = species.shape[0]
        edge_inputs = backbone.edge_geometry(vectors.to(model.dtype))  # geometry arrives in float64
        h = backbone.embedding(species, edge_index, *edge_inputs, num_receivers=n)
        scalars = None
        for t, layer in enumerate(backbone.layers, start=1):
            h_all = halo.fill(h, num_nodes)  # (N, c, M): the ghosts' rows from their owners
            if backbone.backbone_type != "sinet":  # a whole block, then the computed rows
                h = layer(h_all, edge_index, *edge_inputs)[:n]
            elif t == len(backbone.layers):  # the energy reads h^0 only
                scalars = layer.forward_scalars(h_all, edge_index, *edge_inputs, num_receivers=n)
            else:
                h = layer(h_all, edge_index, *edge_inputs, num_receivers=n)
        if scalars is None:
            scalars = h[:, :, 0]
        out = model.energy_mlp(scalars).squeeze(-1).to(torch.float64)
        energies = out * model.energy_scale + model.energy_shift[species[:n]]
        if getattr(model, "zbl", None) is not None:
            energies = energies + model.zbl(species, edge_index, vectors, dense=True)[:n]
        return energies

    def forward(self, species: torch.Tensor, local: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor):
        vectors = vectors.detach().requires_grad_(True)
        energies = self.node_energies(species, edge_index, vectors, local.shape[0])
        energy = (energies * local).sum()
        (grad,) = torch.autograd.grad(energy, [vectors])
        return energy.detach(), energies.detach(), grad


def pad_graph(
    species: torch.Tensor, local: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor, cutoff: float
):
    """The exported function's inputs for a graph: two dummy nodes (species 0, computed, not
    local) put first (the real nodes shift by 2), joined both ways by edges of length
    ``2 cutoff`` that come first in the edge list. The function needs at least two nodes,
    computed nodes and edges, and the dummies add exactly zero to every real node (the
    envelope is zero beyond the cutoff, and they only send to each other).

    ``local (n,)``: the computed nodes' mask (the first ``n`` nodes; ghosts follow).
    Returns ``(species, local, edge_index, vectors)``."""
    species = torch.cat([species.new_zeros(2), species])
    local = torch.cat([local.new_zeros(2), local])
    dummy_index = torch.tensor([[0, 1], [1, 0]], dtype=torch.long)
    dummy_vectors = torch.tensor([[2.0 * cutoff, 0.0, 0.0], [-2.0 * cutoff, 0.0, 0.0]], dtype=vectors.dtype)
    return species, local, torch.cat([dummy_index, edge_index + 2], dim=1), torch.cat([dummy_vectors, vectors])


def domain_inputs(species, edge_index, vectors, is_local, cutoff: float):
    """The exported function's inputs for one domain, as ``pair_style sinet`` builds them, in
    Python (for checks and benchmarks): the domain's atoms (``is_local``), then every other
    atom that sends to one of them (a ghost node), and the edges into the domain's atoms,
    padded by :func:`pad_graph`.

    ``species (A,)``, ``edge_index (2, A_E)`` over atoms (row 0 receives), ``vectors (A_E, 3)``
    and ``is_local (A,)`` bool, for the ``A`` atoms of the whole structure. Returns
    ``(inputs, atoms_of_node, kept)``: the atom of each real node (``(n_nodes,)``) and the mask
    of the edges the domain holds, in the order of its edge list after the two dummies."""
    is_local = torch.as_tensor(is_local, dtype=torch.bool)
    kept = is_local[edge_index[0]]
    sends = torch.zeros_like(is_local)
    sends[edge_index[1, kept]] = True
    atoms_of_node = torch.cat([torch.nonzero(is_local).flatten(), torch.nonzero(sends & ~is_local).flatten()])
    node_of_atom = torch.full((is_local.shape[0],), -1, dtype=torch.long)
    node_of_atom[atoms_of_node] = torch.arange(atoms_of_node.shape[0])
    local = torch.ones(int(is_local.sum()), dtype=torch.float64)
    inputs = pad_graph(species[atoms_of_node], local, node_of_atom[edge_index[:, kept]], vectors[kept], cutoff)
    return inputs, atoms_of_node, kept


def _example_inputs(num_species: int):
    """A small random graph for tracing: sizes all different and above 1, so that no
    dimension is specialised or tied to another by accident; edges go into the computed
    nodes and come from any node."""
    generator = torch.Generator().manual_seed(0)
    num_nodes, computed, num_edges = 11, 6, 13
    species = torch.randint(0, num_species, (num_nodes,), generator=generator)
    local = torch.tensor([0.0, 0.0] + [1.0] * (computed - 2), dtype=torch.float64)
    index = torch.stack(
        [
            torch.randint(0, computed, (num_edges,), generator=generator),
            torch.randint(0, num_nodes, (num_edges,), generator=generator),
        ]
    )
    vectors = torch.randn(num_edges, 3, generator=generator, dtype=torch.float64) + 1.5
    return species, local, index, vectors


def export_program(model: torch.nn.Module, dtype: str = "float64", fused_kernels: fused.FusedOption = "auto"):
    """``torch.export`` program of :class:`ExportedEnergy` with dynamic node and edge counts.

    The autograd call inside the function is first traced into plain operators
    (``make_fx``, symbolic shapes): ``torch.export`` does not trace ``torch.autograd.grad``
    itself. With the fused edge kernels (``fused_kernels``: ``"auto"`` where this machine
    can build them), the program calls them as the operators ``sinet_fused::*``, which
    ``pair_style sinet`` compiles in.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    from .inference import prepare_model

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    model = prepare_model(model, "cpu", dtype)  # a copy, weights frozen, eval mode
    model.disable_compile()
    fused.set_fused(model, fused.resolve_option(fused_kernels, torch.device("cpu"), build_now=True))
    wrapper = ExportedEnergy(model).eval()
    inputs = _example_inputs(len(model.elements))
    with fused.exporting():
        traced = make_fx(wrapper, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    nodes, computed, edges = (torch.export.Dim(name, min=2) for name in ("num_nodes", "num_computed", "num_edges"))
    shapes = ({0: nodes}, {0: computed}, {1: edges}, {0: edges})
    return torch.export.export(traced, inputs, dynamic_shapes=shapes), model


def export_metadata(model: torch.nn.Module, dtype: str) -> Dict[str, str]:
    """The package metadata (strings only: AOTInductor stores a ``str -> str`` map)."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "elements": " ".join(model.elements),
        "cutoff": repr(float(model.cutoff)),
        "num_layers": str(len(model.backbone.layers)),
        # numbers per node that each halo exchange moves (channels x (L + 1)^2)
        "halo_width": str(model.backbone.layout.channels * model.backbone.layout.num_m),
        "dtype": dtype,
        # "1": the program calls the fused kernels' operators (sinet_fused::*)
        "fused_kernels": str(int(fused.in_use(model))),
    }


def export_model(
    model: Union[str, Path, torch.nn.Module],
    path: Union[str, Path],
    dtype: str = "float64",
    num_threads: int = 1,
    fused_kernels: fused.FusedOption = "auto",
) -> Path:
    """Compile ``model`` (a model object, model file or shipped potential's name) into an
    AOTInductor package at ``path`` (``.pt2``); returns the path.

    ``dtype``: the network's precision (geometry and energies stay float64 either way).
    ``num_threads``: threads the generated kernels run on (inductor writes the count into
    the code; ATen calls inside follow the run-time setting, which pair_style sinet sets to
    LAMMPS's threads per process): 1 (default) for one thread per MPI process, the usual
    LAMMPS setup; match ``OMP_NUM_THREADS`` otherwise. ``fused_kernels``: the edge work
    through the fused kernels (:mod:`sinet_ase.ops.fused`; ``"auto"``: where this machine can
    build them; ``False``: inductor's own loops), which ``pair_style sinet`` carries. Compiling
    takes a minute or two (a C++ compiler runs). The file is written atomically: a failed
    export leaves no file behind.
    """
    from .files import atomic_write

    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"an AOTInductor package must end in .pt2, got {path.name!r}")
    if int(num_threads) < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    program, prepared = export_program(model, dtype, fused_kernels)
    options = {
        "aot_inductor.metadata": dict(export_metadata(prepared, dtype), num_threads=str(int(num_threads))),
        "cpp.threads": int(num_threads),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".compiling.pt2")
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(temporary), inductor_configs=options)
        data = temporary.read_bytes()
    finally:
        temporary.unlink(missing_ok=True)
    atomic_write(path, lambda handle: handle.write(data))
    return path


def read_metadata(package) -> Dict[str, str]:
    """The metadata of a loaded package, checked to be one :func:`export_model` wrote."""
    metadata = dict(package.get_metadata())
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError("this .pt2 package was not written by sinet_ase.deploy.export_model")
    version = int(metadata.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"package format version {version} is newer than this sinet-ase reads ({FORMAT_VERSION}); upgrade sinet-ase"
        )
    if version < FORMAT_VERSION:
        raise ModelFileError(
            f"package format version {version} is older than this sinet-ase reads ({FORMAT_VERSION}); "
            "export the model again (sinet-lammps-export)"
        )
    return metadata


def load_exported(path: Union[str, Path]):
    """Load a package written by :func:`export_model` in Python: ``(runner, metadata)``;
    ``runner(*inputs)`` is the exported function."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} does not exist")
    try:
        runner = torch._inductor.aoti_load_package(str(path))
    except RuntimeError as err:
        # a package that calls the fused kernels loads only once their operators are registered
        if "sinet_fused" not in str(err):
            raise
        if fused.kernels(build=True) is None:
            raise ModelFileError(
                f"{path} calls the fused edge kernels, which cannot be built here ({fused.build_error()}); "
                "export it again with fused_kernels=False"
            ) from None
        runner = torch._inductor.aoti_load_package(str(path))
    return runner, read_metadata(runner)


def forces_and_virial(edge_index: torch.Tensor, vectors: torch.Tensor, edge_grad: torch.Tensor, num_nodes: int):
    """``F (N, 3)`` and ``W (3, 3)`` from the total edge gradients ``g = dE/dr (E, 3)``:
    ``F_i += g``, ``F_j -= g`` for ``r = x_j - x_i``, and ``W = -sum_e r_e (x) g_e``."""
    forces = torch.zeros(num_nodes, 3, dtype=torch.float64)
    forces.index_add_(0, edge_index[0], edge_grad)
    forces.index_add_(0, edge_index[1], -edge_grad)
    virial = -vectors.t() @ edge_grad
    return forces, virial


def evaluate_exported(runner, metadata: Dict[str, str], atoms) -> Dict[str, np.ndarray]:
    """Energy, per-atom energies, forces and (3-D periodic cells) stress of ``atoms`` from a
    loaded package, in ASE's units: the exported program run on the calculator's graph
    (every atom computed here and local, no ghosts). What the tests compare with
    :class:`~sinet_ase.SINetCalculator`."""
    from .errors import UnknownElementError
    from .graph import atoms_to_graph

    elements = metadata["elements"].split()
    cutoff = float(metadata["cutoff"])
    graph = atoms_to_graph(atoms, cutoff, elements)
    index = {symbol: k for k, symbol in enumerate(elements)}
    try:
        species = torch.tensor([index[s] for s in atoms.get_chemical_symbols()], dtype=torch.long)
    except KeyError:
        raise UnknownElementError(set(atoms.get_chemical_symbols()) - set(elements), elements) from None
    receiver, sender = graph.edge_index
    vectors = graph.pos[sender] - graph.pos[receiver] + graph.shifts @ graph.cell[0]
    n = len(atoms)
    inputs = pad_graph(species, torch.ones(n, dtype=torch.float64), graph.edge_index, vectors, cutoff)
    out = runner(*inputs)
    edge_grad = out[2][2:]  # the two dummy edges come first
    forces, virial = forces_and_virial(graph.edge_index, vectors, edge_grad, n)
    result = {
        "energy": float(out[0]),
        "energies": out[1][2:].numpy(),
        "forces": forces.numpy(),
        "virial": virial.numpy(),
    }
    if atoms.pbc.all():
        result["stress"] = -virial.numpy() / atoms.get_volume()
    return result
