r"""SINet heads for QM9: a scalar-property model and a dipole model.

Both share the :class:`~sinet_ase.model.SINetBackbone` (species embedding +
Scalar Interaction layers) and take the same graphs as the energy model
(:func:`sinet_ase.graph.atoms_to_graph`, batched with
:func:`~sinet_ase.graph.batch_graphs`).

Scalar property (:class:`QM9ScalarModel`; alpha, gap, HOMO, LUMO, U0, ...)
----------------------------------------------------------------------------
Per atom an MLP of the invariant channels ``o_i = MLP(h_i^0)``, pooled over
the molecule (``sum`` for extensive targets, ``mean`` for intensive ones),
then un-standardised::

    y = target_mean + target_std * pool_i(o_i) + sum_i ref_{Z_i}

``ref`` are per-element atom references (zero unless set: the trainer fits
them by least squares for extensive targets, or takes the dataset's
free-atom values); ``target_mean``/``target_std`` are the mean and standard
deviation of ``y - sum_i ref_{Z_i}`` over the training set. So the network
output ``pool_i(o_i)`` is the *standardised* target ``z``, and an L1 loss on
``z`` is ``|y_pred - y| / target_std``. All three live in the model's
``config`` (Python floats) and in float64 buffers rebuilt from it, so a model
file is self-contained and casting to float32 never rounds them.

Dipole (:class:`QM9DipoleModel`; target ``mu``)
-----------------------------------------------
Latent charges from the invariant channels, made neutral per molecule,
plus atomic dipoles from the type-1 channels::

    q_i = MLP(h_i^0) - mean_{j in molecule} MLP(h_j^0)          (sum_i q_i = 0)
    mu_i = sum_k w_k h_i^{1,k}                                   (a 1o vector)
    mu = C (sum_i q_i (x_i - centre) + sum_i mu_i),  C = 1 e Å in Debye

``centre`` is the mean position of the molecule (with neutral charges the
result does not depend on it; centring only keeps the numbers small). ``mu``
is a polar vector: under ``x -> R x + t`` with ``R`` in O(3) (improper
rotations included) ``mu -> R mu``. The prediction for the QM9 target is
``|mu|`` (Debye); the vector, the charges and the atomic dipoles are also
returned.

Type-1 components: e3nn's ``l = 1`` real spherical harmonics are
``sqrt(3) P r / |r|`` with ``P`` a fixed permutation. e3nn 0.6 (used here)
has ``P = 1``, i.e. component order ``(x, y, z)``; older e3nn releases used
``(y, z, x)``. Rather than assume either, :func:`sh1_to_cartesian_matrix`
reads ``P`` off e3nn itself at construction (from the harmonics of the three
unit vectors), and the tests check the resulting vector against a rotation.

Model files
-----------
The format of :mod:`sinet_ase.io` (``model_type`` ``"QM9ScalarModel"`` or
``"QM9DipoleModel"``, registered here with task ``qm9``): :func:`sinet_ase.load_model`
reads them like any model file, :func:`load_qm9_model` refuses other kinds (and takes a
run folder), and the ASE calculator refuses them (it needs a potential).
"""

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from e3nn import o3

from ..errors import ConfigError
from ..hparams import DEFAULTS, BackboneConfig
from ..io import load_model, model_from_dict, model_to_dict, save_model
from ..model import SINetBackbone, edge_vectors, graph_batch
from ..ops.mlp import mlp
from ..registry import register_model

__all__ = [
    "QM9_ELEMENTS",
    "E_ANGSTROM_TO_DEBYE",
    "BACKBONE_KEYS",
    "backbone_keys",
    "HEAD_KEYS",
    "POOLING",
    "QM9ScalarModel",
    "QM9DipoleModel",
    "QM9_MODEL_TYPES",
    "default_pooling",
    "build_qm9_model",
    "sh1_to_cartesian_matrix",
    "qm9_model_to_dict",
    "qm9_model_from_dict",
    "save_qm9_model",
    "load_qm9_model",
]

#: Elements of QM9, ordered by atomic number.
QM9_ELEMENTS = ("H", "C", "N", "O", "F")

#: 1 e Å in Debye (1 D = 0.2081943 e Å; CODATA: 1 D = 1e-21/c C m, e = 1.602176634e-19 C).
E_ANGSTROM_TO_DEBYE = 1.602176634e-29 / (1e-21 / 299792458.0)

#: Keywords of :class:`~sinet_ase.model.SINetBackbone` that a QM9 model passes on
#: (:class:`~sinet_ase.hparams.BackboneConfig`).
BACKBONE_KEYS = BackboneConfig.keys()


def backbone_keys() -> tuple:
    """:data:`BACKBONE_KEYS` (a function for the callers written when the SiFormer keys were
    optional)."""
    return BACKBONE_KEYS


#: Head keywords a config's ``model`` section may set (besides the backbone ones).
HEAD_KEYS = ("pooling", "head_hidden")
POOLING = ("sum", "mean")

#: Targets pooled by a mean (intensive: orbital energies); every other scalar is summed.
_INTENSIVE = ("homo", "lumo", "gap")


def default_pooling(target: str) -> str:
    """``mean`` for the orbital energies (intensive), ``sum`` for the rest (extensive)."""
    return "mean" if target in _INTENSIVE else "sum"


def sh1_to_cartesian_matrix(dtype=torch.float64) -> torch.Tensor:
    """``P`` with ``Y^1(r) = sqrt(3) P r/|r|`` (e3nn, component normalisation): ``(3, 3)``.

    A row vector ``s`` of ``l = 1`` components (e3nn order) is the Cartesian
    vector ``s @ P`` (``P`` is orthogonal). Read off e3nn, so it is right for
    every e3nn version.
    """
    eye = torch.eye(3, dtype=torch.float64)
    Y = o3.spherical_harmonics(1, eye, normalize=True, normalization="component")  # row a: Y(e_a)
    P = Y.T / 3**0.5
    if not torch.allclose(P @ P.T, eye, atol=1e-12):
        raise RuntimeError("e3nn's l=1 harmonics are not an orthogonal map of (x, y, z)")
    return P.to(dtype)


def _pool(values: torch.Tensor, batch: torch.Tensor, num_graphs: int, how: str) -> torch.Tensor:
    """Sum or mean of per-atom ``values`` (N, ...) over each molecule: (G, ...)."""
    out = torch.zeros((num_graphs,) + values.shape[1:], dtype=values.dtype, device=values.device)
    out = out.index_add(0, batch, values)
    if how == "mean":
        counts = torch.bincount(batch, minlength=num_graphs).to(values.dtype)
        out = out / counts.view((-1,) + (1,) * (values.dim() - 1))
    return out


class _QM9Model(torch.nn.Module):
    """Shared parts: backbone, config bookkeeping, float64 constants rebuilt from config."""

    model_kind = ""

    def __init__(self, elements: Sequence[str], target: str, backbone_kw: Dict[str, Any]):
        super().__init__()
        if not isinstance(target, str) or not target:
            raise ValueError(f"target must be a QM9 target name, got {target!r}")
        # None: the default (QM9 configs may write "backbone: null")
        hparams = BackboneConfig(**{k: v for k, v in backbone_kw.items() if v is not None}).as_dict()
        self.config: Dict[str, Any] = dict(elements=list(elements), target=target, **hparams)
        self.backbone = SINetBackbone(elements=elements, **hparams)

    @property
    def elements(self) -> List[str]:
        return self.backbone.elements

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    @property
    def target(self) -> str:
        return self.config["target"]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _apply(self, fn, *args, **kwargs):
        # .to(float32) would round the float64 constants: rebuild them from config
        out = super()._apply(fn, *args, **kwargs)
        self._rebuild_constants()
        return out

    def _rebuild_constants(self, device=None) -> None:  # pragma: no cover - overridden
        pass

    def _features(self, graph):
        """Backbone features ``(N, c, (L+1)^2)``, the batch vector and the number of molecules."""
        batch = graph_batch(graph)
        num_graphs = int(graph.cell.shape[0])
        positions = graph.pos.to(torch.float64)
        vectors = edge_vectors(graph, positions, graph.cell.to(torch.float64), batch).to(self.dtype)
        return self.backbone(graph, vectors), batch, num_graphs


@register_model(task="qm9")
class QM9ScalarModel(_QM9Model):
    """Backbone + per-atom MLP on ``h^0``, sum or mean pooling, standardised output.

    Args:
        elements: chemical symbols (default the five QM9 elements).
        target: QM9 target name (kept in the model file; no effect on the maths).
        cutoff, lmax, channels, num_layers, num_radial, radial_hidden, mlp_hidden,
            envelope_p, avg_num_neighbors: backbone keywords (see :class:`~sinet_ase.SINet`).
        backbone, num_heads: ``"siformer"`` and its attention heads (default: Scalar
            Interaction); defaults of all backbone keywords: :mod:`sinet_ase.hparams`.
        pooling: ``"sum"`` or ``"mean"`` over the atoms of a molecule.
        head_hidden: hidden width of the readout MLP (default ``channels``).
        target_mean, target_std: standardisation of ``y - sum_i ref_{Z_i}``.
        atom_refs: per-element references ``{"H": ..., ...}`` in target units (default 0).

    forward(graph) -> dict with ``prediction`` (G,) in target units and
    ``standardised`` (G,) (``pool_i o_i``), float64.
    """

    model_kind = "scalar"

    def __init__(
        self,
        elements: Sequence[str] = QM9_ELEMENTS,
        target: str = "gap",
        cutoff: float = DEFAULTS.cutoff,
        lmax: int = DEFAULTS.lmax,
        channels: int = DEFAULTS.channels,
        num_layers: int = DEFAULTS.num_layers,
        num_radial: int = DEFAULTS.num_radial,
        radial_hidden: int = DEFAULTS.radial_hidden,
        mlp_hidden: int = DEFAULTS.mlp_hidden,
        envelope_p: int = DEFAULTS.envelope_p,
        avg_num_neighbors: float = DEFAULTS.avg_num_neighbors,
        pooling: str = "sum",
        head_hidden: Optional[int] = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        atom_refs: Optional[Mapping[str, float]] = None,
        backbone: str = DEFAULTS.backbone,
        num_heads: int = DEFAULTS.num_heads,
    ):
        backbone_kw = dict(
            cutoff=cutoff,
            lmax=lmax,
            channels=channels,
            num_layers=num_layers,
            num_radial=num_radial,
            radial_hidden=radial_hidden,
            mlp_hidden=mlp_hidden,
            envelope_p=envelope_p,
            avg_num_neighbors=avg_num_neighbors,
            backbone=backbone,
            num_heads=num_heads,
        )
        super().__init__(elements, target, backbone_kw)
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {pooling!r}")
        if not float(target_std) > 0:
            raise ValueError(f"target_std must be positive, got {target_std}")
        hidden = int(head_hidden or channels)
        self.config.update(pooling=pooling, head_hidden=hidden)
        self.head = mlp([int(channels), hidden, 1])
        self.set_standardisation(target_mean, target_std, atom_refs or {})

    def set_standardisation(self, target_mean: float, target_std: float, atom_refs: Mapping[str, float]) -> None:
        """Set ``target_mean``, ``target_std`` and the atom references (kept in ``config``)."""
        unknown = set(atom_refs) - set(self.elements)
        if unknown:
            raise ValueError(f"atom references for {sorted(unknown)}, not in elements {self.elements}")
        self.config["target_mean"] = float(target_mean)
        self.config["target_std"] = float(target_std)
        self.config["atom_refs"] = {s: float(atom_refs.get(s, 0.0)) for s in self.elements}
        self._rebuild_constants()

    def _rebuild_constants(self, device=None) -> None:
        device = device or self.head[0].weight.device
        refs = [self.config["atom_refs"][s] for s in self.elements]
        self.register_buffer("atom_ref", torch.tensor(refs, dtype=torch.float64, device=device), persistent=False)
        self.register_buffer(
            "target_mean",
            torch.tensor(self.config["target_mean"], dtype=torch.float64, device=device),
            persistent=False,
        )
        self.register_buffer(
            "target_std", torch.tensor(self.config["target_std"], dtype=torch.float64, device=device), persistent=False
        )

    def reference(self, graph) -> torch.Tensor:
        """``sum_i ref_{Z_i}`` per molecule, (G,) float64."""
        batch = graph_batch(graph)
        refs = self.atom_ref[self.backbone.species(graph.z)]
        return _pool(refs, batch, int(graph.cell.shape[0]), "sum")

    def forward(self, graph) -> Dict[str, torch.Tensor]:
        h, batch, num_graphs = self._features(graph)
        per_atom = self.head(h[:, :, 0]).squeeze(-1).to(torch.float64)
        z = _pool(per_atom, batch, num_graphs, self.config["pooling"])
        prediction = self.target_mean + self.target_std * z + self.reference(graph)
        return {"prediction": prediction, "standardised": z}


@register_model(task="qm9")
class QM9DipoleModel(_QM9Model):
    """Backbone + neutral latent charges (from ``h^0``) + atomic dipoles (from ``h^1``).

    Args: as :class:`QM9ScalarModel` (``lmax >= 1`` is required), plus
        target_std: the loss scale, the standard deviation of ``|mu|`` (Debye)
        over the training set (no mean is subtracted: ``|mu| >= 0``).

    forward(graph) -> dict (float64): ``prediction`` ``|mu|`` (G,) in D,
    ``dipole`` (G, 3) in D (Cartesian x, y, z), ``charges`` (N,) in e (they
    sum to zero per molecule), ``atomic_dipoles`` (N, 3) in e Å (Cartesian).
    """

    model_kind = "dipole"

    def __init__(
        self,
        elements: Sequence[str] = QM9_ELEMENTS,
        target: str = "mu",
        cutoff: float = DEFAULTS.cutoff,
        lmax: int = DEFAULTS.lmax,
        channels: int = DEFAULTS.channels,
        num_layers: int = DEFAULTS.num_layers,
        num_radial: int = DEFAULTS.num_radial,
        radial_hidden: int = DEFAULTS.radial_hidden,
        mlp_hidden: int = DEFAULTS.mlp_hidden,
        envelope_p: int = DEFAULTS.envelope_p,
        avg_num_neighbors: float = DEFAULTS.avg_num_neighbors,
        head_hidden: Optional[int] = None,
        target_std: float = 1.0,
        backbone: str = DEFAULTS.backbone,
        num_heads: int = DEFAULTS.num_heads,
    ):
        if int(lmax) < 1:
            raise ValueError(f"the dipole model needs type-1 features: lmax >= 1, got {lmax}")
        if not float(target_std) > 0:
            raise ValueError(f"target_std must be positive, got {target_std}")
        backbone_kw = dict(
            cutoff=cutoff,
            lmax=lmax,
            channels=channels,
            num_layers=num_layers,
            num_radial=num_radial,
            radial_hidden=radial_hidden,
            mlp_hidden=mlp_hidden,
            envelope_p=envelope_p,
            avg_num_neighbors=avg_num_neighbors,
            backbone=backbone,
            num_heads=num_heads,
        )
        super().__init__(elements, target, backbone_kw)
        hidden = int(head_hidden or channels)
        self.config.update(head_hidden=hidden, target_std=float(target_std))
        self.charge_head = mlp([int(channels), hidden, 1])
        self.dipole_weights = torch.nn.Linear(int(channels), 1, bias=False)  # sum_k w_k h^{1,k}
        self._rebuild_constants()

    def _rebuild_constants(self, device=None) -> None:
        device = device or self.dipole_weights.weight.device
        self.register_buffer("sh1_to_xyz", sh1_to_cartesian_matrix().to(device), persistent=False)
        self.register_buffer(
            "target_std", torch.tensor(self.config["target_std"], dtype=torch.float64, device=device), persistent=False
        )

    def forward(self, graph) -> Dict[str, torch.Tensor]:
        h, batch, num_graphs = self._features(graph)
        raw = self.charge_head(h[:, :, 0]).squeeze(-1).to(torch.float64)  # (N,)
        charges = raw - _pool(raw, batch, num_graphs, "mean")[batch]
        # (N, c, 3) type-1 channels in e3nn order -> one vector per atom -> Cartesian
        h1 = h[:, :, 1:4].transpose(1, 2)  # (N, 3, c)
        atomic = self.dipole_weights(h1).squeeze(-1).to(torch.float64) @ self.sh1_to_xyz  # (N, 3)
        positions = graph.pos.to(torch.float64)
        centre = _pool(positions, batch, num_graphs, "mean")
        moment = charges.unsqueeze(-1) * (positions - centre[batch]) + atomic
        dipole = E_ANGSTROM_TO_DEBYE * _pool(moment, batch, num_graphs, "sum")
        # |mu| with a zero (sub)gradient at mu = 0 (symmetric molecules), no NaN
        eps = 1e-9
        norm = torch.sqrt((dipole**2).sum(-1) + eps**2) - eps
        return {
            "prediction": norm,
            "standardised": norm / self.target_std,
            "dipole": dipole,
            "charges": charges,
            "atomic_dipoles": atomic,
        }


#: model_type -> class, for model files.
QM9_MODEL_TYPES = {"QM9ScalarModel": QM9ScalarModel, "QM9DipoleModel": QM9DipoleModel}


def build_qm9_model(config: Mapping[str, Any]) -> _QM9Model:
    """Rebuild a model from its ``config`` dict: the dipole model for target ``mu``,
    the scalar model otherwise. Unknown keys are a :class:`ConfigError`."""
    config = dict(config)
    target = config.get("target", "gap")
    cls = QM9DipoleModel if target == "mu" else QM9ScalarModel
    import inspect

    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = [k for k in config if k not in allowed]
    if unknown:
        raise ConfigError(f"{cls.__name__} has no option(s) {', '.join(unknown)}; valid: {', '.join(allowed)}")
    return cls(**config)


def _check_qm9(model: torch.nn.Module) -> None:
    if type(model) not in QM9_MODEL_TYPES.values():
        raise TypeError(f"cannot save a {type(model).__name__} as a QM9 model; known: {sorted(QM9_MODEL_TYPES)}")


def qm9_model_to_dict(model: _QM9Model, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The dictionary stored in a model file (:func:`sinet_ase.io.model_to_dict`)."""
    _check_qm9(model)
    return model_to_dict(model, metadata)


def qm9_model_from_dict(payload: Dict[str, Any], source: str = "model") -> _QM9Model:
    """Rebuild a QM9 model from a model-file dictionary (eval mode, CPU); other kinds are
    a :class:`~sinet_ase.errors.ModelFileError`."""
    return model_from_dict(payload, source, task="qm9")


def save_qm9_model(model: _QM9Model, path: Union[str, Path], metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` to ``path`` atomically (:func:`sinet_ase.io.save_model`)."""
    _check_qm9(model)
    save_model(model, path, metadata)


def load_qm9_model(path: Union[str, Path]) -> _QM9Model:
    """Load a QM9 model file (:func:`sinet_ase.io.load_model` with task ``qm9``; eval mode, CPU).

    ``path`` may also be a run folder: its ``best_model.pt`` is loaded.
    """
    path = Path(path)
    if path.is_dir() and (path / "best_model.pt").is_file():
        path = path / "best_model.pt"
    return load_model(path, task="qm9")
