"""The SINet backbone and the energy model used by the calculator.

``SINetBackbone``: species embedding lifted to degrees ``0..L``
(:class:`~sinet_ase.ops.SphericalEmbedding`), then ``T`` Scalar Interaction
layers (``backbone="sinet"``) or ``T`` SiFormer blocks (``backbone="siformer"``,
:class:`~sinet_ase.ops.SiFormerLayer`, ``num_heads`` attention heads). Heads
read its node features ``(N, c, (L+1)^2)``.

``SINet``: backbone + energy head

``E = sum_i E_i``,  ``E_i = scale * MLP(h_i^0) + shift_{Z_i}``
(``+ (1/2) sum_j V_ZBL(r_ij)`` with the ``zbl`` option, :mod:`sinet_ase.ops.zbl`),

forces ``F = -dE/dx`` and stress ``sigma = (1/V) dE/d epsilon`` by autograd,
with a symmetric strain ``epsilon`` applied to positions and cell
(``x -> x (1 + epsilon)``, ``cell -> cell (1 + epsilon)``), so forces are
exactly conservative. Geometry stays float64 (edge vectors are formed in
float64 and cast to the network's dtype), as NequIP does.
"""

from typing import Dict, List, Optional, Sequence

import torch
from e3nn import o3

from .errors import UnknownElementError
from .fastpath import INDUCTOR_OPTIONS, CompiledNetwork
from .graph import symbols_to_numbers
from .hparams import DEFAULTS
from .ops import RadialEmbedding, ScalarInteractionLayer, SiFormerLayer, SphericalEmbedding, SphericalLayout
from .ops.chunking import ReceiverChunks, layer_in_chunks
from .ops.zbl import ZBLRepulsion
from .ops.mlp import mlp
from .registry import register_model

BACKBONES = ("sinet", "siformer")


class SINetBackbone(torch.nn.Module):
    """Embedding + ``num_layers`` Scalar Interaction layers (or SiFormer blocks).

    forward(graph, edge_vectors (E, 3) in the network dtype) -> h (N, c, (L+1)^2).

    ``edge_chunk_size`` (attribute, default ``None``; not stored in model files): when
    set (and the graph has more edges than ``edge_chunk_from``, by default than
    ``edge_chunk_size``; :meth:`chunk_size_for`), memory stays bounded for very large systems at the cost of about one extra
    forward pass. With frozen weights (inference: :meth:`SINet.forward` builds the
    :class:`~sinet_ase.ops.chunking.ReceiverChunks` and passes them as ``chunks``), every
    layer runs one chunk of receiving atoms (about that many edges) at a time
    (:func:`~sinet_ase.ops.chunking.layer_in_chunks`); any backbone. Otherwise (weights
    that need gradients, as in training) the embedding and the Scalar Interaction layers
    sum over neighbours in chunks of edges recomputed in the backward pass
    (:func:`~sinet_ase.ops.chunking.edge_chunked_sum`); SiFormer blocks need the softmax
    over all of a node's neighbours at once and do not support that form.
    """

    edge_chunk_size = None
    #: graphs with more edges than this are chunked (``None``: more than ``edge_chunk_size``)
    edge_chunk_from = None

    def __init__(
        self,
        elements: Sequence[str],
        cutoff: float = DEFAULTS.cutoff,
        lmax: int = DEFAULTS.lmax,
        channels: int = DEFAULTS.channels,
        num_layers: int = DEFAULTS.num_layers,
        num_radial: int = DEFAULTS.num_radial,
        radial_hidden: int = DEFAULTS.radial_hidden,
        mlp_hidden: int = DEFAULTS.mlp_hidden,
        envelope_p: int = DEFAULTS.envelope_p,
        avg_num_neighbors: float = DEFAULTS.avg_num_neighbors,
        backbone: str = DEFAULTS.backbone,
        num_heads: int = DEFAULTS.num_heads,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(map(repr, BACKBONES))}")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.elements = list(elements)
        if len(set(self.elements)) != len(self.elements) or not self.elements:
            raise ValueError(f"elements must be a non-empty list without repeats, got {elements}")
        numbers = symbols_to_numbers(self.elements)
        self.cutoff = float(cutoff)
        self.layout = SphericalLayout(lmax, channels)
        z_to_species = torch.full((119,), -1, dtype=torch.long)
        z_to_species[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("z_to_species", z_to_species, persistent=False)
        self.radial = RadialEmbedding(cutoff, num_radial, envelope_p)
        self.embedding = SphericalEmbedding(len(numbers), self.layout, num_radial, radial_hidden, avg_num_neighbors)
        self.backbone_type = backbone
        if backbone == "siformer":
            make_layer = lambda: SiFormerLayer(self.layout, num_radial, mlp_hidden, num_heads)
        else:
            make_layer = lambda: ScalarInteractionLayer(self.layout, num_radial, mlp_hidden, avg_num_neighbors)
        self.layers = torch.nn.ModuleList(make_layer() for _ in range(num_layers))

    def species(self, z: torch.Tensor) -> torch.Tensor:
        """Atomic numbers ``(N,)`` -> species indices ``(N,)``; unknown elements raise."""
        species = self.z_to_species[z]
        if bool((species < 0).any()):
            from ase.data import chemical_symbols

            unknown = [chemical_symbols[int(n)] for n in z[species < 0].unique()]
            raise UnknownElementError(unknown, self.elements)
        return species

    def forward(self, graph, edge_vectors: torch.Tensor) -> torch.Tensor:
        return self.features(self.species(graph.z), graph.edge_index, edge_vectors)

    def features(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        chunks: Optional[ReceiverChunks] = None,
    ) -> torch.Tensor:
        """Node features ``(N, c, (L+1)^2)`` from species ``(N,)``, ``edge_index (2, E)`` and
        edge vectors ``(E, 3)``: tensors in, tensors out, no host synchronisation, so
        that ``torch.compile`` captures it as one graph (see :meth:`SINet.enable_compile`).

        ``chunks``: evaluate layer by layer, one chunk of receivers at a time (frozen
        weights only; the edge vectors then in ``chunks.edge_order``, see
        :class:`~sinet_ase.ops.chunking.ReceiverChunks`)."""
        if chunks is not None:
            return self._features_in_chunks(species, edge_vectors, chunks, scalars_only=False)
        h, edge_inputs = self._embed(species, edge_index, edge_vectors)
        for layer in self.layers:
            h = self._run_layer(layer, h, edge_index, edge_inputs)
        return h

    def scalar_features(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        chunks: Optional[ReceiverChunks] = None,
    ) -> torch.Tensor:
        """The scalar channels of :meth:`features` alone, ``(N, c)``: ``features(...)[:, :, 0]``.

        With Scalar Interaction layers the last layer forms only its degree-0 messages
        (:meth:`~sinet_ase.ops.scalar_interaction.ScalarInteractionLayer.forward_scalars`):
        nothing downstream of an energy head reads its ``l > 0`` output, and skipping
        it saves that layer's ``l > 0`` edge work. Same numbers up to rounding (tested).
        """
        if chunks is not None:
            return self._features_in_chunks(species, edge_vectors, chunks, scalars_only=True)
        if self.backbone_type != "sinet" or not len(self.layers):
            return self.features(species, edge_index, edge_vectors)[:, :, 0]
        h, edge_inputs = self._embed(species, edge_index, edge_vectors)
        for layer in self.layers[:-1]:
            h = self._run_layer(layer, h, edge_index, edge_inputs)
        return self.layers[-1].forward_scalars(
            h, edge_index, *edge_inputs, edge_chunk_size=self._edge_chunks_for(edge_index)
        )

    def edge_geometry(self, edge_vectors: torch.Tensor):
        """The per-edge inputs every layer reads: ``Y (E, M)``, ``phi (E, n_basis)``, ``u (E,)``."""
        r = edge_vectors.norm(dim=-1)
        # degrees as a list of ints, not the layout's Irreps: TorchDynamo's guards call len()
        # on the Irrep tuples inside an Irreps, which e3nn 0.6 forbids
        Y = o3.spherical_harmonics(
            list(range(self.layout.lmax + 1)), edge_vectors, normalize=True, normalization="component"
        )
        phi, u = self.radial(r)
        return Y, phi, u

    def _features_in_chunks(self, species, edge_vectors, chunks, scalars_only):
        """:meth:`features` (or the scalars of :meth:`scalar_features`) layer by layer, one chunk
        of receivers at a time; the per-edge geometry is recomputed inside each chunk, so no
        ``(E, ...)`` tensor but the edge vectors is kept whole."""

        def embed(n, edge_index, species, vectors):
            return self.embedding(species, edge_index, *self.edge_geometry(vectors), num_receivers=n)

        def layer_rows(layer, scalars):
            def run(n, edge_index, h, vectors):
                if self.backbone_type != "sinet":  # a whole block on the chunk's graph, then its rows
                    out = layer(h, edge_index, *self.edge_geometry(vectors))[:n]
                    return out[:, :, 0] if scalars else out
                forward = layer.forward_scalars if scalars else layer
                return forward(h, edge_index, *self.edge_geometry(vectors), num_receivers=n)

            return run

        h = layer_in_chunks(embed, chunks, (species,), (edge_vectors,))
        for k, layer in enumerate(self.layers):
            scalars = scalars_only and k == len(self.layers) - 1
            h = layer_in_chunks(layer_rows(layer, scalars), chunks, (h,), (edge_vectors,))
        return h if scalars_only and len(self.layers) else (h[:, :, 0] if scalars_only else h)

    def receiver_chunks(self, edge_index: torch.Tensor, positions: torch.Tensor) -> Optional[ReceiverChunks]:
        """The chunks of receivers that :meth:`features` takes when ``edge_chunk_size`` is set,
        the graph has more edges than that, and no weight needs gradients; else ``None``."""
        size = self.chunk_size_for(edge_index.shape[1])
        if size is None or any(p.requires_grad for p in self.parameters()):
            return None
        return ReceiverChunks.build(edge_index, positions.shape[0], size, positions)

    def chunk_size_for(self, num_edges: int) -> Optional[int]:
        """Edges per chunk for a graph of ``num_edges`` edges, ``None`` when it runs whole."""
        size = self.edge_chunk_size
        if size is None or num_edges <= max(int(size), int(self.edge_chunk_from or 0)):
            return None
        return int(size)

    def _embed(self, species, edge_index, edge_vectors):
        """Layer 0 and the per-edge inputs ``(Y, phi, u)`` that every layer reads."""
        Y, phi, u = self.edge_geometry(edge_vectors)
        h = self.embedding(species, edge_index, Y, phi, u, edge_chunk_size=self._edge_chunks_for(edge_index))
        return h, (Y, phi, u)

    def _edge_chunks_for(self, edge_index) -> Optional[int]:
        """``edge_chunk_size`` where the edge-chunked form (:func:`~sinet_ase.ops.chunking.edge_chunked_sum`,
        weights that need gradients) would split this graph's edges, else ``None``."""
        size = self.chunk_size_for(edge_index.shape[1])
        if size is None:
            return None
        if self.backbone_type != "sinet":
            raise ValueError(
                "with weights that need gradients, edge_chunk_size is supported by the "
                "SINet backbone only (a SiFormer block normalises attention over all "
                "neighbours at once); freeze the weights (inference) or unset it"
            )
        return size

    def _run_layer(self, layer, h, edge_index, edge_inputs):
        size = self._edge_chunks_for(edge_index)
        if size is None:
            return layer(h, edge_index, *edge_inputs)
        return layer(h, edge_index, *edge_inputs, edge_chunk_size=size)


def edge_vectors(graph, positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """``r_ij = x_j - x_i + S_ij . cell_g`` for every edge: ``(E, 3)``, float64."""
    receiver, sender = graph.edge_index[0], graph.edge_index[1]
    if cell.shape[0] == 1:  # one cell: one (E, 3) x (3, 3) product, no per-edge gather of cells
        shift = graph.shifts @ cell[0]
    else:
        shift = torch.einsum("ek,ekl->el", graph.shifts, cell[batch[receiver]])
    return positions.index_select(0, sender) - positions.index_select(0, receiver) + shift


def graph_batch(graph) -> torch.Tensor:
    """The ``batch`` vector of a graph, or zeros for a single structure."""
    batch = getattr(graph, "batch", None)
    if batch is None:
        batch = torch.zeros(graph.pos.shape[0], dtype=torch.long, device=graph.pos.device)
    return batch


@register_model(task="potential")
class SINet(torch.nn.Module):
    """SINet energy model: backbone + per-atom energy head, forces and stress by autograd.

    Args:
        elements: chemical symbols the model knows, e.g. ``["H", "C", "N", "O"]``.
        cutoff: neighbour cutoff radius ``r_c`` in Å.
        lmax: highest degree ``L`` of the node features.
        channels: channels ``c`` of every degree.
        num_layers: Scalar Interaction layers ``T``.
        num_radial: Bessel functions in the radial basis.
        radial_hidden, mlp_hidden: widths of the radial and coefficient MLPs.
        envelope_p: exponent of the polynomial cutoff envelope.
        avg_num_neighbors: divides neighbour sums (set from data when training).
        atomic_energies: per-element energy shift in eV (``{"H": -13.6, ...}``);
            zeros when not given.
        energy_scale: multiplies the network's per-atom output (eV).
        backbone: ``"sinet"`` (Scalar Interaction layers) or ``"siformer"`` (the
            scalar-interaction transformer, :class:`~sinet_ase.ops.SiFormerLayer`).
        num_heads: attention heads of a SiFormer backbone (must divide ``channels``).
        zbl: add the ZBL screened nuclear repulsion of every pair closer than
            ``zbl_cutoff_factor`` times the sum of their covalent radii
            (:mod:`sinet_ase.ops.zbl`), so that atoms pushed together repel whatever the
            training data held. Off by default (files of format version 2 and earlier,
            which predate it, load with it off).
        zbl_cutoff_factor: where the ZBL term ends, in sums of covalent radii (0.6: below
            bonding distances, 0.58 Å for O-H, 0.91 Å for C-C).

    forward(graph, compute_forces=True, compute_stress=False, training=False,
    compute_stresses=False) returns a dict: ``energy`` (G,), ``energies`` (N,), ``forces``
    (N, 3), ``stress`` (G, 3, 3) and, with ``compute_stresses``, the per-atom stresses
    ``stresses`` (N, 3, 3), all float64.

    Per-atom stress (virial): the energy depends on the positions through the edge
    vectors ``r_e`` only, so the strain derivative is a sum over edges,
    ``dE/d epsilon = sum_e sym(r_e (x) dE/dr_e)``. Each edge's term is split half to its
    receiver and half to its sender and divided by the structure's volume ``V``:
    ``sigma_i = (1/V) sum_{e touching i} 1/2 sym(r_e (x) dE/dr_e)`` (ASE's convention,
    as its Lennard-Jones calculator: ``sum_i sigma_i = sigma``). One backward pass gives
    it together with the forces; the split is one of many that sum to the same total
    (a per-atom stress is not unique), the usual one for pair and message-passing
    potentials alike.
    """

    #: state-dict entries with one row per element (dim 0, in ``elements`` order); every other
    #: entry has the same shape whatever the elements. The per-element shift and the
    #: atomic-number lookup are rebuilt from ``config`` and ``elements``, not stored.
    #: Fine-tuning with new elements (:mod:`sinet_ase.potential.finetune`) relies on this list.
    PER_ELEMENT_STATE = ("backbone.embedding.species_embedding.weight",)

    def __init__(
        self,
        elements: Sequence[str],
        cutoff: float = DEFAULTS.cutoff,
        lmax: int = DEFAULTS.lmax,
        channels: int = DEFAULTS.channels,
        num_layers: int = DEFAULTS.num_layers,
        num_radial: int = DEFAULTS.num_radial,
        radial_hidden: int = DEFAULTS.radial_hidden,
        mlp_hidden: int = DEFAULTS.mlp_hidden,
        envelope_p: int = DEFAULTS.envelope_p,
        avg_num_neighbors: float = DEFAULTS.avg_num_neighbors,
        atomic_energies: Optional[Dict[str, float]] = None,
        energy_scale: float = 1.0,
        backbone: str = DEFAULTS.backbone,
        num_heads: int = DEFAULTS.num_heads,
        zbl: bool = False,
        zbl_cutoff_factor: float = 0.6,
    ):
        super().__init__()
        if not isinstance(zbl, bool):
            raise TypeError(f"zbl must be true or false, got {zbl!r}")
        if not float(zbl_cutoff_factor) > 0:
            raise ValueError(f"zbl_cutoff_factor must be positive, got {zbl_cutoff_factor!r}")
        self.config = dict(
            elements=list(elements),
            cutoff=float(cutoff),
            lmax=int(lmax),
            channels=int(channels),
            num_layers=int(num_layers),
            num_radial=int(num_radial),
            radial_hidden=int(radial_hidden),
            mlp_hidden=int(mlp_hidden),
            envelope_p=int(envelope_p),
            avg_num_neighbors=float(avg_num_neighbors),
            backbone=str(backbone),
            num_heads=int(num_heads),
        )
        self.backbone = SINetBackbone(**self.config)
        self.config.update(zbl=bool(zbl), zbl_cutoff_factor=float(zbl_cutoff_factor))
        self.zbl = None
        if zbl:
            self.zbl = ZBLRepulsion(
                symbols_to_numbers(self.config["elements"]),
                self.config["cutoff"],
                self.config["envelope_p"],
                float(zbl_cutoff_factor),
            )
        self.energy_mlp = mlp([channels, max(channels // 2, 1), 1])
        self.set_energy_reference(atomic_energies or {}, energy_scale)

    def set_energy_reference(self, atomic_energies: Dict[str, float], energy_scale: float) -> None:
        """Set the per-element shift (eV) and the output scale (eV); kept in ``config``.

        They live in the config as Python floats and in float64 buffers rebuilt
        from it, so casting the network to float32 never rounds a shift of
        thousands of eV.
        """
        for symbol in atomic_energies:
            if symbol not in self.backbone.elements:
                raise ValueError(f"atomic energy given for {symbol}, which is not in elements {self.backbone.elements}")
        self.config["atomic_energies"] = {s: float(atomic_energies.get(s, 0.0)) for s in self.elements}
        self.config["energy_scale"] = float(energy_scale)
        self._rebuild_reference_buffers()

    def _rebuild_reference_buffers(self, device=None):
        device = device or self.energy_mlp[0].weight.device
        shift = [self.config["atomic_energies"][s] for s in self.elements]
        self.register_buffer("energy_shift", torch.tensor(shift, dtype=torch.float64, device=device), persistent=False)
        self.register_buffer(
            "energy_scale",
            torch.tensor(self.config["energy_scale"], dtype=torch.float64, device=device),
            persistent=False,
        )

    def _apply(self, fn, *args, **kwargs):
        # .to(float32) would round the float64 reference buffers: rebuild them from config
        out = super()._apply(fn, *args, **kwargs)
        self._rebuild_reference_buffers()
        return out

    _compiled_network = None

    def network_energies(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        vectors: torch.Tensor,
        full_last_layer: bool = False,
        chunks: Optional[ReceiverChunks] = None,
    ) -> torch.Tensor:
        """The network's per-atom output ``MLP(h_i^0)``, ``(N,)`` in the model dtype, before
        the scale and the per-element shift; species ``(N,)``, ``edge_index (2, E)``,
        edge vectors ``(E, 3)``. This is the part :meth:`enable_compile` compiles.

        The energy reads the scalars only, so by default the last layer forms only its
        degree-0 output (:meth:`SINetBackbone.scalar_features`, same numbers).
        ``full_last_layer=True`` computes the whole layer, so that every parameter is in
        the autograd graph (the last layer's ``l > 0`` weights then get zero gradients):
        training uses it, because DistributedDataParallel expects a gradient for every
        parameter. ``chunks``: see :meth:`SINetBackbone.features`.
        """
        if full_last_layer:
            scalars = self.backbone.features(species, edge_index, vectors, chunks)[:, :, 0]
        else:
            scalars = self.backbone.scalar_features(species, edge_index, vectors, chunks)
        return self.energy_mlp(scalars).squeeze(-1)

    def enable_compile(self, **compile_options) -> "SINet":
        """Run :meth:`network_energies` through ``torch.compile`` (inductor) for inference.

        Energies, forces and stress keep their definitions (autograd through the
        compiled graph and its compiled backward); what changes is the per-call
        overhead: at a few dozen atoms an eager call is hundreds of small operators
        and Python calls, which the compiled graph fuses (benchmarks/README.md).
        The first call compiles (tens of seconds); a new edge count recompiles once
        with dynamic shapes. ``training=True`` calls stay eager (a compiled graph
        has no double backward). The model's weights and file format are unchanged.
        ``compile_options`` go to ``torch.compile`` (e.g. ``backend="aot_eager"`` to
        check a problem without the C++ compiler that inductor needs on CPU). Copies
        and pickles of the model are eager (the compiled function belongs to this
        object); call this again on the copy.
        """
        if self.backbone.edge_chunk_size is not None:
            raise ValueError(
                "enable_compile and edge_chunk_size do not combine: edge chunks "
                "recompute activations under torch.utils.checkpoint; use one"
            )
        if compile_options.get("backend", "inductor") == "inductor":
            compile_options["options"] = dict(INDUCTOR_OPTIONS, **compile_options.get("options") or {})
        self._compiled_network = torch.compile(self.network_energies, **compile_options)
        return self

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_compiled_network", None)  # bound to this object: a copy starts eager
        return state

    def disable_compile(self) -> "SINet":
        """Back to the eager network (undo :meth:`enable_compile`)."""
        self._compiled_network = None
        return self

    @property
    def elements(self) -> List[str]:
        return self.backbone.elements

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    @property
    def dtype(self) -> torch.dtype:
        return self.energy_mlp[0].weight.dtype

    def forward(
        self,
        graph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        training: bool = False,
        compute_stresses: bool = False,
    ) -> Dict[str, torch.Tensor]:
        batch = graph_batch(graph)
        num_graphs = int(graph.cell.shape[0])
        positions = graph.pos.to(torch.float64)
        cell = graph.cell.to(torch.float64)
        if not training and (compute_forces or compute_stress or compute_stresses):
            out = self._outputs_from_compiled_gradient(
                graph, positions, cell, batch, num_graphs, compute_forces, compute_stress, compute_stresses
            )
            if out:
                return out
            eager_call = out is False  # the compiled network counted this call and declined it
        else:
            eager_call = False
        inputs = []
        if compute_forces or compute_stress:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        if compute_stress:
            strain = torch.zeros(num_graphs, 3, 3, dtype=torch.float64, device=positions.device, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            positions_strained = positions + torch.einsum("ni,nij->nj", positions, symmetric[batch])
            cell = cell + torch.bmm(cell, symmetric)
            inputs.append(strain)
        else:
            positions_strained = positions

        vectors64 = edge_vectors(graph, positions_strained, cell, batch)
        if compute_stresses:
            if not (compute_forces or compute_stress):
                vectors64 = vectors64.detach().requires_grad_(True)
            inputs.append(vectors64)  # last: dE/dr_e for the per-atom stresses
        vectors = vectors64.to(self.dtype)
        species = self.backbone.species(graph.z)
        # the pair term in float64 from the float64 vectors
        repulsion = self.zbl(species, graph.edge_index, vectors64) if self.zbl is not None else None
        chunks = None if training else self.backbone.receiver_chunks(graph.edge_index, positions)
        if chunks is not None:  # large system, frozen weights: layer by layer, chunks of receivers
            vectors = vectors.index_select(0, chunks.edge_order)  # (the whole-order copy is freed)
            network_out = self.network_energies(species, graph.edge_index, vectors, chunks=chunks)
        elif training:
            # eager (a compiled graph has no double backward), and the whole last layer, so that
            # every parameter is in the graph (DistributedDataParallel expects it)
            network_out = self.network_energies(species, graph.edge_index, vectors, full_last_layer=True)
        else:
            network = self._compiled_network if self._compiled_network is not None else self.network_energies
            network_out = (self.network_energies if eager_call else network)(species, graph.edge_index, vectors)
        energies = network_out.to(torch.float64) * self.energy_scale + self.energy_shift[species]
        if repulsion is not None:
            energies = energies + repulsion
        energy = torch.zeros(num_graphs, dtype=torch.float64, device=energies.device)
        energy = energy.index_add(0, batch, energies)
        out = {"energy": energy, "energies": energies}
        if inputs:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=training, allow_unused=True)
            if compute_forces:
                forces = grads[0]
                out["forces"] = -forces if forces is not None else torch.zeros_like(positions)
            if compute_stress or compute_stresses:
                volume = torch.linalg.det(graph.cell.to(torch.float64)).abs().view(-1, 1, 1)
            if compute_stress:
                virial = grads[len(inputs) - 1 - compute_stresses]
                virial = virial if virial is not None else torch.zeros_like(strain)
                out["stress"] = virial / volume
            if compute_stresses:
                out["stresses"] = self._atomic_stresses(graph, vectors64, grads[-1], batch, volume)
        return out

    def _outputs_from_compiled_gradient(
        self, graph, positions, cell, batch, num_graphs, compute_forces, compute_stress, compute_stresses
    ):
        """Energy, forces and stress from the compiled network's edge gradient, without autograd.

        The energy is ``E = sum_i (s E_i + e_{Z_i})`` (+ nothing else: no ZBL term), so
        ``dE/dr_e = s g_e`` with ``g = d(sum_i E_i)/d r`` ``(E, 3)`` from the compiled graph.
        With ``r_e = x_{sender} - x_{receiver} + S_e . cell``, the forces are
        ``F_k = sum_{e: receiver k} s g_e - sum_{e: sender k} s g_e``, and the virial of a
        symmetric strain is ``W = sym(sum_e r_e (x) s g_e)``, the stress ``W / V``: the same
        numbers as autograd through the strained positions (tested), with no autograd graph
        over the positions. Returns the outputs, ``False`` when the compiled network ran this
        call eagerly (the eager phase of ``"auto"``; it counted the call), or ``None`` where it
        does not apply (no compiled network, a fallback, edge chunks, ZBL): in both the caller
        takes the autograd path with the eager network.
        """
        network = self._compiled_network
        if not isinstance(network, CompiledNetwork) or network.fallback_reason is not None or self.zbl is not None:
            return None
        if self.backbone.chunk_size_for(graph.edge_index.shape[1]) is not None:
            return None
        vectors64 = edge_vectors(graph, positions, cell, batch)
        species = self.backbone.species(graph.z)
        pair = network.energies_and_gradient(species, graph.edge_index, vectors64.to(self.dtype))
        if pair is None:
            return False
        network_energies, gradient = pair
        energies = network_energies.to(torch.float64) * self.energy_scale + self.energy_shift[species]
        energy = torch.zeros(num_graphs, dtype=torch.float64, device=energies.device).index_add(0, batch, energies)
        out = {"energy": energy, "energies": energies}
        edge_gradient = gradient.to(torch.float64) * self.energy_scale  # dE/dr_e (E, 3)
        receiver, sender = graph.edge_index[0], graph.edge_index[1]
        if compute_forces:
            forces = torch.zeros_like(positions).index_add(0, receiver, edge_gradient)
            out["forces"] = forces.index_add(0, sender, edge_gradient, alpha=-1)
        if compute_stress or compute_stresses:
            volume = torch.linalg.det(graph.cell.to(torch.float64)).abs().view(-1, 1, 1)
        if compute_stress:
            edge_virial = torch.einsum("ea,eb->eab", vectors64, edge_gradient)
            virial = torch.zeros(num_graphs, 3, 3, dtype=torch.float64, device=positions.device)
            virial = virial.index_add(0, batch[receiver], edge_virial)
            out["stress"] = 0.5 * (virial + virial.transpose(1, 2)) / volume
        if compute_stresses:
            out["stresses"] = self._atomic_stresses(graph, vectors64, edge_gradient, batch, volume)
        return out

    @staticmethod
    def _atomic_stresses(
        graph, vectors: torch.Tensor, edge_gradient: Optional[torch.Tensor], batch: torch.Tensor, volume: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom stresses ``(N, 3, 3)`` from the edge vectors ``(E, 3)`` and ``dE/dr_e``
        ``(E, 3)``: half of each edge's symmetrised virial to each end, over the volume."""
        num_atoms = graph.pos.shape[0]
        stresses = torch.zeros(num_atoms, 3, 3, dtype=torch.float64, device=vectors.device)
        if edge_gradient is None:  # no edges, or an energy that ignores them
            return stresses
        virial = torch.einsum("ea,eb->eab", vectors.detach(), edge_gradient)
        virial = 0.25 * (virial + virial.transpose(1, 2))  # half of the symmetrised edge virial
        stresses = stresses.index_add(0, graph.edge_index[0], virial)
        stresses = stresses.index_add(0, graph.edge_index[1], virial)
        return stresses / volume[batch]
