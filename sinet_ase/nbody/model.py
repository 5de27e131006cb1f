r"""SINet for the charged N-body task: a per-particle type-1 (vector) output.

The task (EGNN / SEGNN protocol, paper Sec. 5.4): from positions ``x``,
velocities ``v`` and charges ``q`` of ``n`` particles at frame 30, predict the
positions 1,000 integrator steps (1.0 time unit) later,

``x_pred = x + sum_k w_k h_i^{1,k}``

(the output head is a learned linear combination of the final ``l = 1``
channels, i.e. an ``o3.Linear`` to ``1x1o`` without bias).

Graph and inputs
----------------
Every system is a fully connected directed graph without self-loops
(``n (n-1)`` edges ``i <- j``).  Edge ``i <- j``:

* harmonics ``Y^l(x_j - x_i)``, ``l = 0..L`` (e3nn, ``component``
  normalisation; e3nn's ``l = 1`` harmonics are ``sqrt(3) (x, y, z)/r`` in
  Cartesian order, so Cartesian vectors *are* the ``l = 1`` columns);
* edge scalars ``s_ij = [phi(r_ij), q_i q_j, r_ij]``: a Bessel basis
  ``phi`` (:class:`~sinet_ase.ops.BesselBasis`, ``num_radial`` functions of
  width ``radial_cutoff``), the charge product and the distance.

No cutoff envelope: the graph is fully connected, so the envelope is ``u = 1``
on every edge (``radial_cutoff`` only sets the wavelengths of the Bessel
basis; distances beyond it are still seen, through ``r_ij`` itself and the
continuing sines).

Node embedding (layer 0): with ``x_rel = x - mean(x)`` (centre of the system)

* ``h^0 = z_{q_i} + MLP(|v_i|, q_i)``: charge embedding plus an MLP of the
  node scalars; with ``node_charges=False`` it is ``z + MLP(|v_i|)``, so the
  charges enter only through the edge scalars ``q_i q_j`` (the paper's inputs)
  and the model is exactly invariant under flipping every charge's sign, as
  the dynamics is;
* ``h^{l,k} += sum_s W^l_{k s} |s| Y^l(s / |s|)`` for ``s in {x_rel, v}`` and
  ``l = 1..L``: for ``l = 1`` this is exactly a linear map of the two vectors
  ``x_rel`` and ``v`` into the ``c`` vector channels (``|s| Y^1(s/|s|) =
  sqrt(3) s``); for ``l >= 2`` it embeds the same vectors as degree-``l``
  harmonics (SEGNN's node attributes);
* ``h^{l,k} += (1/n_avg) sum_j R^l_k(s_ij) z_j^k Y^l(x_j - x_i)``: the
  :class:`~sinet_ase.ops.SphericalEmbedding` (scalar-times-harmonic tensor
  product) with the edge scalars above as its radial input.

Then ``num_layers`` Scalar Interaction layers, whose coefficient MLPs take the
same edge scalars ``s_ij``.  Each is the shared
:class:`~sinet_ase.ops.ScalarInteractionLayer` run *pre-norm* (``pre_norm=True``): the
messages are computed from an equivariant RMS norm
(:class:`~sinet_ase.ops.EquivariantRMSNorm`) of the node features,

``h_i <- h_i + Gate(Linear((1/n_avg) sum_j SI(N(h_j), Y_ij, N(h_i), s_ij)))``,

``N(h)^{l,k} = g^{l,k} h^{l,k} / sqrt(mean_{k'} |h^{l,k'}|^2 / (2l+1) + eps)``.
The inputs ``x_rel, v`` are not bounded (``|x_rel|`` reaches 10), and Scalar
Interaction is polynomial in its input (``alpha(<h, h>) h``), so without the
norm the features grow like ``|h|^{3^T}`` through ``T`` layers and training
diverges (observed: feature norms 1e9 after 4 layers at initialisation).  The
residual stream itself is not normalised, so the absolute scale of ``v`` and
``x_rel`` reaches the vector head unchanged.

``backbone="siformer"`` replaces those layers by
:class:`~sinet_ase.ops.SiFormerLayer` blocks (pre-norm attention with
``num_heads`` heads whose logits and values come from the same invariants and
edge scalars ``s_ij``, then a feed-forward block; see
:mod:`sinet_ase.ops.siformer`).  The embedding and the head are shared, so
the two backbones differ only in the interaction layers.  With ``u = 1`` on
the complete graph the attention is a softmax over the other four particles
plus the learned sink.

Symmetries (by construction, tested in ``tests/test_nbody_model.py``):
``x -> R x + t``, ``v -> R v`` with ``R`` in O(3) gives
``x_pred -> R x_pred + t``; permuting the particles permutes the output.
"""

from typing import Any, Dict, List, Optional, Union
from pathlib import Path

import torch
from e3nn import o3

from ..errors import ModelFileError
from ..io import model_from_dict, model_to_dict, save_model
from ..ops import BesselBasis, EquivariantRMSNorm, ScalarInteractionLayer, SphericalEmbedding, SphericalLayout
from ..ops.siformer import SiFormerLayer
from ..ops.mlp import mlp
from ..registry import register_model

__all__ = [
    "NBodySINet",
    "pair_orbit_scalars",
    "fully_connected_edges",
    "EquivariantRMSNorm",
    "PreNormScalarInteractionLayer",
    "save_nbody_model",
    "load_nbody_model",
    "load_nbody_ensemble",
    "nbody_model_to_dict",
    "nbody_model_from_dict",
    "FORMER_CHECKPOINT_FORMAT",
]

BACKBONES = ("sinet", "siformer")

#: the ``checkpoint.pt`` of the former N-body loop (``best_model`` inside, or ``model``
#: before the first validation); :func:`load_nbody_model` and ``sinet-eval`` read it
FORMER_CHECKPOINT_FORMAT = "sinet-ase-nbody-checkpoint"

#: ``coulomb_scalars``: distances below this count as this (the simulator clips forces at 100)
COULOMB_MIN_DISTANCE = 0.1


def pair_orbit_scalars(vec: torch.Tensor, rel_v: torch.Tensor, qq: torch.Tensor) -> torch.Tensor:
    r"""Invariants of the isolated two-body problem of every edge: ``(E, 4)``.

    For a pair with relative position ``r = x_j - x_i``, relative velocity
    ``u = v_j - v_i`` and unit masses, the relative coordinate obeys
    ``r'' = kappa r / |r|^3`` with ``kappa = 2 q_i q_j`` (the simulator's force,
    interaction strength 1, without clipping).  Its conserved quantities give

    * the radial velocity ``v_r = u . r / |r|`` (negative while approaching),
    * the specific angular momentum ``h = |r x u|``,
    * the specific energy ``eps = |u|^2 / 2 + kappa / |r|``,
    * the periapsis ``r_p``, the smaller root of ``eps r^2 - kappa r - h^2 / 2 = 0``:
      ``h^2 / (sqrt(kappa^2 + 2 eps h^2) - kappa)`` for attraction (``kappa < 0``) and
      ``(kappa + sqrt(kappa^2 + 2 eps h^2)) / (2 eps)`` for repulsion (then
      ``eps > 0``); the discriminant is never negative.

    Returned, scaled to order one: ``[v_r / 2, h / 2, eps / (1 + |eps|), 0.1 / (r_p + 0.1)]``.
    All four are invariant under rotations, reflections and translations, symmetric
    in ``i <-> j`` and unchanged when every charge flips sign.  They are closed-form
    functions of the model's inputs (no integration); not among the paper's inputs.

    vec, rel_v: ``(E, 3)``; qq: ``(E,)`` charge products.
    """
    r = vec.norm(dim=-1).clamp_min(1e-9)
    kappa = 2.0 * qq
    v_r = (vec * rel_v).sum(-1) / r
    h = torch.linalg.cross(vec, rel_v).norm(dim=-1)
    h2 = h * h
    eps = 0.5 * rel_v.pow(2).sum(-1) + kappa / r
    root = torch.sqrt((kappa**2 + 2.0 * eps * h2).clamp_min(0.0))
    attract = kappa < 0
    # each branch's denominator is bounded away from zero where it is used; the other
    # branch's value is discarded, so guard it against 0/0 (it would poison gradients)
    r_p_attract = h2 / torch.where(attract, root - kappa, torch.ones_like(root))
    r_p_repel = (kappa + root) / torch.where(attract, torch.ones_like(eps), 2.0 * eps.clamp_min(1e-9))
    r_p = torch.where(attract, r_p_attract, r_p_repel)
    return torch.stack([v_r / 2, h / 2, eps / (1 + eps.abs()), 0.1 / (r_p + 0.1)], dim=-1)


def fully_connected_edges(num_systems: int, n: int, device=None) -> torch.Tensor:
    """``(2, B n (n-1))`` edge index (row 0 receives, row 1 sends) of ``B`` complete graphs."""
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i != j
    i, j = i[keep], j[keep]
    offset = (torch.arange(num_systems) * n).repeat_interleave(i.numel())
    edge = torch.stack([i.repeat(num_systems) + offset, j.repeat(num_systems) + offset])
    return edge.to(device)


class PreNormScalarInteractionLayer(ScalarInteractionLayer):
    """``ScalarInteractionLayer(..., pre_norm=True)`` under the name the N-body model
    first gave it (the layer is the shared one; this only sets the option)."""

    def __init__(
        self, layout: SphericalLayout, num_edge_scalars: int, hidden: int = 64, avg_num_neighbors: float = 1.0
    ):
        super().__init__(layout, num_edge_scalars, hidden, avg_num_neighbors, pre_norm=True)


def _safe_harmonics(irreps, vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``Y(s/|s|)`` with ``Y = 0`` where ``s = 0`` (no NaN)."""
    norm = vectors.norm(dim=-1, keepdim=True)
    unit = vectors / norm.clamp_min(eps)
    Y = o3.spherical_harmonics(irreps, unit, normalize=False, normalization="component")
    return Y * (norm > eps).to(Y.dtype)


@register_model(task="nbody")
class NBodySINet(torch.nn.Module):
    """SINet with a vector head for the charged N-body task.

    Args:
        lmax: highest degree ``L`` of node features and edge harmonics.
        channels: channels ``c`` per degree.
        num_layers: Scalar Interaction layers after the embedding.
        num_radial: Bessel functions of the edge scalars.
        radial_cutoff: width of the Bessel basis (not a graph cutoff).
        radial_hidden: width of the embedding's radial MLP.
        mlp_hidden: width of the coefficient MLPs (and of the node-scalar MLP).
        avg_num_neighbors: divides neighbour sums; ``n - 1 = 4`` for 5 particles.
        backbone: ``"sinet"`` (pre-norm Scalar Interaction layers) or
            ``"siformer"`` (SiFormer blocks; their edge MLP has ``mlp_hidden`` units).
        num_heads: attention heads of the SiFormer blocks (must divide ``channels``).
        coulomb_scalars: add ``q_i q_j / r^2 / 10`` and ``1 / (10 r)`` (``r`` clamped at
            0.1) to the edge scalars: the pair force and potential of the simulator,
            scaled to at most 10. Not in the paper's inputs (an option; off by default).
        node_charges: give each particle's own charge ``q_i`` to the node embedding
            (default, as in the first recipe).  ``False`` keeps the charges to the
            edge scalar ``q_i q_j`` only, as the paper lists the inputs; the model is
            then invariant under ``q -> -q``, a symmetry of the simulator.
        orbit_scalars: add four invariants of each pair's isolated two-body orbit
            (radial velocity, angular momentum, energy, periapsis; see
            :func:`pair_orbit_scalars`) to the edge scalars.  Not in the paper's
            inputs (an option; off by default).
        galilean_horizon: when given (a time ``T``; 1.0 for 1,000 steps of 0.001), the
            model is Galilean equivariant by construction: it reads velocities relative to
            the system's mean velocity ``V = mean_i v_i`` (the centre-of-mass velocity, all
            masses being equal) and predicts ``x + V T + f(x, v - V, q)``. A boost
            ``v -> v + U`` of every particle moves the simulated target by ``U T``
            exactly (the forces depend on relative positions only, clipping included), so
            this removes a symmetry the network would otherwise have to learn from data.
            ``None`` (default): absolute velocities, as the paper lists the inputs.

    forward(x (B, n, 3), v (B, n, 3), q (B, n)) -> predicted positions (B, n, 3)
    (unbatched ``(n, 3), (n, 3), (n,)`` also accepted).  :meth:`displacement`
    returns the head output alone.
    """

    def __init__(
        self,
        lmax: int = 1,
        channels: int = 64,
        num_layers: int = 4,
        num_radial: int = 8,
        radial_cutoff: float = 10.0,
        radial_hidden: int = 64,
        mlp_hidden: int = 64,
        avg_num_neighbors: float = 4.0,
        backbone: str = "sinet",
        num_heads: int = 4,
        coulomb_scalars: bool = False,
        node_charges: bool = True,
        orbit_scalars: bool = False,
        galilean_horizon: Optional[float] = None,
    ):
        super().__init__()
        if lmax < 1:
            raise ValueError(f"the vector output needs lmax >= 1, got {lmax}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.coulomb_scalars = bool(coulomb_scalars)
        self.node_charges = bool(node_charges)
        self.orbit_scalars = bool(orbit_scalars)
        self.galilean_horizon = None if galilean_horizon is None else float(galilean_horizon)
        self.config = dict(
            lmax=int(lmax),
            channels=int(channels),
            num_layers=int(num_layers),
            num_radial=int(num_radial),
            radial_cutoff=float(radial_cutoff),
            radial_hidden=int(radial_hidden),
            mlp_hidden=int(mlp_hidden),
            avg_num_neighbors=float(avg_num_neighbors),
            backbone=str(backbone),
            num_heads=int(num_heads),
            coulomb_scalars=self.coulomb_scalars,
            node_charges=self.node_charges,
            orbit_scalars=self.orbit_scalars,
            galilean_horizon=self.galilean_horizon,
        )
        self.layout = SphericalLayout(lmax, channels)
        # phi(r), q_i q_j, r[, Coulomb][, orbit]
        num_edge_scalars = num_radial + 2 + 2 * self.coulomb_scalars + 4 * self.orbit_scalars
        self.radial = BesselBasis(radial_cutoff, num_radial)
        # charge "species": q < 0 -> 0, q > 0 -> 1 (one species without node charges)
        self.embedding = SphericalEmbedding(
            1 + self.node_charges, self.layout, num_edge_scalars, radial_hidden, avg_num_neighbors
        )
        # (|v|, q) -> h^0, or |v| -> h^0
        self.node_scalars = mlp([1 + self.node_charges, mlp_hidden, channels])
        # W^l: (L, c, 2) mixes the harmonics of (x_rel, v) into c channels of degree l
        self.vector_embedding = torch.nn.Parameter(torch.randn(lmax, channels, 2) / 2**0.5)
        if backbone == "siformer":
            layers = (SiFormerLayer(self.layout, num_edge_scalars, mlp_hidden, num_heads) for _ in range(num_layers))
        else:
            layers = (
                ScalarInteractionLayer(self.layout, num_edge_scalars, mlp_hidden, avg_num_neighbors, pre_norm=True)
                for _ in range(num_layers)
            )
        self.layers = torch.nn.ModuleList(layers)
        self.head = torch.nn.Linear(channels, 1, bias=False)  # sum_k w_k h^{1,k}
        self._edge_cache: Dict[Any, torch.Tensor] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def edges(self, num_systems: int, n: int, device) -> torch.Tensor:
        key = (num_systems, n, str(device))
        edge = self._edge_cache.get(key)
        if edge is None:
            if len(self._edge_cache) > 16:
                self._edge_cache.clear()
            edge = self._edge_cache[key] = fully_connected_edges(num_systems, n, device)
        return edge

    def features(self, x: torch.Tensor, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Final node features ``(B n, c, (L+1)^2)`` for batched inputs."""
        B, n, _ = x.shape
        dtype = self.dtype
        c = self.layout.channels
        x = x.to(dtype)
        v = v.to(dtype)
        if self.galilean_horizon is not None:
            v = v - v.mean(dim=1, keepdim=True)  # velocities in the centre-of-mass frame
        v = v.reshape(B * n, 3)
        q = q.to(dtype).reshape(B * n)
        x_rel = (x - x.mean(dim=1, keepdim=True)).reshape(B * n, 3)
        edge_index = self.edges(B, n, x.device)
        receiver, sender = edge_index[0], edge_index[1]
        pos = x.reshape(B * n, 3)
        vec = pos[sender] - pos[receiver]
        r = vec.norm(dim=-1)
        Y = _safe_harmonics(self.layout.sh_irreps, vec)
        qq = q[receiver] * q[sender]
        scalars = [self.radial(r), qq.unsqueeze(-1), r.unsqueeze(-1)]
        if self.coulomb_scalars:
            inv_r = 1.0 / r.clamp_min(COULOMB_MIN_DISTANCE)
            scalars += [(qq * inv_r**2 / 10).unsqueeze(-1), (inv_r / 10).unsqueeze(-1)]
        if self.orbit_scalars:
            scalars.append(pair_orbit_scalars(vec, v[sender] - v[receiver], qq))
        edge_scalars = torch.cat(scalars, dim=-1)
        u = torch.ones_like(r)  # fully connected graph: no envelope
        speed = v.norm(dim=-1, keepdim=True)
        if self.node_charges:
            species = (q > 0).long()
            node_scalars = torch.cat([speed, q.unsqueeze(-1)], dim=-1)
        else:
            species = torch.zeros_like(q, dtype=torch.long)
            node_scalars = speed
        h = self.embedding(species, edge_index, Y, edge_scalars, u)
        h0 = self.node_scalars(node_scalars)
        # |s| Y^l(s/|s|) for s = x_rel, v: (B n, 2, M)
        node_vectors = torch.stack([x_rel, v], dim=1)
        Yn = _safe_harmonics(self.layout.sh_irreps, node_vectors)
        Yn = Yn * node_vectors.norm(dim=-1, keepdim=True)
        W = self.layout.per_degree(
            torch.cat([torch.zeros(1, c, 2, dtype=dtype, device=x.device), self.vector_embedding]).permute(1, 2, 0)
        )  # (c, 2, M); degree 0 weights are zero
        h_vec = torch.einsum("ksm,nsm->nkm", W, Yn)
        h = h + h_vec
        h = torch.cat([h[:, :, :1] + h0.unsqueeze(-1), h[:, :, 1:]], dim=-1)
        for layer in self.layers:
            h = layer(h, edge_index, Y, edge_scalars, u)
        return h

    def displacement(self, x: torch.Tensor, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Head output ``sum_k w_k h^{1,k}`` (plus ``V T`` with ``galilean_horizon``): ``(B, n, 3)``
        in the model dtype."""
        B, n, _ = x.shape
        h = self.features(x, v, q)
        out = self.head(h[:, :, 1:4].transpose(1, 2)).squeeze(-1).reshape(B, n, 3)
        if self.galilean_horizon is not None:  # the centre of mass drifts by V T
            out = out + self.galilean_horizon * v.to(out.dtype).mean(dim=1, keepdim=True)
        return out

    def forward(self, x: torch.Tensor, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        unbatched = x.dim() == 2
        if unbatched:
            x, v, q = x.unsqueeze(0), v.unsqueeze(0), q.unsqueeze(0)
        if x.dim() != 3 or x.shape[-1] != 3 or v.shape != x.shape or q.shape != x.shape[:2]:
            raise ValueError(f"bad shapes x{tuple(x.shape)} v{tuple(v.shape)} q{tuple(q.shape)}")
        out = x + self.displacement(x, v, q).to(x.dtype)
        return out[0] if unbatched else out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --- model files ----------------------------------------------------------------
# the format and reader of sinet_ase.io; these keep the N-body names and take checkpoints


def _check_nbody(model: torch.nn.Module) -> None:
    if type(model) is not NBodySINet:
        raise TypeError(f"cannot save a {type(model).__name__} as an N-body model")


def nbody_model_to_dict(model: NBodySINet, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Plain dictionary (config + tensors + plain metadata; :func:`sinet_ase.io.model_to_dict`)."""
    _check_nbody(model)
    return model_to_dict(model, metadata)


def nbody_model_from_dict(payload: Dict[str, Any], source: str = "model") -> NBodySINet:
    """Rebuild an N-body model from a model-file dictionary of any format version."""
    return model_from_dict(payload, source, task="nbody")


def save_nbody_model(model: NBodySINet, path: Union[str, Path], metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write the model file atomically (:func:`sinet_ase.io.save_model`)."""
    _check_nbody(model)
    save_model(model, path, metadata)


def load_nbody_model(path: Union[str, Path]) -> NBodySINet:
    """Load a model file, or the best model inside a training checkpoint (eval mode, CPU).

    Uses ``torch.load(weights_only=True)``: no pickled code is ever run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelFileError(f"{path} is not a readable N-body model file: {type(err).__name__}: {err}") from err
    if isinstance(payload, dict) and payload.get("format") == FORMER_CHECKPOINT_FORMAT:
        payload = payload["best_model"] if payload.get("best_model") else payload["model"]
    return nbody_model_from_dict(payload, str(path))


def load_nbody_ensemble(spec: str) -> List[NBodySINet]:
    """Model files joined by commas (``"a.pt,b.pt"``) -> their models, one per file;
    a single path gives a list of one. Scored together they form an ensemble
    (:func:`sinet_ase.nbody.evaluate.evaluate_mse` takes the list)."""
    paths = [part for part in str(spec).split(",") if part]
    if not paths:
        raise ValueError("no model file given")
    return [load_nbody_model(path) for path in paths]
