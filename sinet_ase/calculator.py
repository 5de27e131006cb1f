"""ASE calculator that runs a SINet model.

Results in ASE units: energy and free_energy in eV, per-atom ``energies`` in
eV, forces in eV/Å, stress in eV/Å^3 (Voigt order xx, yy, zz, yz, xz, xy)
and per-atom ``stresses`` (N, 6) in eV/Å^3 (``atoms.get_stresses()``; ASE's
convention: each atom's virial over the cell volume, summing to the stress;
:class:`~sinet_ase.SINet` says how the virial is split between atoms). Stress
and stresses only for cells periodic in all three directions, otherwise ASE's
``PropertyNotImplementedError``; with ``compute_stress=True`` the stress of such a
cell comes with every call (one model call per barostat step). Forces are ``-dE/dx`` and stress
``(1/V) dE/d epsilon``, both by autograd, so MD conserves energy.

Between MD steps only the neighbour list is rebuilt; the model, its dtype
and device are fixed when the calculator is made. The calculator never
changes torch's process-wide default dtype.

One calculator may be shared by threads: a lock serialises
:meth:`SINetCalculator.get_property` (the entry of every ``get_*`` call,
which checks the cached structure, calculates and reads the results), so a
thread never reads the results of another thread's structure. The calls
then run one at a time; for parallel evaluation give each thread its own
calculator.
"""

import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .atoms_state import compare_atoms
from .committee import COMMITTEE_PROPERTIES, check_members, committee_specs, evaluate_committee
from .domain import DomainCheck, report_domain
from .fastpath import CompileMode, install as install_compile, resolve_mode
from .graph import atoms_to_graph
from .inference import prepare_model
from .ops import fused
from .memory import check_chunk_option, check_memory, check_periodic_memory, set_edge_chunks, update_auto_chunks

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SINetCalculator(Calculator):
    """ASE calculator for a SINet energy model.

    Args:
        model: path to a model file (see :func:`sinet_ase.save_model`), a shipped
            potential's name, or a model object (copied, so the caller's model is never
            cast or moved). A list of these, or a glob string such as
            ``"runs/c/member_*/best_model.pt"``, is a committee: the results hold the
            members' mean plus ``energy_std``, ``forces_std`` (n, 3), ``stress_std`` and
            the per-member values (:mod:`sinet_ase.committee`); members share cutoff
            and elements, and all run on one graph per structure.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"float64"`` (default, for MD) or ``"float32"`` (faster).
        edge_chunk_size: evaluate each layer one chunk of atoms, with about this many
            edges, at a time (:mod:`sinet_ase.ops.chunking`): same results, memory of a
            few feature tensors per atom plus one chunk instead of tens of kilobytes
            per edge. ``"auto"`` (default): chunks of about 128 MiB of working memory
            (:func:`sinet_ase.memory.auto_chunk_size`; 2 GiB on a GPU) for structures
            whose whole-graph pass would need more than half the memory available at the
            call, and at least 2 GiB (:func:`sinet_ase.memory.auto_chunk_from`; 2 GiB is
            about 40,000 edges, 800 atoms of liquid water, for the shipped potential in
            float64 without the fused kernels, about four times as many with them), the
            whole graph below; ``None``: always the whole graph.
        memory_limit_gib: refuse (:class:`~sinet_ase.InsufficientMemoryError`,
            before the call) a structure whose estimated memory
            (:func:`sinet_ase.memory.estimate_call_bytes`) exceeds this many GiB;
            ``None`` (default): the memory available at the time of the call.
        compile: run the network through ``torch.compile`` (:mod:`sinet_ase.fastpath`):
            same energies and forces, less per-call overhead, which is most of a step for
            small molecules, and fused per-edge work. ``"auto"`` (default): eager for the
            first 200 calls, then compiled where the machine has a C++ compiler (triton on
            CUDA), else eager with one :class:`~sinet_ase.fastpath.CompileFallbackWarning`;
            ``True``: compiled from the first call (errors raise); ``False``: eager. A
            compilation takes tens of seconds the first time and is cached on disk for
            later runs (``TORCHINDUCTOR_CACHE_DIR``).
        out_of_domain: what to do with a structure outside the training data that the
            model file records (:mod:`sinet_ase.domain`: atoms much closer than any
            training pair, far more neighbours, an absurd energy): ``"warn"`` (default:
            an :class:`~sinet_ase.domain.OutOfDomainWarning` for the first structure
            outside, so that an MD run is not flooded, and an
            :class:`~sinet_ase.OutOfDomainError` for any structure *far* outside, where
            the numbers are arbitrary: atoms closer than half the shortest training
            distance, 8 times the neighbours, an energy 10 margins off), ``"raise"``
            (an error for both) or ``"ignore"`` (no check).
        compute_stress: also compute the stress in every call on a cell periodic in all
            three directions, whatever property was asked for (as MACE's and NequIP's
            calculators always do), so that ``get_forces()`` followed by ``get_stress()``
            of the same positions costs one model call, not two. Barostats (ASE's MTK
            NPT, ``sinet-md --ensemble npt``) and cell filters ask for both every step.
            The stress adds a strain derivative to the backward pass, so it is off by
            default (``False``: stress only when asked for); it never applies to
            molecules or slabs, which have no stress.
        fused_kernels: run the edge work on the CPU through fused C++ kernels
            (:mod:`sinet_ase.ops.fused`: each gather-product-sum in one pass; same numbers,
            faster steps, most on large structures), eagerly, in the edge chunks and inside
            the compiled network (whose saved form records them). ``"auto"`` (default):
            where they are built on this machine, else without them, and a low-priority
            background process builds them for later runs once this process ends (needs a
            C++ compiler and ninja; ``SINET_ASE_BACKGROUND_COMPILE=off`` stops it);
            ``True``: built now where needed (about 20 s, once per machine; an error if the
            build fails); ``False``: never.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]

    def __init__(
        self,
        model: Union[str, Path, torch.nn.Module],
        device: str = "cpu",
        dtype: str = "float64",
        edge_chunk_size: Union[int, str, None] = "auto",
        compile: CompileMode = "auto",
        out_of_domain: str = "warn",
        memory_limit_gib: Optional[float] = None,
        compute_stress: bool = False,
        fused_kernels: fused.FusedOption = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._lock = threading.RLock()  # see the module docstring: one structure at a time
        if out_of_domain not in ("warn", "raise", "ignore"):
            raise ValueError(f"out_of_domain must be 'warn', 'raise' or 'ignore', got {out_of_domain!r}")
        self.out_of_domain = out_of_domain
        self._domain_warned = False  # "warn" reports the first structure outside the domain only
        check_chunk_option(edge_chunk_size)
        if memory_limit_gib is not None and not float(memory_limit_gib) > 0:
            raise ValueError(f"memory_limit_gib must be a positive number of GiB, got {memory_limit_gib!r}")
        self.memory_limit_gib = memory_limit_gib
        if not isinstance(compute_stress, (bool, np.bool_)):
            raise TypeError(f"compute_stress must be True or False, got {compute_stress!r}")
        self.compute_stress = bool(compute_stress)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        resolve_mode(compile)  # a bad value is an error before any model is loaded
        self.device = torch.device(device)
        #: whether the eager edge work runs through the fused CPU kernels (sinet_ase.ops.fused)
        self.fused_kernels = fused.resolve_option(fused_kernels, self.device)
        self.dtype = _DTYPES[dtype]
        members = committee_specs(model)
        self.models = [
            self._prepare_model(m, dtype, edge_chunk_size, compile)
            for m in (members if members is not None else [model])
        ]
        self.model = self.models[0]
        #: the training data's statistics stored in the model file (sinet_ase.domain), if any
        self.domain = (getattr(self.model, "metadata", None) or {}).get("training_domain")
        self._domain_check = (
            DomainCheck(self.domain, repulsive=getattr(self.model, "zbl", None) is not None) if self.domain else None
        )
        #: several models (a list or a glob was given): results add the committee spread
        self.committee = members is not None
        if self.committee:
            check_members(self.models)
            self.implemented_properties = self.implemented_properties + list(COMMITTEE_PROPERTIES)

    def _prepare_model(self, model, dtype, edge_chunk_size, compile):
        if not isinstance(model, (str, Path, torch.nn.Module)):
            raise TypeError(f"model must be a path or a torch.nn.Module, got {type(model).__name__}")
        model = prepare_model(model, self.device, dtype)
        fused.set_fused(model, self.fused_kernels)  # before the chunk sizes: the kernels need less memory
        set_edge_chunks(model, edge_chunk_size, self.device)
        install_compile(model, compile)
        return model

    @classmethod
    def from_pretrained(cls, name: str, **kwargs) -> "SINetCalculator":
        """Calculator for a potential shipped with sinet-ase (see :func:`sinet_ase.list_pretrained`)."""
        from .pretrained import pretrained_path

        return cls(pretrained_path(name), **kwargs)

    def check_state(self, atoms, tol=1e-15):
        """ASE's check for changes since the last calculation, with an exact-equality
        shortcut (:func:`sinet_ase.atoms_state.compare_atoms`, same result)."""
        return compare_atoms(self.atoms, atoms, tol=tol, excluded_properties=self.ignored_changes)

    def get_property(self, name, atoms=None, allow_calculation=True):
        """ASE's ``get_property`` under the calculator's lock (thread safety: module docstring)."""
        with self._lock:
            return super().get_property(name, atoms, allow_calculation)

    def __getstate__(self):  # a lock cannot be copied or pickled: a copy gets its own
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _check_domain(self, graph, energy: float) -> None:
        """Warn or raise for a structure outside the training domain (``out_of_domain``)."""
        if self._domain_check is not None and self.out_of_domain != "ignore":
            outside, far = self._domain_check(graph, energy)
            self._domain_warned = report_domain(outside, far, self.out_of_domain, self._domain_warned, energy)

    @property
    def elements(self):
        return self.model.elements

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        # stress, stress_std, ..., and stresses (whose results then hold the stress as well)
        asked_stress = any(p.startswith("stress") for p in properties)
        want_stresses = "stresses" in properties
        if asked_stress and not atoms.pbc.all():
            name = "per-atom stresses need" if want_stresses else "stress needs"
            raise PropertyNotImplementedError(
                f"{name} a cell periodic in all three directions (atoms.pbc is "
                f"{atoms.pbc.tolist()}); set atoms.cell and atoms.pbc = True for a bulk "
                "structure (a molecule or a slab has no stress)"
            )
        # compute_stress: the stress of a bulk cell rides along with every call (one model
        # call serves a barostat's forces and stress)
        want_stress = asked_stress or (self.compute_stress and bool(atoms.pbc.all()))
        limit = None if self.memory_limit_gib is None else int(float(self.memory_limit_gib) * 2**30)
        backbone = self.model.backbone
        for model in self.models:
            update_auto_chunks(model, self.device)
        check_periodic_memory(self.model, atoms, self.device, limit)
        graph = atoms_to_graph(atoms, self.model.cutoff, self.model.elements)
        if self.device.type != "cpu":  # built on the CPU; Data.to costs ~10 µs even as a no-op
            graph = graph.to(self.device)
        num_edges = int(graph.edge_index.shape[1])
        check_memory(self.model, len(atoms), num_edges, backbone.chunk_size_for(num_edges), self.device, limit)
        if self.committee:
            results = evaluate_committee(self.models, graph, want_stress, want_stresses)
            self._check_domain(graph, results["energy"])
            self.results = results
            return
        out = self.model(graph, compute_forces=True, compute_stress=want_stress, compute_stresses=want_stresses)
        energy = float(out["energy"].item())
        if not np.isfinite(energy):
            raise FloatingPointError(
                "the model returned a non-finite energy; the structure is far outside what it "
                "was trained on, or the weights are damaged"
            )
        self._check_domain(graph, energy)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().cpu().numpy().astype(np.float64),
            "forces": out["forces"].detach().cpu().numpy().astype(np.float64),
        }
        if want_stress:
            stress = out["stress"][0].detach().cpu().numpy().astype(np.float64)
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if want_stresses:
            stresses = out["stresses"].detach().cpu().numpy().astype(np.float64)
            self.results["stresses"] = full_3x3_to_voigt_6_stress(stresses)
