"""The fast path: when the calculator runs the network through ``torch.compile``, and how.

Modes (``SINetCalculator(compile=...)``, ``sinet-md --compile``):

* ``False``: eager, as PyTorch runs the model.
* ``True``: compiled from the first call; a failure to compile raises.
* ``"auto"`` (the calculator's default): eager for the first :data:`AUTO_COMPILE_AFTER`
  calls, so that single points and short relaxations never pay for a compilation, then
  compiled where this machine can compile (a C++ compiler on CPU, triton on CUDA). Where
  it cannot, or compiling fails, one :class:`CompileFallbackWarning` says why and the run
  goes on eagerly with the same numbers. ``AutoCompile(after_calls=n)`` is ``"auto"`` with
  another threshold (``sinet-md`` passes 0 for runs of :data:`MD_AUTO_COMPILE_STEPS` steps or
  more, long enough to pay the compilation back). The environment variable
  ``SINET_ASE_COMPILE=off`` makes ``"auto"`` eager.

What is compiled. One graph per model returns the per-atom energies ``E_i`` ``(N,)`` and
the gradient of their sum with respect to the edge vectors, ``g = d(sum_i E_i)/d r_ij``
``(E, 3)``: forward and backward in one inductor graph (dynamo traces the
``torch.autograd.grad`` inside it), so a call is one compiled function, not a compiled
forward, the autograd engine and a compiled backward. :class:`_PrecomputedGradient` hands
``g`` to autograd: the model's energy is ``scale * sum_i E_i + shifts``, whose gradient
with respect to every ``E_i`` is the same number ``c``, and then the backward is ``c g``.
For any other output gradient, or a double backward, the backward recomputes the network
eagerly and differentiates it, so the result is exact for every use. Atoms and edges are
dynamic dimensions from the first call: MD, where the edge count changes, compiles once.

Caches, in ``TORCHINDUCTOR_CACHE_DIR`` (default ``/tmp/torchinductor_$USER``), so that a
second run starts fast. (1) The compiled network whole: dynamo's graph and guards with
inductor's code, saved by ``torch.compile(...).aot_compile`` under ``sinet_ase/`` there
(:data:`PRECOMPILE`) and loaded by later runs, which skip dynamo's tracing; its file name is
:func:`artefact_key`, a hash of everything baked into the code. (2) Inductor's own caches of
compiled kernels (FX graph cache, which (1) needs as well) and of the forward/backward split
(AOTAutograd cache), keyed by torch on the traced graph; the AOTAutograd cache refuses graphs
with custom ``autograd.Function``s (our neighbour sums) unless told otherwise, and is allowed
while this module compiles, because dynamo traces the forward and backward of those
functions into the graph that the key hashes. In both, the weights are inputs of the
compiled function, not constants, so one artefact serves every set of weights of an
architecture, and what is baked into the code (cutoff, average neighbour count, sizes,
dtype) is in the key (tested).
"""

import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Optional, Union

import torch

log = logging.getLogger(__name__)

#: ``"auto"``: network calls run eagerly before the calculator compiles (an MD step is one call)
AUTO_COMPILE_AFTER = 200
#: ``sinet-md --compile auto`` compiles from the first step for runs of at least this many steps
MD_AUTO_COMPILE_STEPS = 1000
#: ... where the compiled network is not saved yet (the first run on a machine), only for runs
#: of at least this many steps: a first compilation takes ~35 s on two cores and saves ~4.5 ms
#: per step (aspirin, float64), so shorter runs are faster eager; they compile in a background
#: process for later runs instead (:mod:`sinet_ase.background_compile`)
MD_COLD_COMPILE_STEPS = 10_000
#: environment variable; ``off`` (or ``0``, ``false``, ``no``) makes ``"auto"`` eager
ENVIRONMENT_SWITCH = "SINET_ASE_COMPILE"


class CompileFallbackWarning(UserWarning):
    """``compile="auto"`` runs eagerly: no compiler, or compiling failed (the message says which)."""


@dataclass(frozen=True)
class AutoCompile:
    """``compile="auto"`` with its threshold: compile after ``after_calls`` eager network calls."""

    after_calls: int = AUTO_COMPILE_AFTER

    def __post_init__(self):
        if not isinstance(self.after_calls, int) or self.after_calls < 0:
            raise ValueError(f"after_calls must be a whole number >= 0, got {self.after_calls!r}")


CompileMode = Union[bool, str, AutoCompile]


def resolve_mode(compile: CompileMode) -> Union[bool, AutoCompile]:
    """``True``, ``False`` or an :class:`AutoCompile` from what a user passes as ``compile``."""
    if compile is True or compile is False:
        return compile
    if isinstance(compile, AutoCompile):
        return compile
    if isinstance(compile, str) and compile == "auto":
        return AutoCompile()
    raise ValueError(f"compile must be True, False, 'auto' or AutoCompile(after_calls=N), got {compile!r}")


def switched_off() -> bool:
    """Whether ``SINET_ASE_COMPILE`` turns ``"auto"`` off."""
    return os.environ.get(ENVIRONMENT_SWITCH, "").strip().lower() in ("off", "0", "false", "no")


@functools.lru_cache(maxsize=None)
def compile_problem(device_type: str) -> Optional[str]:
    """Why inductor cannot compile for ``device_type`` on this machine, or ``None``.

    CPU: a C++ compiler that runs (torch's own search: ``CXX``, then g++ / clang++; one
    ``--version`` call, cached). CUDA: triton. A compiler that is found but cannot build
    (missing headers) shows at the first compilation instead, which falls back likewise.
    """
    if device_type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception:  # InvalidCxxCompiler, or an import problem of inductor itself
            return "no working C++ compiler found (torch.compile needs g++ or clang++ on CPU; set CXX)"
        return None
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "triton is not installed (torch.compile needs it on CUDA)"
    return f"torch.compile is not set up for {device_type} devices in sinet-ase"


def install(
    model: torch.nn.Module, compile: CompileMode, options: Optional[dict] = None
) -> Optional["CompiledNetwork"]:
    """Set up ``model`` (a prepared, frozen SINet) to run the network as ``compile`` says.

    Returns the :class:`CompiledNetwork` now in ``model._compiled_network``, or ``None``
    when the model stays eager (``False``; ``"auto"`` with ``SINET_ASE_COMPILE=off``, edge
    chunks or a model that is not a SINet). ``True`` raises where the model cannot compile.
    """
    mode = resolve_mode(compile)
    if mode is False:
        return None
    compilable = hasattr(model, "network_energies") and hasattr(model, "backbone")
    # chunks for every graph block compilation; chunks only above edge_chunk_from (the
    # calculator's "auto") do not: SINet.forward runs those graphs eagerly, the rest compiled
    chunked = compilable and model.backbone.edge_chunk_size is not None and model.backbone.edge_chunk_from is None
    if mode is True:
        if not compilable:
            raise TypeError(f"compile=True needs a SINet model, got {type(model).__name__}")
        if chunked:
            raise ValueError(
                "compile=True and edge_chunk_size do not combine: edge chunks "
                "recompute activations under torch.utils.checkpoint; use one"
            )
    elif not compilable or chunked or switched_off():
        return None
    network = CompiledNetwork(model, mode, options)
    model._compiled_network = network
    return network


def compiled_network(model) -> Optional["CompiledNetwork"]:
    """The :class:`CompiledNetwork` of a model set up by :func:`install`, if any."""
    network = getattr(model, "_compiled_network", None)
    return network if isinstance(network, CompiledNetwork) else None


@contextlib.contextmanager
def _compiling():
    """Settings for a compilation: dynamo traces ``torch.autograd.grad`` (else a graph
    break), and the AOTAutograd cache accepts our custom ``autograd.Function``s (module
    docstring). Entered only around calls that compile: a patch costs ~0.1 ms."""
    import torch._dynamo.config
    import torch._functorch.config

    with (
        torch._dynamo.config.patch(trace_autograd_ops=True),
        torch._functorch.config.patch(autograd_cache_allow_custom_autograd_functions=True),
    ):
        yield


#: inductor options of every compilation of the network (none: inductor's defaults), here and
#: in :meth:`SINet.enable_compile`. Generated kernels may use every thread: the neighbour sums
#: are custom operators that inductor leaves to ATen (:mod:`sinet_ase.ops.neighbour_sum`), so
#: it generates no atomic adds, whose multi-threaded code generation fails an assertion in
#: inductor (torch 2.13).
INDUCTOR_OPTIONS = {}

#: inductor options of the fast path per device type, on top of :data:`INDUCTOR_OPTIONS`:
#: on CPU the wrapper that calls the kernels is C++ (``cpp_wrapper``), not Python: 5-10 %
#: faster compiled calls at 9-21 atoms (interleaved A/B on the dev machine, 1 thread)
DEVICE_OPTIONS = {"cpu": {"cpp_wrapper": True}}

#: save each compiled network whole (dynamo's graph, guards, inductor's code) and load it in
#: later runs, which skips dynamo's tracing (``torch.compile(...).aot_compile``; experimental
#: in torch 2.13, so any failure falls back to the ordinary compilation)
PRECOMPILE = True


@functools.lru_cache(maxsize=None)
def _source_digest() -> str:
    """Hash of the code a compiled network is made of (this module, model.py, ops/)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in [root / "fastpath.py", root / "model.py", *sorted((root / "ops").glob("*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def artefact_key(model, device_type: str, options: dict) -> str:
    """Key of a saved compiled network: everything that is baked into its code.

    The code (:func:`_source_digest`), torch, e3nn and Python versions, the model's
    hyperparameters (cutoff, average neighbour count, sizes: constants in the generated code),
    the name, shape and dtype of every parameter and buffer, the device type, the inductor
    options and whether the fused kernels are in the graph. Not the weights (inputs of the compiled function) nor the energy shift and scale
    (applied outside it). The guards that torch checks at every call cover the inputs' dtypes
    and dimensions as well.
    """
    import e3nn

    from .ops import fused

    config = {k: v for k, v in getattr(model, "config", {}).items() if k not in ("atomic_energies", "energy_scale")}
    tensors = [
        (name, list(t.shape), str(t.dtype)) for name, t in list(model.named_parameters()) + list(model.named_buffers())
    ]
    parts = {
        "source": _source_digest(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "python": sys.version,
        "config": config,
        "tensors": tensors,
        "device": device_type,
        "options": sorted((str(k), repr(v)) for k, v in options.items()),
        # the fused kernels enter the graph as operators (sinet_ase.ops.fused)
        "fused_kernels": fused.in_use(model),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()[:32]


def artefact_path(model, device_type: str, options: dict) -> Optional[str]:
    """Where the compiled network of ``model`` is saved: ``sinet_ase/`` in inductor's cache folder."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        folder = cache_dir()
    except Exception:  # an unwritable cache folder: compile without saving
        return None
    return os.path.join(folder, "sinet_ase", f"network-{artefact_key(model, device_type, options)}.bin")


def _mark_dynamic(species, edge_index, vectors):
    # atoms and edges dynamic from the first compilation: one graph for every size
    torch._dynamo.maybe_mark_dynamic(species, 0)
    torch._dynamo.maybe_mark_dynamic(edge_index, 1)
    torch._dynamo.maybe_mark_dynamic(vectors, 0)


def _energies_and_gradient(model, species, edge_index, vectors):
    """``(E_i (N,), d(sum_i E_i)/d vectors (E, 3))``, both detached: the compiled function
    (the model is an argument, not a closure, so that a compiled network can be saved)."""
    vectors = vectors.detach().requires_grad_(True)
    with torch.enable_grad():
        energies = model.network_energies(species, edge_index, vectors)
        (gradient,) = torch.autograd.grad(energies.sum(), [vectors])
    return energies.detach(), gradient


class _PrecomputedGradient(torch.autograd.Function):
    """``energies`` as a function of ``vectors`` whose backward is the precomputed gradient.

    forward(vectors (E, 3), energies (N,), gradient (E, 3), recompute) -> energies (N,).
    backward(c (N,)): ``c_0 * gradient`` when every ``c_i`` equals ``c_0`` (the energy is a
    scaled sum of the ``E_i``); otherwise, and for a double backward, the vector-Jacobian
    product of ``recompute(vectors)``, the eager network.
    """

    @staticmethod
    def forward(ctx, vectors, energies, gradient, recompute):
        ctx.save_for_backward(vectors, gradient)
        ctx.recompute = recompute
        return energies.clone()

    @staticmethod
    def backward(ctx, grad_energies):
        vectors, gradient = ctx.saved_tensors
        double = torch.is_grad_enabled()  # create_graph=True: the result must be differentiable
        if not double and grad_energies.numel():
            first = grad_energies[:1]
            if bool((grad_energies == first).all()):
                return gradient * first, None, None, None
        with torch.enable_grad():
            v = vectors if double else vectors.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(ctx.recompute(v), [v], grad_energies, create_graph=double)
        return grad, None, None, None


class CompiledNetwork:
    """What :func:`install` puts in ``model._compiled_network``, where :meth:`SINet.forward`
    calls it: ``(species (N,), edge_index (2, E), vectors (E, 3)) -> energies (N,)``.

    Counts calls, compiles when the mode says so, and falls back to the eager network for
    good when ``"auto"`` cannot compile. Calls without gradients (energy only) run eagerly:
    the compiled graph always forms the gradient. Attributes for reports:
    ``compile_seconds`` (wall time of the first compiled call, compilation included) and
    ``fallback_reason`` (why ``"auto"`` runs eagerly, or ``None``).
    """

    def __init__(self, model, mode: Union[bool, AutoCompile], options: Optional[dict] = None):
        self._model = weakref.ref(model)  # the model holds this object: no reference cycle
        self.strict = mode is True
        self.after_calls = 0 if mode is True else mode.after_calls
        self.options = options
        self.calls = 0
        self.compiled = self._jit = None
        self.device_type = None
        self.compile_seconds = None
        self.fallback_reason = None
        self.artefact_state = None  # "loaded", "compiled and saved", ... (None: not used)

    @property
    def model(self):
        return self._model()

    @property
    def active(self) -> bool:
        """Whether calls with gradients now run the compiled graph."""
        return self.compiled is not None and self.fallback_reason is None

    def __call__(self, species, edge_index, vectors):
        eager = self.model.network_energies
        if not (torch.is_grad_enabled() and vectors.requires_grad):
            return eager(species, edge_index, vectors)
        out = self.energies_and_gradient(species, edge_index, vectors)
        if out is None:
            return eager(species, edge_index, vectors)
        energies, gradient = out
        return _PrecomputedGradient.apply(vectors, energies, gradient, functools.partial(eager, species, edge_index))

    def energies_and_gradient(self, species, edge_index, vectors):
        """``(E_i (N,), d(sum_i E_i)/d vectors (E, 3))`` from the compiled graph, both
        detached, or ``None`` when this call runs eagerly (before the ``"auto"`` threshold, or
        after a fallback): the caller then runs the eager network. Counts as a call."""
        if self.compiled is None:
            self.calls += 1
            if self.fallback_reason is not None or self.calls <= self.after_calls:
                return None
            self._make(vectors.device.type)
            if self.compiled is None:
                return None
        elif self.fallback_reason is not None:
            return None
        energies, gradient = self._run(species, edge_index, vectors)
        return None if energies is None else (energies, gradient)

    def _options_for(self, device_type) -> dict:
        return {**INDUCTOR_OPTIONS, **DEVICE_OPTIONS.get(device_type, {}), **(self.options or {})}

    def artefact_file(self, device_type) -> Optional[str]:
        """Where this network's compiled form for ``device_type`` is saved (it may not exist
        yet), or ``None`` where networks are not saved (:data:`PRECOMPILE`, no cache folder)."""
        if not PRECOMPILE or not hasattr(torch.compile(_energies_and_gradient), "aot_compile"):
            return None
        return artefact_path(self.model, device_type, self._options_for(device_type))

    def run_eagerly(self, reason: str):
        """Run every call eagerly from now on, and say ``reason`` in :meth:`describe`
        (a choice, not a failure: no warning)."""
        self.fallback_reason = reason

    def _make(self, device_type):
        problem = None if self.strict else compile_problem(device_type)
        if problem is not None:
            self._fall_back(problem)
            return
        self.options = self._options_for(device_type)
        self.device_type = device_type
        self.compiled = self._jit = torch.compile(_energies_and_gradient, fullgraph=True, options=self.options)
        log.info("compiling the SINet network (torch.compile, inductor); cached for later runs")

    def _run(self, species, edge_index, vectors):
        """The compiled graph's ``(energies, gradient)``, or ``(None, None)`` after a fallback."""
        first = self.compile_seconds is None
        if not first:
            try:
                return self.compiled(self.model, species, edge_index, vectors)
            except Exception:
                # a recompilation (a size of 0 or 1, or a loaded artefact's guards failing)
                # needs _compiling() and dynamo's own cache: retry with them
                self.compiled = self._jit
        start = time.perf_counter()
        try:
            with _compiling():
                if first:
                    out = self._first_call(species, edge_index, vectors)
                else:
                    _mark_dynamic(species, edge_index, vectors)
                    out = self.compiled(self.model, species, edge_index, vectors)
        except Exception as err:
            if self.strict:
                raise
            message = str(err).strip().splitlines()
            self._fall_back(f"compiling failed ({type(err).__name__}: {message[0] if message else ''})")
            return None, None
        if first:
            self.compile_seconds = time.perf_counter() - start
            log.info(
                "compiled the SINet network in %.1f s (%s)",
                self.compile_seconds,
                self.artefact_state or "inductor caches",
            )
        return out

    def _first_call(self, species, edge_index, vectors):
        """Load the saved artefact of this network, or compile and save one; where that does
        not work (no ``aot_compile`` in this torch, an unusable file), dynamo's own path."""
        args = (self.model, species, edge_index, vectors)
        path = artefact_path(self.model, self.device_type, self.options) if PRECOMPILE else None
        if path is not None and os.path.exists(path):
            try:
                with open(path, "rb") as handle:
                    loaded = torch.compiler.load_compiled_function(handle)
                out = loaded(*args)
            except Exception as err:  # a damaged file, another torch build: compile again
                log.info("precompiled network %s not usable (%s: %s)", path, type(err).__name__, err)
            else:
                self.compiled, self.artefact_state = loaded, "loaded"
                return out
        # dimension marks after the load: a loaded network's guards refuse marked tensors
        _mark_dynamic(species, edge_index, vectors)
        aot_compile = getattr(self._jit, "aot_compile", None)
        if path is not None and aot_compile is not None:
            try:
                made = torch.compile(
                    _energies_and_gradient,
                    fullgraph=True,
                    options=dict(self.options, guard_filter_fn=torch.compiler.keep_portable_guards_unsafe),
                ).aot_compile((args, {}))
                out = made(*args)
            except Exception as err:
                log.info("precompiling the network failed (%s: %s); compiling without it", type(err).__name__, err)
            else:
                self.compiled, self.artefact_state = made, "compiled and saved"
                try:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    made.save_compiled_function(path)  # written to a temporary file, then renamed
                except Exception as err:  # a full or read-only disk costs the next run time only
                    self.artefact_state = "compiled, not saved"
                    log.info("could not save the compiled network to %s (%s)", path, err)
                return out
        return self._jit(*args)

    def _fall_back(self, reason: str):
        self.fallback_reason = reason
        warnings.warn(
            f"sinet-ase runs the network eagerly (same results, slower): {reason}. compile=False skips the attempt",
            CompileFallbackWarning,
            stacklevel=4,
        )

    def describe(self) -> str:
        """One line on the state, for reports (``sinet-md``)."""
        if self.fallback_reason is not None:
            return f"network eager: {self.fallback_reason}"
        if self.compile_seconds is not None:
            how = {"loaded": "precompiled network loaded"}.get(self.artefact_state, "compiled")
            return f"{how} in {self.compile_seconds:.1f} s (first call included)"
        return f"network eager for the first {self.after_calls} calls, then compiled"
