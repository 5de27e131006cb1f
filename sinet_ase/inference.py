"""Batched evaluation of many structures: :func:`predict` (exported as ``sinet_ase.predict``).

One call to the model per batch of ``batch_size`` structures (graphs joined with
:func:`~sinet_ase.graph.batch_graphs`) instead of one per structure, so the
per-call overhead (Python, operator launches) is paid once per batch. The
numbers are those of :class:`~sinet_ase.SINetCalculator` called on each
structure in turn (the model's neighbour sums never mix structures; tested to
1e-9 in float64).
"""

import copy
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from .domain import DomainCheck, report_domain
from .errors import SINetInputError
from .graph import atoms_to_graph, batch_graphs
from .io import load_model
from .ops import fused
from .memory import (
    check_chunk_option,
    check_memory,
    check_periodic_memory,
    estimate_call_bytes,
    memory_limit,
    set_edge_chunks,
    update_auto_chunks,
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: properties :func:`predict` can return
PREDICT_PROPERTIES = ("energy", "energies", "forces", "stress", "stresses")

ModelSpec = Union[str, Path, torch.nn.Module]


def resolve_model(model: ModelSpec) -> torch.nn.Module:
    """A model object from a model object (deep-copied, so the caller's is never cast,
    moved or frozen), a model file, or the name of a shipped potential
    (:func:`~sinet_ase.list_pretrained`); a file of that name wins over a shipped one."""
    if isinstance(model, torch.nn.Module):
        return copy.deepcopy(model)
    if isinstance(model, (str, Path)):
        from .pretrained import list_pretrained, pretrained_path

        if isinstance(model, str) and not Path(model).exists() and model in list_pretrained():
            return load_model(pretrained_path(model), task="potential")
        return load_model(model, task="potential")
    raise TypeError(f"model must be a path or a torch.nn.Module, got {type(model).__name__}")


def prepare_model(
    model: ModelSpec, device: Union[str, torch.device] = "cpu", dtype: str = "float64"
) -> torch.nn.Module:
    """:func:`resolve_model`, then cast to ``dtype`` (``"float32"`` or ``"float64"``), move
    to ``device``, switch to eval mode and freeze the weights (forces need gradients with
    respect to positions only)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    model = resolve_model(model).to(device=torch.device(device), dtype=_DTYPES[dtype]).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _check_properties(properties: Iterable[str]) -> List[str]:
    if isinstance(properties, str):
        properties = [properties]
    properties = list(properties)
    unknown = [p for p in properties if p not in PREDICT_PROPERTIES]
    if unknown or not properties:
        raise ValueError(
            f"properties must be a non-empty selection of {', '.join(PREDICT_PROPERTIES)}, got {properties!r}"
        )
    return properties


def predict(
    model: ModelSpec,
    structures: Union[Atoms, Sequence[Atoms]],
    batch_size: int = 32,
    properties: Sequence[str] = ("energy", "forces"),
    dtype: str = "float64",
    device: str = "cpu",
    edge_chunk_size: Union[int, str, None] = "auto",
    memory_limit_gib: Optional[float] = None,
    out_of_domain: str = "warn",
    fused_kernels: fused.FusedOption = "auto",
) -> Dict[str, Union[np.ndarray, List[np.ndarray]]]:
    """Evaluate a SINet model on many structures, ``batch_size`` structures per model call.

    Args:
        model: a SINet model object, a model file, or the name of a shipped potential
            (:func:`~sinet_ase.list_pretrained`). A model object is copied (and the
            caller's left as it is) unless it is already prepared, i.e. in ``dtype`` on
            ``device``, in eval mode with frozen weights (:func:`prepare_model`,
            ``SINetCalculator(...).model``): prepare it once for many calls.
        structures: ``ase.Atoms`` objects (molecules, slabs, crystals may be mixed), or one.
        batch_size: structures per model call, at most: a batch is cut earlier where its
            estimated memory (:func:`sinet_ase.memory.estimate_call_bytes`) would exceed
            the limit (below).
        properties: any of ``"energy"``, ``"energies"`` (per atom), ``"forces"``,
            ``"stress"``, ``"stresses"`` (per atom). Forces and stresses cost one backward
            pass; without them the call is a forward pass only.
        dtype: ``"float64"`` (default, as :class:`~sinet_ase.SINetCalculator`) or
            ``"float32"`` (faster).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        edge_chunk_size, memory_limit_gib, out_of_domain, fused_kernels: as for
            :class:`~sinet_ase.SINetCalculator`: automatic edge chunks for large batches;
            a structure that alone would need more memory than ``memory_limit_gib`` (default:
            75 % of the memory available) is refused before the call; a structure far
            outside the training domain is an :class:`~sinet_ase.OutOfDomainError` (the
            message names its index), one outside it warns once per call; the fused edge
            kernels where they are built (:mod:`sinet_ase.ops.fused`).

    Returns:
        a dictionary with the requested keys, structure ``k`` at position ``k``:
        ``energy`` ``(G,)`` array in eV; ``energies`` a list of ``(n_k,)`` arrays, eV;
        ``forces`` a list of ``(n_k, 3)`` arrays, eV/Å; ``stress`` ``(G, 6)`` array,
        eV/Å^3, Voigt order xx, yy, zz, yz, xz, xy; ``stresses`` a list of ``(n_k, 6)``
        arrays, eV/Å^3, summing to the stress (ASE's ``get_stresses``). All float64 numpy.

    Raises:
        SINetInputError: stress asked for a structure that is not periodic in all three
            directions, or a structure the model cannot evaluate (the message names its
            index); :class:`~sinet_ase.UnknownElementError` for an element the model
            does not know.
        FloatingPointError: a non-finite energy (names the structures).
        InsufficientMemoryError: a structure too large for the memory (names it).
    """
    properties = _check_properties(properties)
    if isinstance(structures, Atoms):
        structures = [structures]
    structures = list(structures)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    batch_size = int(batch_size)
    want_stresses = "stresses" in properties
    want_stress = "stress" in properties or want_stresses
    for k, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise SINetInputError(f"structure {k}: expected an ase.Atoms object, got {type(atoms).__name__}")
        if want_stress and not atoms.pbc.all():
            name = "stresses need" if want_stresses else "stress needs"
            raise SINetInputError(
                f"structure {k}: {name} a cell periodic in all three directions (its pbc is "
                f"{atoms.pbc.tolist()}); leave 'stress' and 'stresses' out of properties or "
                "evaluate the periodic structures separately"
            )
    check_chunk_option(edge_chunk_size)
    if memory_limit_gib is not None and not float(memory_limit_gib) > 0:
        raise ValueError(f"memory_limit_gib must be a positive number of GiB, got {memory_limit_gib!r}")
    if out_of_domain not in ("warn", "raise", "ignore"):
        raise ValueError(f"out_of_domain must be 'warn', 'raise' or 'ignore', got {out_of_domain!r}")
    use_fused = fused.resolve_option(fused_kernels, torch.device(device))
    if not _is_prepared(model, device, dtype):
        model = prepare_model(model, device, dtype)
    backbone = model.backbone
    saved_chunks = (backbone.edge_chunk_size, backbone.edge_chunk_from)  # a caller's prepared model
    set_edge_chunks(model, edge_chunk_size, device)
    try:
        with fused.fused_in(model, use_fused):
            return _predict(
                model,
                structures,
                batch_size,
                properties,
                device,
                None if memory_limit_gib is None else int(float(memory_limit_gib) * 2**30),
                out_of_domain,
            )
    finally:
        backbone.edge_chunk_size, backbone.edge_chunk_from = saved_chunks


def _batches(model, structures, batch_size: int, device, limit_bytes: Optional[int]):
    """``(start, graphs)``: consecutive structures, at most ``batch_size`` per batch and, beyond
    the first of a batch, only while the batch's estimated memory stays within the limit
    (:func:`~sinet_ase.memory.memory_limit`); a structure that alone exceeds it raises
    :class:`~sinet_ase.InsufficientMemoryError` (before its neighbour list, if periodic)."""
    start, graphs, atoms_in, edges_in = 0, [], 0, 0
    for k, atoms in enumerate(structures):
        update_auto_chunks(model, device)
        try:
            check_periodic_memory(model, atoms, device, limit_bytes)
            graph = atoms_to_graph(atoms, model.cutoff, model.elements)
            edges = int(graph.edge_index.shape[1])
            check_memory(model, len(atoms), edges, model.backbone.chunk_size_for(edges), device, limit_bytes)
        except SINetInputError as err:
            err.args = (f"structure {k}: {err}",)
            raise
        if graphs:
            total = edges_in + edges
            need = estimate_call_bytes(model, atoms_in + len(atoms), total, model.backbone.chunk_size_for(total))
            limit = memory_limit(device, limit_bytes)
            if len(graphs) == batch_size or (limit is not None and need > limit):
                yield start, graphs
                start, graphs, atoms_in, edges_in = k, [], 0, 0
        graphs.append(graph)
        atoms_in, edges_in = atoms_in + len(atoms), edges_in + edges
    if graphs:
        yield start, graphs


def _predict(model, structures, batch_size, properties, device, limit_bytes, out_of_domain):
    want_stresses = "stresses" in properties
    want_stress = "stress" in properties or want_stresses
    want_forces = "forces" in properties
    domain = (getattr(model, "metadata", None) or {}).get("training_domain")
    check = DomainCheck(domain, repulsive=getattr(model, "zbl", None) is not None) if domain else None
    warned = False

    energy = np.empty(len(structures), dtype=np.float64)
    energies: List[np.ndarray] = []
    forces: List[np.ndarray] = []
    stresses: List[np.ndarray] = []
    stress = np.empty((len(structures), 6), dtype=np.float64)
    for start, graphs in _batches(model, structures, batch_size, device, limit_bytes):
        chunk = structures[start : start + len(graphs)]
        out = model(
            batch_graphs(graphs).to(_model_device(model)),
            compute_forces=want_forces,
            compute_stress=want_stress,
            compute_stresses=want_stresses,
        )
        batch_energy = out["energy"].detach().cpu().numpy().astype(np.float64)
        bad = np.where(~np.isfinite(batch_energy))[0]
        if len(bad):
            raise FloatingPointError(
                f"the model returned a non-finite energy for structure(s) {(bad + start).tolist()}; "
                "they are far outside what it was trained on, or the weights are damaged"
            )
        if check is not None and out_of_domain != "ignore":
            for k, (graph, e) in enumerate(zip(graphs, batch_energy), start):
                try:
                    warned = report_domain(*check(graph, float(e)), out_of_domain, warned, float(e))
                except SINetInputError as err:
                    err.args = (f"structure {k}: {err}",)
                    raise
        energy[start : start + len(chunk)] = batch_energy
        counts = [len(atoms) for atoms in chunk]
        if "energies" in properties:
            per_atom = out["energies"].detach().cpu().numpy().astype(np.float64)
            energies.extend(np.split(per_atom, np.cumsum(counts)[:-1]))
        if want_forces:
            batch_forces = out["forces"].detach().cpu().numpy().astype(np.float64)
            forces.extend(np.split(batch_forces, np.cumsum(counts)[:-1]))
        if want_stress:
            for g, full in enumerate(out["stress"].detach().cpu().numpy().astype(np.float64)):
                stress[start + g] = full_3x3_to_voigt_6_stress(full)
        if want_stresses:
            per_atom = full_3x3_to_voigt_6_stress(out["stresses"].detach().cpu().numpy().astype(np.float64))
            stresses.extend(np.split(per_atom, np.cumsum(counts)[:-1]))

    results: Dict[str, Union[np.ndarray, List[np.ndarray]]] = {}
    for name in properties:
        results[name] = {
            "energy": energy,
            "energies": energies,
            "forces": forces,
            "stress": stress,
            "stresses": stresses,
        }[name]
    return results


def _is_prepared(model, device, dtype) -> bool:
    """Whether ``model`` can run as it is: a module already in ``dtype`` on ``device``, in
    eval mode, weights frozen (as :func:`prepare_model` leaves it), so that repeated
    calls do not copy it."""
    if not isinstance(model, torch.nn.Module) or model.training or dtype not in _DTYPES:
        return False
    parameters = list(model.parameters())
    return (
        bool(parameters)
        and not any(p.requires_grad for p in parameters)
        and all(p.dtype == _DTYPES[dtype] for p in parameters)
        and _model_device(model) == _normalised_device(device)
    )


def _normalised_device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's weights."""
    return next(model.parameters()).device
