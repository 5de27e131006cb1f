"""MD throughput of SINetCalculator: ms per ASE VelocityVerlet step and atom-steps/s.

Run (from the repository root, in the project venv)::

    python benchmarks/bench_md.py                      # full matrix, both allocators
    python benchmarks/bench_md.py --quick              # short validation run
    python benchmarks/bench_md.py --models sinet-l2 --systems cu_fcc_864 --dtypes float32
    python benchmarks/bench_md.py --profile            # torch.profiler of one step (Cu 864, f32, lmax 2)

Protocol (the one of ``/work/shared/peer_bench``, so numbers compare with the
MACE / NequIP anchors in PERF_NOTES.md):

* systems: ethanol (``molecule('CH3CH2OH')``, 9 atoms, open boundaries) and fcc
  Cu, ``bulk('Cu', 'fcc', a=3.61, cubic=True).repeat(n)`` with n = 3, 6, 12
  (108, 864 and 6,912 atoms; 42 neighbours per atom within 5 Å); ``acac_15`` and
  ``aspirin_21``, the first frame of the shared DFT benchmark files (when ``../shared/data``
  is there);
* ASE ``VelocityVerlet``, dt 0.5 fs, Maxwell-Boltzmann 300 K (seed 0); the first
  force call and 3 warm-up steps are not timed, then the **median of 20 steps**
  (fewer, never below 5, when a config would take longer than ``--max-seconds``);
  one step = one calculator call. SINet computes energy + forces only (VelocityVerlet
  asks for no stress); ``--stress`` adds the stress to every call, which MACE and
  NequIP always compute on periodic cells;
* ``torch.set_num_threads(2)``, OMP/MKL_NUM_THREADS=2;
* every config runs in a fresh worker process, so peak memory and page faults are
  per config, an out-of-memory kill loses one config only, and the allocator can be
  switched by ``LD_PRELOAD``: ``glibc`` (default malloc) or ``jemalloc``
  (Debian ``libjemalloc2``, ``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true``
  as in PERF_NOTES.md);
* the machine load is recorded with every measurement: ``os.getloadavg()`` before
  and after, the output of ``uptime``, and the cores other processes used during the
  timed window (``foreign_load_cores``, from /proc/stat). ``--wait-idle S`` waits up
  to S seconds for other processes to go below 0.25 cores before each timed window.

SINet configs (random weights, ``torch.manual_seed(0)``): ``sinet-l<L>[t<T>][c|a|u]`` =
``SINet(elements, cutoff=5.0, lmax=L, channels=64, num_layers=T (default 2), num_radial=8,
radial_hidden=64, mlp_hidden=64, envelope_p=6, avg_num_neighbors=edges/atoms of the
system)``, eager on the whole graph (with the fused edge kernels where they are built, as
the calculator's default; a trailing ``u``: without them), with a trailing ``c`` compiled
(``SINetCalculator(compile=True, edge_chunk_size=None)``; the first call, which compiles,
is untimed warm-up and reported as ``first_call_s``), with a trailing ``a`` the
calculator's defaults (``compile="auto"``: timed after its first 200 eager calls and the
compilation, or chunked eager on graphs above its memory threshold);
``siformer-l<L>[t<T>]`` the same with ``backbone="siformer", num_heads=4``;
elements H, C, N, O for ethanol, Cu for copper (as the peers).

``file-PATH`` (``file-c-PATH`` compiled, ``file-u-PATH`` eager without the fused kernels)
times a trained model file.

Peers: ``mace-l1`` / ``mace-l2`` (MACE 0.3.16, hidden 64x0e+64x1o / +64x2e), ``mace-paper``
(256x0e+256x1o+256x2e, the size of the MACE paper's rMD17 and AcAc models) and
``nequip-s`` / ``nequip-m`` (NequIP 0.19.1 presets), built as in /work/shared/peer_bench
(``_build_mace``, ``_build_nequip``), eager; compiled: ``mace-l2:compile`` (MACE's
``compile_mode="default"``), ``nequip-s:aoti`` (AOTInductor export, loaded as
``nequip-compile`` output; artefacts cached in ``SINET_BENCH_PEER_CACHE``) and
``nequip-s:ts`` (TorchScript, refused by nequip on torch >= 2.10). ``--worker`` with
``"verify": true`` in its config compares a compiled variant with its eager model instead
of timing it (``verify_against_eager``); ``bench_md_compiled_peers.py`` drives both. They need their own venvs: point ``MACE_PYTHON`` /
``NEQUIP_PYTHON`` at the venv's interpreter; the worker needs only numpy, ase and torch
besides the peer package, so this file runs unchanged there.

The timing helpers (``ForeignLoad``, ``wait_for_idle``, ``machine_state``) are
imported by ``bench_ops.py`` too.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
import time

HERE = os.path.dirname(os.path.abspath(__file__))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true"
R_MAX = 5.0
THREADS = 2


# ------------------------------------------------------------------ machine load


def _busy_jiffies_total():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]) - idle


def _own_jiffies():
    # utime, stime, cutime, cstime of this process (children: the e3nn codegen etc.)
    with open("/proc/self/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return sum(int(p) for p in parts[11:15])


class ForeignLoad:
    """Context manager: ``.cores`` = CPU cores used by *other* processes during the block."""

    def __enter__(self):
        self.t = time.perf_counter()
        self.busy = _busy_jiffies_total()
        self.own = _own_jiffies()
        return self

    def __exit__(self, *exc):
        hz = os.sysconf("SC_CLK_TCK")
        dt = time.perf_counter() - self.t
        foreign = (_busy_jiffies_total() - self.busy) - (_own_jiffies() - self.own)
        self.cores = max(0.0, foreign / hz / max(dt, 1e-9))
        return False


def wait_for_idle(max_wait_s, threshold_cores=0.25, window_s=2.0):
    """Wait until other processes use < ``threshold_cores`` (at most ``max_wait_s``); returns s waited."""
    t0 = time.perf_counter()
    while max_wait_s > 0:
        with ForeignLoad() as fl:
            time.sleep(window_s)
        if fl.cores < threshold_cores or time.perf_counter() - t0 > max_wait_s:
            break
        time.sleep(1.0)
    return time.perf_counter() - t0


def machine_state():
    """Load average, ``uptime`` line, date and available memory, for the record."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    mem_avail = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                mem_avail = int(line.split()[1]) / 2**20  # GiB
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "uptime": uptime,
        "mem_available_gib": round(mem_avail, 2) if mem_avail is not None else None,
    }


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(root=None):
    """Short hash of the checkout at ``root`` (default: this folder's), or ``None``."""
    try:
        out = subprocess.run(
            ["git", "-C", root or os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() or None
    except OSError:
        return None


def allocator_name():
    pre = os.environ.get("LD_PRELOAD", "")
    return "jemalloc" if "jemalloc" in pre else ("glibc" if not pre else pre)


# ------------------------------------------------------------------ systems and models


def systems():
    """Benchmark systems, name -> fresh ase.Atoms."""
    from ase.build import bulk, molecule

    eth = molecule("CH3CH2OH")
    eth.center(vacuum=6.0)
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    found = {"ethanol_9": eth, "cu_fcc_108": cu.repeat(3), "cu_fcc_864": cu.repeat(6), "cu_fcc_6912": cu.repeat(12)}
    found.update(dft_molecules())
    found.update(shipped_crystals())
    return found


#: periodic start structures of the shipped mlearn potentials (``sinet_ase/potentials/structures.extxyz``)
SHIPPED_CRYSTALS = ("si_64", "ge_64", "li_54", "mo_54")


def shipped_crystals():
    """The shipped potentials' periodic start structures, for timing those potentials (none in
    a peer's venv, which has no sinet_ase: the peers are not timed on them)."""
    try:
        from sinet_ase.pretrained import shipped_structure
    except ImportError:
        return {}

    return {name: shipped_structure(name) for name in SHIPPED_CRYSTALS}


#: molecules of the shared DFT benchmarks: name -> (file under ../shared/data, frame)
DFT_MOLECULES = {"acac_15": ("acac/test_MD_300K.xyz", 0), "aspirin_21": ("rmd17_aspirin/rmd17_aspirin_train.xyz", 0)}


def dft_molecules():
    """The first frame of each shared DFT benchmark file that is present, without its labels."""
    from ase.io import read

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    found = {}
    for name, (path, index) in DFT_MOLECULES.items():
        if (data / path).is_file():
            atoms = read(str(data / path), index=index)
            atoms.calc, atoms.info = None, {}
            atoms.pbc, atoms.cell = False, None
            found[name] = atoms
    return found


def elements_of(system_name):
    return ["Cu"] if system_name.startswith("cu") else ["H", "C", "N", "O"]


def count_edges(atoms, r_max=R_MAX):
    from ase.neighborlist import neighbor_list

    return int(len(neighbor_list("i", atoms, r_max)))


SINET_CONFIG = dict(
    cutoff=R_MAX, channels=64, num_layers=2, num_radial=8, radial_hidden=64, mlp_hidden=64, envelope_p=6
)


def _build_siformer(variant, system_name, atoms, dtype, stress=False):
    """``siformer-l<L>[t<T>]``: as ``sinet-l<L>[t<T>]`` with SiFormer blocks (4 heads)."""
    return _build_sinet(variant, system_name, atoms, dtype, stress=stress, extra=dict(backbone="siformer", num_heads=4))


def sinet_suffix(variant):
    """The mode letters that end a SINet variant: ``l2t1cu`` -> ``cu`` (``c`` compiled, ``a``
    the calculator's defaults, ``u`` without the fused kernels; see :func:`_build_sinet`)."""
    return variant[len(variant.rstrip("cau")) :]


def _build_sinet(variant, system_name, atoms, dtype, stress=False, extra=None):
    """``sinet-l<L>[t<T>][c|a|u]``: SINet with lmax L (T layers, default 2) and SINET_CONFIG, random
    weights (seed 0). No suffix: eager (``compile=False``; the fused edge kernels where they
    are built, as the calculator's default), a trailing ``u``: without the fused kernels
    (``fused_kernels=False``; ``cu`` compiled without them), a trailing ``c``: compiled
    (``compile=True``), both on the whole graph (``edge_chunk_size=None``, the setting of the
    results tables: automatic chunks would run large graphs eagerly in chunks); a trailing
    ``a``: the calculator's defaults (``compile="auto"``, ``edge_chunk_size="auto"``), what a
    user gets without options (see ``default_warmup``)."""
    import torch

    from sinet_ase import SINet, SINetCalculator

    suffix = sinet_suffix(variant)
    default, compiled = "a" in suffix, "c" in suffix
    fused_kernels = False if "u" in suffix else "auto"
    lmax_part, _, layers_part = variant.rstrip("cau").lstrip("l").partition("t")
    lmax = int(lmax_part)
    torch.manual_seed(0)
    avg_nn = count_edges(atoms) / len(atoms)
    config = dict(SINET_CONFIG, lmax=lmax, avg_num_neighbors=avg_nn)
    if layers_part:
        config["num_layers"] = int(layers_part)
    config.update(extra or {})
    model = SINet(elements=elements_of(system_name), **config)
    # stress: computed on every call of a periodic cell, as MACE and NequIP do
    if default:
        calc = SINetCalculator(model, dtype=dtype, compute_stress=stress)
    else:
        calc = SINetCalculator(
            model,
            dtype=dtype,
            compile=compiled,
            edge_chunk_size=None,
            compute_stress=stress,
            fused_kernels=fused_kernels,
        )
    info = {
        "config": dict(config, elements=elements_of(system_name)),
        "compiled": "auto" if default else compiled,
        "fused_kernels": calc.fused_kernels,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    if default:
        backbone = calc.model.backbone
        chunked = count_edges(atoms) > backbone.edge_chunk_from
        # what "auto" runs once it has compiled: large graphs chunked and eager
        info["default_path"] = "chunked eager" if chunked else "compiled after the first calls"
        info["edge_chunk_from"] = int(backbone.edge_chunk_from)
    return calc, info


def default_warmup(info, n_warmup):
    """Untimed steps before the timed window of ``sinet-...a``: ``compile="auto"`` runs its
    first :data:`sinet_ase.fastpath.AUTO_COMPILE_AFTER` calls eagerly and then compiles, so
    the steady state it reaches in a long MD run starts after that many steps (plus the
    usual warm-up); where the default runs the graph in chunks (eagerly) there is nothing
    to wait for."""
    if info.get("default_path", "").startswith("compiled"):
        from sinet_ase.fastpath import AUTO_COMPILE_AFTER

        return AUTO_COMPILE_AFTER + n_warmup
    return n_warmup


def _build_sinet_file(variant, system_name, atoms, dtype, stress=False):
    """``file-PATH`` / ``file-c-PATH`` / ``file-u-PATH``: a trained model file, eager (the fused
    edge kernels where they are built), compiled (``file-c-``) or eager without the fused
    kernels (``file-u-``)."""
    from sinet_ase import SINetCalculator, load_model

    compiled = variant.startswith("c-")
    unfused = variant.startswith("u-")
    path = variant[2:] if compiled or unfused else variant
    model = load_model(path)
    calc = SINetCalculator(
        model, dtype=dtype, compile=compiled, compute_stress=stress, fused_kernels=False if unfused else "auto"
    )
    return calc, {
        "config": {"file": path, **model.config},
        "compiled": compiled,
        "fused_kernels": calc.fused_kernels,
        "n_params": sum(p.numel() for p in model.parameters()),
    }


#: MACE hidden irreps per variant: ``l1`` / ``l2`` at 64 channels, and ``paper``, the size of the
#: MACE paper's rMD17 / AcAc models (256 channels, L = 2 messages; Batatia et al. 2022)
MACE_HIDDEN = {"l1": "64x0e+64x1o", "l2": "64x0e+64x1o+64x2e", "paper": "256x0e+256x1o+256x2e"}


def _build_mace(variant, system_name, atoms, dtype, stress=True):
    """MACE 0.3.16 as in /work/shared/peer_bench/bench_mace_md.py (run with MACE_PYTHON).

    ``ScaleShiftMACE``: r_max 5, 8 Bessel, polynomial cutoff p = 5, max_ell 3,
    correlation 3, 2 interactions (``RealAgnosticInteractionBlock`` then
    ``RealAgnosticResidualInteractionBlock``), radial MLP [64, 64, 64], MLP_irreps
    16x0e, silu; variant ``l1`` = hidden 64x0e+64x1o, ``l2`` = 64x0e+64x1o+64x2e.
    Built in float64 (seed 0), saved with ``torch.save`` and loaded back by
    ``MACECalculator(model_paths=..., default_dtype=dtype)``, which always computes
    the stress on periodic cells (``stress`` is ignored). ``<variant>:compile`` passes
    ``compile_mode="default"``: MACE's own option, ``torch.compile`` of the model (inductor
    on CPU; MACE pads atoms and edges so that MD does not recompile), caches in
    ``TORCHINDUCTOR_CACHE_DIR``.
    """
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # e3nn 0.4.4 constants
    import tempfile

    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules
    from mace.calculators import MACECalculator

    variant, _, mode = variant.partition(":")
    if mode not in ("", "compile"):
        raise ValueError(f"MACE mode {mode!r}: use mace-{variant} (eager) or mace-{variant}:compile")
    hidden = MACE_HIDDEN[variant]
    z_list = [29] if system_name.startswith("cu") else [1, 6, 7, 8]
    avg_nn = count_edges(atoms) / len(atoms)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = modules.ScaleShiftMACE(
        r_max=R_MAX,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2,
        num_elements=len(z_list),
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(z_list)),
        avg_num_neighbors=avg_nn,
        atomic_numbers=z_list,
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        radial_type="bessel",
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    torch.set_default_dtype(torch.float32)
    path = os.path.join(tempfile.mkdtemp(prefix="bench_mace_"), "mace.model")
    torch.save(model, path)
    calc = MACECalculator(
        model_paths=path, device="cpu", default_dtype=dtype, compile_mode="default" if mode == "compile" else None
    )
    config = dict(
        r_max=R_MAX,
        hidden_irreps=hidden,
        max_ell=3,
        correlation=3,
        num_interactions=2,
        avg_num_neighbors=avg_nn,
        atomic_numbers=z_list,
        mode=mode or "eager",
    )
    return calc, {
        "config": config,
        "n_params": sum(p.numel() for p in model.parameters()),
        "peer_version": __import__("mace").__version__,
    }


def _build_nequip(variant, system_name, atoms, dtype, stress=True):
    """NequIP 0.19.1 preset ``S`` or ``M`` as in /work/shared/peer_bench/bench_nequip_md.py, or
    ``t<T>l<L>c<C>``: ``NequIPGNNModel`` with T layers, l_max L, C features (radial MLP 2 x 64),
    the size that ``benchmarks/peers`` trains.

    ``PresetNequIPGNNModel(preset=variant, seed=0, model_dtype=dtype, r_max=5)`` (eager
    PyTorch, random weights) wrapped by ``NequIPCalculator(model, transforms=basic_transforms(...))``,
    which computes the stress on periodic cells (``stress`` is ignored). Run with NEQUIP_PYTHON.

    Compiled, as NequIP recommends for inference (``<variant>:aoti``): the same model exported
    with AOTInductor for the ASE target, what ``nequip-compile --mode aotinductor --device cpu
    --target ase`` writes (:func:`nequip_aoti_artefact`), and loaded by
    ``NequIPCalculator.from_compiled_model``. ``<variant>:ts`` is ``--mode torchscript``,
    which nequip 0.19 refuses on torch >= 2.10 (the record then holds nequip's error).
    """
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    from nequip.utils.global_state import set_global_state

    threads = torch.get_num_threads()
    set_global_state()
    torch.set_num_threads(threads)
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms
    from nequip.model import PresetNequIPGNNModel

    variant, _, mode = variant.partition(":")
    if mode not in ("", "aoti", "ts"):
        raise ValueError(f"NequIP mode {mode!r}: use nequip-{variant}, nequip-{variant}:aoti or nequip-{variant}:ts")
    if mode == "ts":
        from nequip.utils.versions import _TORCH_GE_2_10

        if _TORCH_GE_2_10:  # the check of nequip-compile (nequip/scripts/compile.py)
            raise RuntimeError(
                f"nequip-compile --mode torchscript: nequip {__import__('nequip').__version__} "
                f"refuses TorchScript on torch {torch.__version__} (>= 2.10); use --mode aotinductor"
            )
    type_names = elements_of(system_name)
    avg_nn = count_edges(atoms) / len(atoms)
    if variant.upper() in ("S", "M", "L"):
        model = PresetNequIPGNNModel(
            preset=variant.upper(),
            seed=0,
            model_dtype=dtype,
            type_names=type_names,
            r_max=R_MAX,
            avg_num_neighbors=avg_nn,
        )
    else:  # t<layers>l<l_max>c<features>: the size trained in benchmarks/peers
        from nequip.model import NequIPGNNModel

        layers, rest = variant.lstrip("t").split("l")
        l_max, features = rest.split("c")
        model = NequIPGNNModel(
            seed=0,
            model_dtype=dtype,
            type_names=type_names,
            r_max=R_MAX,
            avg_num_neighbors=avg_nn,
            num_layers=int(layers),
            l_max=int(l_max),
            num_features=int(features),
            parity=True,
            num_bessels=8,
            polynomial_cutoff_p=6,
            radial_mlp_depth=2,
            radial_mlp_width=64,
        )
    model.eval()
    transforms = basic_transforms(model.metadata, R_MAX, type_names, {t: t for t in type_names})
    calc = NequIPCalculator(model, device="cpu", transforms=transforms)
    config = dict(
        variant=variant,
        r_max=R_MAX,
        avg_num_neighbors=avg_nn,
        type_names=type_names,
        mode={"aoti": "aotinductor", "ts": "torchscript"}.get(mode, "eager"),
    )
    info = {
        "config": config,
        "n_params": sum(p.numel() for p in model.parameters()),
        "peer_version": __import__("nequip").__version__,
    }
    if mode == "aoti":
        path, info["export_s"] = nequip_aoti_artefact(calc, atoms, dict(config, dtype=dtype))
        info["artefact"] = path
        compiled = NequIPCalculator.from_compiled_model(
            path, device="cpu", chemical_species_to_atom_type_map={t: t for t in type_names}
        )
        compiled.eager_reference = calc  # for --verify
        calc = compiled
    return calc, info


def peer_cache_dir():
    """Folder of the peers' compiled artefacts (``SINET_BENCH_PEER_CACHE``, default
    ``~/.cache/sinet_bench_peers``), so that a timed run never pays for an export."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "sinet_bench_peers")
    return os.environ.get("SINET_BENCH_PEER_CACHE") or default


def nequip_aoti_path(config):
    """``(path, key)`` of the cached AOTInductor export of a NequIP config (see below)."""
    import hashlib

    import torch

    key = json.dumps(
        {
            **config,
            "avg_num_neighbors": round(config["avg_num_neighbors"], 9),
            "nequip": __import__("nequip").__version__,
            "torch": torch.__version__,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = f"nequip-{config['variant']}_{config['dtype']}_{'-'.join(config['type_names'])}_{digest}"
    return os.path.join(peer_cache_dir(), "nequip", name + ".nequip.pt2"), key


def nequip_aoti_artefact(calc, atoms, config):
    """Path of the AOTInductor export of ``calc.model`` for the ASE target, built once.

    The steps of ``nequip-compile --mode aotinductor --device cpu --target ase`` after it has
    loaded a model (nequip 0.19.1, ``nequip/scripts/compile.py``), called through nequip's own
    functions because the benchmark's random-weight models have no checkpoint to load: the
    model's metadata with nequip's global state, the ASE target's inputs and outputs, one
    frame (the benchmark system through the calculator's own transforms) with atoms and edges
    dynamic from 2 to infinity, ``nequip.utils.aot.aot_export_model`` (seed 1, no constant
    folding). The file name hashes everything that the export bakes in (preset, dtype,
    species, cutoff, average neighbour count, nequip and torch versions; the weights follow
    from the seed); returns ``(path, seconds spent exporting)`` (0 when it was there).
    """
    import torch
    from nequip.scripts._compile_utils import AOTI_ASE_TARGET, COMPILE_TARGET_DICT
    from nequip.utils.aot import aot_export_model
    from nequip.utils.aoti_metadata import NEQUIP_AOTI_INPUTS_KEY, NEQUIP_AOTI_OUTPUTS_KEY, serialize_aoti_keys
    from nequip.utils.global_state import get_latest_global_state

    path, key = nequip_aoti_path(config)
    folder, name = os.path.dirname(path), os.path.basename(path)[: -len(".nequip.pt2")]
    if os.path.isfile(path):
        return path, 0.0
    os.makedirs(folder, exist_ok=True)
    target = COMPILE_TARGET_DICT[AOTI_ASE_TARGET]
    dyn = torch.export.dynamic_shapes.Dim
    batch_map = target["batch_map_settings"](
        {
            "graph": torch.export.Dim.STATIC,
            "node": dyn("num_nodes", min=2, max=torch.inf),
            "edge": dyn("num_edges", min=2, max=torch.inf),
        }
    )
    structure = atoms.copy()
    if structure.cell.volume == 0:
        # a molecule without a cell: the exported graph also returns the stress (virial /
        # volume), NaN in a zero cell, and nequip's export-time check of eager against
        # compiled outputs then fails; nequip-compile gives such data a padded box
        # (NonPeriodicCellTransform) likewise. Energies and forces do not depend on it.
        structure.center(vacuum=10.0)
    data = target["data_settings"](dict(calc.atoms_to_data(structure)))
    metadata = dict(calc.model.metadata)
    metadata.update(get_latest_global_state(only_metadata_related=True))
    metadata = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in metadata.items()}
    metadata[NEQUIP_AOTI_INPUTS_KEY] = serialize_aoti_keys(target["input"])
    metadata[NEQUIP_AOTI_OUTPUTS_KEY] = serialize_aoti_keys(target["output"])
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}.nequip.pt2")
    t0 = time.perf_counter()
    try:
        aot_export_model(
            model=calc.model,
            device="cpu",
            input_fields=target["input"],
            output_fields=target["output"],
            data=data,
            batch_map=batch_map,
            output_path=tmp,
            inductor_configs={"aot_inductor.metadata": metadata},
            constant_fold=False,
            seed=1,
        )
        os.replace(tmp, path)  # atomic: a half-written artefact is never loaded
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    with open(path + ".json", "w") as f:
        f.write(key + "\n")
    return path, time.perf_counter() - t0


#: family -> (builder, environment variable naming the interpreter that has the package)
MODELS = {
    "sinet": (_build_sinet, None),
    "siformer": (_build_siformer, None),
    "file": (_build_sinet_file, None),
    "mace": (_build_mace, "MACE_PYTHON"),
    "nequip": (_build_nequip, "NEQUIP_PYTHON"),
}


def parse_model(spec):
    family, _, variant = spec.partition("-")
    if family not in MODELS or not variant:
        raise SystemExit(f"unknown model {spec!r}; use e.g. sinet-l2 (families: {sorted(MODELS)})")
    return family, variant


# ------------------------------------------------------------------ timing


def time_md(
    atoms, calc, n_warmup=3, n_steps=20, dt_fs=0.5, temperature_K=300.0, seed=0, max_seconds=None, wait_idle_s=0.0
):
    """VelocityVerlet with ``calc``; per-step wall time, page faults and the load during it."""
    import numpy as np
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    pos0 = atoms.get_positions().copy()
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    stamps, faults, cpu = [], [], []

    def stamp():
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    dyn.attach(stamp, interval=1)
    t0 = time.perf_counter()
    dyn.run(n_warmup)  # first force call + warm-up steps, not timed
    warm_s = time.perf_counter() - t0
    first_call_s = stamps[0] - t0 if stamps else warm_s  # includes any compilation
    if max_seconds is not None:
        # steady-state time per step: the warm-up steps after the first call
        # (the median of the last warm-up steps: a long warm-up may hold a compilation)
        per = float(statistics.median(np.diff(stamps[-4:]))) if len(stamps) > 1 else warm_s
        n_steps = max(5, min(n_steps, int(max_seconds / max(per, 1e-9))))
    stamps.clear()
    faults.clear()
    cpu.clear()
    waited = wait_for_idle(wait_idle_s)
    before = machine_state()
    stamp()
    with ForeignLoad() as fl:
        dyn.run(n_steps)
    after = machine_state()
    # the observer also fires once at the start of the run; keep the last n_steps + 1 stamps
    stamps, faults, cpu = stamps[-(n_steps + 1) :], faults[-(n_steps + 1) :], cpu[-(n_steps + 1) :]
    dts = np.diff(np.array(stamps))
    assert len(dts) == n_steps, (len(dts), n_steps)
    med = float(statistics.median(dts))
    forces = atoms.get_forces()
    return {
        "n_atoms": len(atoms),
        "n_steps_timed": int(n_steps),
        "median_ms": med * 1e3,
        "mean_ms": float(np.mean(dts)) * 1e3,
        "min_ms": float(np.min(dts)) * 1e3,
        "max_ms": float(np.max(dts)) * 1e3,
        "atom_steps_per_s": len(atoms) / med,
        "median_cpu_ms": float(np.median(np.diff(np.array(cpu)))) * 1e3,
        "minor_faults_per_step": float(np.median(np.diff(np.array(faults)))),
        "warmup_s": warm_s,
        "first_call_s": first_call_s,
        "max_displacement_A": float(np.linalg.norm(atoms.get_positions() - pos0, axis=1).max()),
        "finite_forces": bool(np.isfinite(forces).all()),
        "foreign_load_cores": round(fl.cores, 3),
        "waited_for_idle_s": round(waited, 1),
        "load_before": before,
        "load_after": after,
    }


def run_worker(cfg):
    """One config in this process: build the calculator, time MD, return a record."""
    import torch

    torch.set_num_threads(cfg["threads"])
    family, variant = parse_model(cfg["model"])
    atoms = systems()[cfg["system"]]
    build = MODELS[family][0]
    calc, info = build(variant, cfg["system"], atoms, cfg["dtype"], stress=cfg["stress"])
    if cfg.get("verify"):
        r = verify_against_eager(family, variant, cfg, atoms, calc)
        r.update(info)
        r.update({"model": cfg["model"], "system": cfg["system"], "dtype": cfg["dtype"]})
        return r
    n_warmup = cfg["warmup"]
    if family == "sinet" and variant.endswith("a"):
        n_warmup = default_warmup(info, n_warmup)
    r = time_md(
        atoms,
        calc,
        n_warmup=n_warmup,
        n_steps=cfg["steps"],
        max_seconds=cfg["max_seconds"],
        wait_idle_s=cfg["wait_idle"],
    )
    r["n_warmup"] = n_warmup
    r.update(info)
    r.update(
        {
            "model": cfg["model"],
            "system": cfg["system"],
            "dtype": cfg["dtype"],
            "stress": cfg["stress"],
            "allocator": allocator_name(),
            "malloc_conf": os.environ.get("MALLOC_CONF", ""),
            "n_edges": count_edges(atoms),
            "threads": torch.get_num_threads(),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "torch": torch.__version__,
        }
    )
    return r


def eager_variant(family, variant):
    """The eager spelling of a compiled model variant (``l1t1c`` -> ``l1t1``, ``s:aoti`` -> ``s``),
    or ``None`` when ``variant`` is eager already."""
    if family in ("sinet", "siformer") and variant.endswith("cu"):
        return variant[:-2] + "u"
    if family in ("sinet", "siformer") and variant[-1] in "ca":
        return variant[:-1]
    if family == "sinet" and variant[-1] == "u":
        return None
    if ":" in variant:
        return variant.partition(":")[0]
    return None


def verify_against_eager(family, variant, cfg, atoms, calc, rattle=0.05):
    """Energy and forces of ``calc`` (a compiled variant) against the eager model of the same
    weights (seed 0), on the benchmark structure and on two rattled copies (another edge
    count on the periodic cells, so dynamic shapes are exercised), each calculator called
    in turn. Tolerance: relative 1e-4 in float32, 1e-8 in float64, of the energy (to
    max(|E|, 1)) and of the largest force difference (to the largest |F| over the three
    structures: on a perfect lattice the forces are rounding noise, so their own scale means
    nothing)."""
    import numpy as np

    base = eager_variant(family, variant)
    if base is None:
        return {"verify": "eager model: nothing to compare"}
    reference, _ = MODELS[family][0](base, cfg["system"], atoms, cfg["dtype"], stress=cfg["stress"])
    tol = 1e-4 if cfg["dtype"] == "float32" else 1e-8
    rows = []
    for k in range(3):
        structure = atoms.copy()
        if k:
            structure.rattle(rattle * k, seed=k)
        values = []
        for c in (reference, calc):
            a = structure.copy()
            a.calc = c
            t0 = time.perf_counter()
            values.append((a.get_potential_energy(), a.get_forces(), time.perf_counter() - t0))
        (e0, f0, t_ref), (e1, f1, t_cmp) = values
        rows.append(
            {
                "energy": float(e0),
                "energy_rel_err": abs(e1 - e0) / max(abs(e0), 1.0),
                "forces_abs_err": float(np.abs(f1 - f0).max()),
                "forces_max": float(np.abs(f0).max()),
                "n_edges": count_edges(structure),
                "eager_call_s": t_ref,
                "compiled_call_s": t_cmp,
            }
        )
    force_scale = max(max(r["forces_max"] for r in rows), 1e-12)
    for r in rows:
        r["forces_rel_err"] = r["forces_abs_err"] / force_scale
    worst = max(max(r["energy_rel_err"], r["forces_rel_err"]) for r in rows)
    return {"verify": "pass" if worst <= tol else "FAIL", "worst_rel_err": worst, "tolerance": tol, "structures": rows}


def worker_env(allocator, threads=THREADS):
    # Inductor compiles in the worker itself (no pool of compile processes): a pool's
    # processes start up after the first compilation and would load the timed steps.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    env.pop("LD_PRELOAD", None)
    env.pop("MALLOC_CONF", None)
    if allocator == "jemalloc":
        if not os.path.exists(JEMALLOC):
            raise SystemExit(f"{JEMALLOC} not found: apt-get install -y libjemalloc2")
        env.update(LD_PRELOAD=JEMALLOC, MALLOC_CONF=JEMALLOC_CONF)
    return env


def interpreter_for(spec):
    """``(python, variable)``: the interpreter that runs model ``spec`` (``sys.executable`` for
    SINet, else the path in ``MACE_PYTHON`` / ``NEQUIP_PYTHON``; ``""`` when that is unset)."""
    family, _ = parse_model(spec)
    var = MODELS[family][1]
    return (os.environ.get(var, "") if var else sys.executable), var


def launch(cfg, allocator, timeout_s, extra_env=None):
    """Run one config in a fresh process with the allocator (and ``extra_env`` on top of the
    environment); returns its record or an error record."""
    python, var = interpreter_for(cfg["model"])
    if not python:
        return {**cfg, "allocator": allocator, "error": f"set {var} to the interpreter of its venv"}
    cmd = [python, "-W", "ignore", os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    try:
        p = subprocess.run(
            cmd,
            env={**worker_env(allocator, cfg["threads"]), **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {**cfg, "allocator": allocator, "error": f"timed out after {timeout_s} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {**cfg, "allocator": allocator, "error": f"rc {p.returncode}: " + " | ".join(tail)}


def predicted_peak_gib(results, cfg, allocator):
    """Peak memory of a 6,912-atom run predicted from the 864-atom run (x8 above the import baseline)."""
    for r in results:
        if (
            r.get("system") == "cu_fcc_864"
            and r.get("model") == cfg["model"]
            and r.get("dtype") == cfg["dtype"]
            and r.get("allocator") == allocator
            and "peak_rss_gib" in r
        ):
            base = 0.4  # GiB: peak RSS of a whole ethanol run (imports + model) on this machine
            return base + 8.0 * max(r["peak_rss_gib"] - base, 0.0)
    return None


# ------------------------------------------------------------------ profile


def run_profile(args):
    """torch.profiler over a few MD steps, plus a split of one calculator call."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sinet_ase.graph import atoms_to_graph

    torch.set_num_threads(args.threads)
    name = args.profile_system
    atoms = systems()[name]
    calc, info = _build_sinet(f"l{args.profile_lmax}", name, atoms, args.profile_dtype)
    atoms.rattle(0.01, seed=1)
    print("config:", json.dumps(info["config"]), "allocator:", allocator_name(), flush=True)
    print("load:", json.dumps(machine_state()), flush=True)

    def med(fn, n=7, warm=2):
        for _ in range(warm):
            fn()
        ts, flts = [], []
        for _ in range(n):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
            flts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        return statistics.median(ts) * 1e3, statistics.median(flts)

    model = calc.model
    graph = atoms_to_graph(atoms, model.cutoff, model.elements)

    def full():
        calc.results = {}
        calc.calculate(atoms, ["energy", "forces"])

    with ForeignLoad() as fl:
        t_graph, _ = med(lambda: atoms_to_graph(atoms, model.cutoff, model.elements))
        t_energy, _ = med(lambda: model(graph, compute_forces=False))
        t_ef, f_ef = med(lambda: model(graph, compute_forces=True))
        t_full, f_full = med(full)
    print(
        f"\nsplit of one call ({name}, {len(atoms)} atoms, {graph.edge_index.shape[1]} edges, "
        f"{args.profile_dtype}, foreign load {fl.cores:.2f} cores), median of 7 ms:"
    )
    print(
        "| graph (neighbour list) | model energy only | model energy + forces | full calculator call "
        "| minor faults / call |"
    )
    print("|---|---|---|---|---|")
    print(f"| {t_graph:.1f} | {t_energy:.1f} | {t_ef:.1f} | {t_full:.1f} | {f_full:.0f} |", flush=True)

    full()
    with ForeignLoad() as fl, profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.profile_steps):
            full()
    print(f"\ntorch.profiler, {args.profile_steps} calls, foreign load {fl.cores:.2f} cores; top ops by self CPU time:")
    table = prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=args.profile_rows, max_name_column_width=48
    )
    print(table)
    print("\nby input shape (top 25):")
    print(
        prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=40, max_shapes_column_width=60
        )
    )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(
            args.out, f"profile_{name}_l{args.profile_lmax}_{args.profile_dtype}_{allocator_name()}.json"
        )
        prof.export_chrome_trace(path)
        print("chrome trace:", path)


# ------------------------------------------------------------------ driver


def print_table(results):
    rows = {}
    for r in results:
        key = (r["model"], r["system"], r["allocator"], r.get("stress", False))
        rows.setdefault(key, {})[r["dtype"]] = r
    print(
        "\n| model | system (atoms / edges) | allocator | f32 ms/step | f32 CPU ms | f32 atom-steps/s | "
        "f64 ms/step | f64 CPU ms | f64 atom-steps/s | steps | foreign load (cores) | loadavg 1 min "
        "| peak RSS GiB | minor faults/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, system, alloc, stress), v in rows.items():
        any_r = next(iter(v.values()))
        size = f"{any_r['n_atoms']} / {any_r['n_edges']}" if "n_atoms" in any_r else "?"
        line = f"| {model}{' +stress' if stress else ''} | {system} ({size}) | {alloc} |"
        steps, loads, lavg, rss, flt = [], [], [], [], []
        for dt in ("float32", "float64"):
            r = v.get(dt)
            if r is None:
                line += " - | - | - |"
            elif "error" in r or "skipped" in r:
                line += f" {r.get('skipped') or r['error'][:40]} | - | - |"
            else:
                line += f" {r['median_ms']:.1f} | {r['median_cpu_ms']:.0f} | {r['atom_steps_per_s']:,.0f} |"
                flt.append(f"{r['minor_faults_per_step']:.0f}")
                steps.append(str(r["n_steps_timed"]))
                loads.append(f"{r['foreign_load_cores']:.2f}")
                lavg.append(f"{r['load_before']['loadavg'][0]:.2f}")
                rss.append(f"{r['peak_rss_gib']:.2f}")
        line += f" {'/'.join(steps)} | {'/'.join(loads)} | {'/'.join(lavg)} | {'/'.join(rss)} | {'/'.join(flt)} |"
        print(line)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="*", default=["sinet-l1", "sinet-l2", "sinet-l3"])
    ap.add_argument("--systems", nargs="*", default=["ethanol_9", "cu_fcc_108", "cu_fcc_864", "cu_fcc_6912"])
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    ap.add_argument("--allocators", nargs="*", default=["glibc", "jemalloc"], choices=["glibc", "jemalloc"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="cap on timed seconds per config (steps reduced, never below 5)",
    )
    ap.add_argument("--stress", action="store_true", help="compute the stress every call (as the peers)")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="seconds to wait at most for other processes to go quiet before each window",
    )
    ap.add_argument(
        "--max-mem-frac",
        type=float,
        default=0.8,
        help="skip a 6,912-atom config whose predicted peak exceeds this fraction of free memory",
    )
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads (the benchmark setting is 2)")
    ap.add_argument("--worker-timeout", type=float, default=3600.0)
    ap.add_argument(
        "--quick", action="store_true", help="validation: 1 warm-up, 5 steps, ethanol + Cu 108, sinet-l2, glibc"
    )
    ap.add_argument("--out", default="/tmp/sinet_bench", help="folder for md_sinet.json (and traces)")
    ap.add_argument("--tag", default="", help="suffix of the JSON file name")
    ap.add_argument("--profile", action="store_true", help="profile one config instead of the MD matrix")
    ap.add_argument("--profile-system", default="cu_fcc_864")
    ap.add_argument("--profile-lmax", type=int, default=2)
    ap.add_argument("--profile-dtype", default="float32")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--profile-rows", type=int, default=30)
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print the table of results files")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.table:
        print_table([r for path in args.table for r in json.load(open(path))["results"]])
        return

    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    if args.profile:
        run_profile(args)
        return
    if args.quick:
        args.steps, args.warmup = 5, 1
        if args.models == ap.get_default("models"):
            args.models = ["sinet-l2"]
        if args.systems == ap.get_default("systems"):
            args.systems = ["ethanol_9", "cu_fcc_108"]
        if args.allocators == ap.get_default("allocators"):
            args.allocators = ["glibc"]

    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, f"md_sinet{args.tag}.json")
    env = {
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "nproc": os.cpu_count(),
        "threads": args.threads,
        "argv": sys.argv,
        "start": machine_state(),
    }
    print("env:", json.dumps(env), flush=True)
    results = []
    for allocator in args.allocators:
        for model in args.models:
            for system in args.systems:
                for dtype in args.dtypes:
                    cfg = {
                        "model": model,
                        "system": system,
                        "dtype": dtype,
                        "stress": args.stress,
                        "steps": args.steps,
                        "warmup": args.warmup,
                        "max_seconds": args.max_seconds,
                        "wait_idle": args.wait_idle,
                        "threads": args.threads,
                    }
                    if system == "cu_fcc_6912":
                        need = predicted_peak_gib(results, cfg, allocator)
                        have = machine_state()["mem_available_gib"]
                        if need is not None and have is not None and need > args.max_mem_frac * have:
                            r = {**cfg, "allocator": allocator, "skipped": f"needs ~{need:.0f} GiB, {have:.0f} free"}
                            results.append(r)
                            print(json.dumps(r), flush=True)
                            continue
                    r = launch(cfg, allocator, args.worker_timeout)
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    with open(out_path, "w") as f:
                        json.dump({"env": env, "results": results}, f, indent=1)
    env["end"] = machine_state()
    with open(out_path, "w") as f:
        json.dump({"env": env, "results": results}, f, indent=1)
    print_table(results)
    print("wrote", out_path)


if __name__ == "__main__":
    main()
