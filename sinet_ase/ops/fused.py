r"""Fused per-edge CPU kernels (a C++ extension, built on demand): eager, compiled, exported.

The edge work of :class:`~sinet_ase.ops.scalar_interaction.ScalarInteraction` in its
unfused eager form gathers node rows into ``(E, M, c)`` edge tensors, multiplies them and
sums them back into nodes; each step writes a tensor of the size of the edge list, and its
backward writes as many again. The kernels of ``fused_edges.cpp`` do each of these
patterns in one pass over the edges (``E`` edges, ``N`` nodes, ``R`` rows of width ``C``):

* ``gather_contract(S, i, w)[e] = sum_r w[e, r] S[i_e, r]``           ``(E, C)``
* ``gather_dot(S, i, x)[e, r] = <S[i_e, r], x[e]>``                      ``(E, R)``
* ``outer_scatter(w, x, i, N)[n, r] = sum_{e: i_e = n} w[e, r] x[e]``    ``(N, R, C)``
* ``pair_degree_dot(a, i, b, j, s)[e, l] = s_l sum_{m in l} a[i_e, m] b[j_e, m]``  ``(E, L+1, C)``
* ``degree_scatter(alpha, S, i, j, N)[n, m] = sum_{e: j_e = n} alpha[e, l(m)] S[i_e, m]``  ``(N, M, C)``

They are closed under differentiation: the gradient of each with respect to each input is
one of the others (for example ``d gather_contract / d S`` is ``outer_scatter`` of the
upstream gradient), so the gradients registered below give forward, backward and double
backward (training's force loss) from the same five kernels. They are operators of torch's
dispatcher (``torch.ops.sinet_fused``), so ``torch.compile`` puts them into its graphs as
they are, and its generated code calls them without Python.

The extension is compiled with torch's C++ extension API (``torch.utils.cpp_extension``, a
C++ compiler and ninja) into torch's extension cache, once per machine, torch version and
kernel source. ``pair_style sinet`` compiles the same file in, for packages exported with them.
:func:`kernels` returns the module, or ``None`` where it is not built (``build=False``) or
cannot be; the model then runs the unfused form, which gives the same numbers.
"""

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Optional, Union

import torch

_SOURCE = Path(__file__).with_name("fused_edges.cpp")
_lock = threading.Lock()
_module = None
_failed: Optional[str] = None


@functools.lru_cache(maxsize=None)
def extension_name() -> str:
    """Module name of the build: one per torch version and source, so that an upgrade of
    either builds anew (in the background) instead of rebuilding at the first call."""
    import hashlib

    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:10]
    return f"sinet_fused_edges_{torch.__version__.split('+')[0].replace('.', '_')}_{digest}"


def kernels(build: bool = True):
    """The compiled kernels, or ``None`` (not built and ``build=False``, or the build failed).

    ``build=True`` compiles the extension on first use (about 20 s on two cores); later
    processes load the cached library in well under a second.
    """
    global _module, _failed
    if _module is not None or _failed is not None:
        return _module
    with _lock:
        if _module is not None or _failed is not None:
            return _module
        if not build and not _is_built():
            return None
        try:
            from torch.utils.cpp_extension import load

            module = load(
                name=extension_name(),
                sources=[str(_SOURCE)],
                extra_cflags=["-O3", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
            _register_operators()
            _module = module
        except Exception as exc:  # no compiler, no ninja, a failed build: the unfused form runs
            _failed = f"{type(exc).__name__}: {exc}"
            return None
    return _module


_exporting = False


@contextlib.contextmanager
def exporting():
    """Within the block the kernels also serve traced tensors (``torch.export`` of the LAMMPS
    package, whose program then calls the operators; pair_style sinet compiles them in)."""
    global _exporting
    previous, _exporting = _exporting, True
    try:
        yield
    finally:
        _exporting = previous


def kernels_for(x: torch.Tensor, wanted: bool):
    """The kernels if a module that ``wanted`` them should use them on ``x``: built, and
    ``torch.compile`` tracing or :func:`exporting` (the kernels enter the graph as operators)
    or ``x`` a plain CPU float32 / float64 tensor (not the fake tensor of another trace);
    else ``None``."""
    if not wanted or _module is None:
        return None
    if torch.compiler.is_compiling() or _exporting:  # traced: the operators, opaque to inductor
        return _module
    if type(x) is not torch.Tensor or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return _module


#: model -> its modules that have the ``use_fused`` switch, found once per model: walking
#: ``model.modules()`` costs ~0.2 ms, and :func:`in_use` runs on every calculator call
_SWITCHED_MODULES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _switched(model: torch.nn.Module) -> tuple:
    """The modules of ``model`` with a ``use_fused`` switch (the model's module tree is
    built once, in its constructor, and not changed after). Kept as weak references: a
    module with the switch may itself be the key, which a strong one would keep alive."""
    found = _SWITCHED_MODULES.get(model)
    if found is None:
        found = tuple(weakref.ref(m) for m in model.modules() if hasattr(m, "use_fused"))
        _SWITCHED_MODULES[model] = found
    return tuple(ref() for ref in found)


@contextlib.contextmanager
def fused_in(model: torch.nn.Module, enabled: bool):
    """Within the block, :func:`set_fused` on ``model``; each module's setting is restored after."""
    saved = [(module, module.use_fused) for module in _switched(model)]
    set_fused(model, enabled)
    try:
        yield
    finally:
        for module, value in saved:
            module.use_fused = value


def in_use(model: torch.nn.Module) -> bool:
    """Whether ``model``'s edge work runs through the kernels (switched on, by :func:`set_fused`,
    only where they are loaded, so the switch alone says it)."""
    return any(m.use_fused for m in _switched(model))


def set_fused(model: torch.nn.Module, enabled: bool) -> int:
    """Switch the fused kernels on or off in every module of ``model`` that has them
    (``use_fused``); returns how many modules were set."""
    modules = _switched(model)
    for module in modules:
        module.use_fused = bool(enabled)
    return len(modules)


def can_build() -> bool:
    """Whether this machine has what the build needs: a C++ compiler and ninja."""
    from torch.utils.cpp_extension import is_ninja_available

    return shutil.which(os.environ.get("CXX", "c++")) is not None and is_ninja_available()


_background_started = False


def start_background_build() -> Optional[int]:
    """Build the kernels in a low-priority background process that waits for this process to
    end (:mod:`sinet_ase.background`: a build beside a run on two cores slows the run); later
    processes find them built. Once per process; nothing where
    ``SINET_ASE_BACKGROUND_COMPILE=off``, where they are built, or where the machine cannot
    build them. Returns the process id, or ``None``."""
    global _background_started
    from ..background import lower_priority, switched_off

    if _background_started or switched_off() or _is_built() or not can_build():
        return None
    _background_started = True
    directory = Path(_build_directory())
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", __name__, "--after-pid", str(os.getpid())]
    try:
        with open(directory / "background_build.log", "w") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lower_priority
            )
    except OSError:
        return None
    return process.pid


FusedOption = Union[bool, str]


def resolve_option(option: FusedOption, device: torch.device, build_now: bool = False) -> bool:
    """A ``fused_kernels`` option -> whether the model uses the kernels.

    Only on the CPU (any option gives ``False`` on another device). ``"auto"``: where they
    are built, else not, and a background build starts
    for later runs (:func:`start_background_build`); with ``build_now`` (training, which
    runs long enough to pay back a build of ~20 s) built now where the machine can, else
    not; ``True``: built now if needed, an error if that fails; ``False``: never.
    """
    if option not in (True, False, "auto"):
        raise ValueError(f"fused_kernels must be True, False or 'auto', got {option!r}")
    if option is False or device.type != "cpu":
        return False
    if option is True:
        if kernels(build=True) is None:
            raise RuntimeError(
                f"the fused kernels could not be built ({build_error()}); they need a C++ compiler and "
                "ninja (pip install ninja); fused_kernels='auto' or False runs without them"
            )
        return True
    if kernels(build=build_now and can_build()) is not None:
        return True
    if not build_now:
        start_background_build()
    return False


def build_error() -> Optional[str]:
    """Why the last build failed, or ``None``."""
    return _failed


def _build_directory() -> str:
    from torch.utils.cpp_extension import _get_build_directory

    return _get_build_directory(extension_name(), verbose=False)


def _is_built() -> bool:
    """Whether torch's extension cache already holds a library of this build (built from
    this source: torch's loader rebuilds a library whose source changed)."""
    directory = Path(_build_directory())
    return (directory / f"{extension_name()}.so").exists() and not (directory / "lock").exists()


def main(argv=None) -> int:
    """The background build: wait for the process that started it, then build the kernels."""
    from ..background import wait_for_exit

    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description="Build the fused edge kernels.")
    parser.add_argument("--after-pid", type=int, default=None, help="build once this process has ended")
    args = parser.parse_args(argv)
    if args.after_pid is not None:
        ended = wait_for_exit(args.after_pid)
        print(f"process {args.after_pid} {'ended' if ended else 'still runs'}; building", flush=True)
    start = time.perf_counter()
    module = kernels(build=True)
    print(f"built in {time.perf_counter() - start:.1f} s" if module is not None else f"failed: {build_error()}")
    return 0 if module is not None else 1


# --- the operators: shapes for tracing, gradients made of the same operators ----------------
# The kernels are operators of torch's dispatcher (``torch.ops.sinet_fused``, defined in
# fused_edges.cpp), so eager calls and the code torch.compile generates reach them alike;
# inductor leaves them opaque. Registered once the library is loaded.


def _ops():
    return torch.ops.sinet_fused


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*[x for x in inputs if isinstance(x, torch.Tensor)])


def _gather_contract_backward(ctx, grad):
    src, index, w = ctx.saved_tensors
    g_src = outer_scatter(w, grad, index, src.shape[0]) if ctx.needs_input_grad[0] else None
    g_w = gather_dot(src, index, grad) if ctx.needs_input_grad[2] else None
    return g_src, None, g_w


def _gather_dot_backward(ctx, grad):
    src, index, x = ctx.saved_tensors
    g_src = outer_scatter(grad, x, index, src.shape[0]) if ctx.needs_input_grad[0] else None
    g_x = gather_contract(src, index, grad) if ctx.needs_input_grad[2] else None
    return g_src, None, g_x


def _outer_scatter_backward(ctx, grad):
    w, x, index = ctx.saved_tensors
    g_w = gather_dot(grad, index, x) if ctx.needs_input_grad[0] else None
    g_x = gather_contract(grad, index, w) if ctx.needs_input_grad[1] else None
    return g_w, g_x, None, None


def _pair_degree_dot_backward(ctx, grad):
    a, ia, b, ib, degree_start, scale = ctx.saved_tensors
    scaled = grad * scale.to(grad.dtype).view(1, -1, 1)
    g_a = degree_scatter(scaled, b, ib, ia, degree_start, a.shape[0]) if ctx.needs_input_grad[0] else None
    g_b = degree_scatter(scaled, a, ia, ib, degree_start, b.shape[0]) if ctx.needs_input_grad[2] else None
    return g_a, None, g_b, None, None, None


def _degree_scatter_backward(ctx, grad):
    alpha, src, isrc, dst, degree_start = ctx.saved_tensors
    g_alpha = g_src = None
    if ctx.needs_input_grad[0]:
        ones = torch.ones(alpha.shape[1], dtype=grad.dtype, device=grad.device)
        g_alpha = pair_degree_dot(grad, dst, src, isrc, degree_start, ones)
    if ctx.needs_input_grad[1]:
        g_src = degree_scatter(alpha, grad, dst, isrc, degree_start, src.shape[0])
    return g_alpha, g_src, None, None, None, None


def _register_operators():
    """Shapes (for tracing) and gradients of the five operators."""
    fake = {
        "gather_contract": lambda src, index, w: src.new_empty((index.shape[0], src.shape[2])),
        "gather_dot": lambda src, index, x: src.new_empty((index.shape[0], src.shape[1])),
        "outer_scatter": lambda w, x, index, num_nodes: x.new_empty((num_nodes, w.shape[1], x.shape[1])),
        "pair_degree_dot": lambda a, ia, b, ib, degree_start, scale: a.new_empty(
            (ia.shape[0], degree_start.shape[0] - 1, a.shape[2])
        ),
        "degree_scatter": lambda alpha, src, isrc, dst, degree_start, num_nodes: src.new_empty(
            (num_nodes, src.shape[1], src.shape[2])
        ),
    }
    backward = {
        "gather_contract": _gather_contract_backward,
        "gather_dot": _gather_dot_backward,
        "outer_scatter": _outer_scatter_backward,
        "pair_degree_dot": _pair_degree_dot_backward,
        "degree_scatter": _degree_scatter_backward,
    }
    for name in fake:
        torch.library.register_fake(f"sinet_fused::{name}", fake[name])
        torch.library.register_autograd(f"sinet_fused::{name}", backward[name], setup_context=_save_inputs)


def gather_contract(src, index, w):
    """``out[e] = sum_r w[e, r] S[i_e, r]``: ``S (N, R, C), i (E,), w (E, R) -> (E, C)``."""
    return _ops().gather_contract(src, index, w)


def gather_dot(src, index, x):
    """``out[e, r] = <S[i_e, r], x[e]>``: ``S (N, R, C), i (E,), x (E, C) -> (E, R)``."""
    return _ops().gather_dot(src, index, x)


def outer_scatter(w, x, index, num_nodes):
    """``out[n, r] = sum_{e: i_e = n} w[e, r] x[e]``: ``w (E, R), x (E, C), i (E,) -> (N, R, C)``."""
    return _ops().outer_scatter(w, x, index, num_nodes)


def pair_degree_dot(a, ia, b, ib, degree_start, scale):
    """``out[e, l] = s_l sum_{m in l} a[i_e, m] b[j_e, m]``: ``-> (E, L+1, C)``."""
    return _ops().pair_degree_dot(a, ia, b, ib, degree_start, scale)


def degree_scatter(alpha, src, isrc, dst, degree_start, num_nodes):
    """``out[n, m] = sum_{e: j_e = n} alpha[e, l(m)] S[i_e, m]``: ``-> (N, M, C)``."""
    return _ops().degree_scatter(alpha, src, isrc, dst, degree_start, num_nodes)


if __name__ == "__main__":
    sys.exit(main())
