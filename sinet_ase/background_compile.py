"""Fill the compile cache in a background process, so that the next run starts compiled.

Why: compiling a network the first time on a machine (``torch.compile``, inductor: dynamo's
tracing, code generation and the C++ compiler) takes ~35 s of the two cores of the
development machine for the shipped potential, and an MD step saves ~4.5 ms compiled
(aspirin, float64). A run shorter than ``compile seconds / saving per step`` (here ~8,000
steps) is faster eager, but then no later run would find the compiled network in the cache.
``sinet-md`` therefore runs such a run eagerly and starts this module's :func:`main` as a
separate, low-priority process (``nice`` 19) that compiles the network and saves it where
:mod:`sinet_ase.fastpath` looks for it; later runs load it in about a second. The process
waits for the run to end before it compiles (at most :data:`MAX_WAIT_FOR_PARENT_S`): on a
2-core machine a compilation beside the run, even at the lowest priority, made the first
``sinet-md aspirin --steps 2000`` 2.4 s slower than eager alone (``docs/speed.md``).

The child process inherits the environment (``TORCHINDUCTOR_CACHE_DIR``, ``TMPDIR``), so it
writes the cache that the parent reads. A lock file next to the artefact
(``<artefact>.lock``, made by the parent before the child starts, removed by the child when it
ends) keeps two runs from compiling the same network at once; it holds the background
process's id once that runs; a lock whose process is gone, or older than
:data:`STALE_LOCK_SECONDS`, is left by a process that was killed and is taken over.
``SINET_ASE_BACKGROUND_COMPILE=off`` switches the background process off.
The child's output goes to ``<artefact>.log`` (why a compilation failed, if it does).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

from .background import lower_priority, switched_off, wait_for_exit
from .files import process_exists

#: a lock file older than this is left by a process that died (a compilation takes ~1 min)
STALE_LOCK_SECONDS = 30 * 60


def _lock_is_stale(path: str) -> bool:
    """Whether the lock at ``path`` was left by a background process that no longer runs
    (its id, written into the lock, is gone) or is older than :data:`STALE_LOCK_SECONDS`.
    An empty lock is one that a parent made and has not yet written the id into."""
    if time.time() - os.path.getmtime(path) > STALE_LOCK_SECONDS:
        return True
    with open(path) as handle:
        content = handle.read().strip()
    return content.isdigit() and not process_exists(int(content))


def _take_lock(path: str) -> bool:
    """Create ``path`` if no live lock holds it; ``False`` when another process compiles."""
    try:
        if _lock_is_stale(path):
            os.unlink(path)
    except OSError:  # no lock (the usual case), or another process removed it first
        pass
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(handle)
    return True


def start(model_file: str, dtype: str, device: str, atoms, artefact: str) -> Optional[str]:
    """Start the background compilation of the network in ``model_file`` for ``artefact``.

    ``atoms``: a structure the model can run (its first call is the compilation; atoms and
    edges are dynamic dimensions, so any size serves later runs). Returns ``None`` when
    nothing was started (switched off, another process compiling it, or the process could
    not start), else the process's id as a string for messages.
    """
    if switched_off():
        return None
    os.makedirs(os.path.dirname(artefact), exist_ok=True)
    lock = artefact + ".lock"
    if not _take_lock(lock):
        return None
    from ase import Atoms
    from ase.io import write

    structure = tempfile.NamedTemporaryFile("w", suffix=".extxyz", dir=os.path.dirname(artefact), delete=False)
    with structure:
        write(structure, Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc), format="extxyz")
    command = [sys.executable, "-m", __name__, model_file, structure.name, "--dtype", dtype, "--device", device]
    command += ["--lock", lock, "--after-pid", str(os.getpid())]
    try:
        with open(artefact + ".log", "w") as log:
            # same session as the parent: under Linux's autogroup scheduling, nice 19 only
            # yields to the parent's MD if both are in one group
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lower_priority
            )
    except OSError:
        os.unlink(lock)
        os.unlink(structure.name)
        return None
    with open(lock, "w") as handle:  # a later run takes the lock over once this process is gone
        handle.write(str(process.pid))
    return str(process.pid)


def main(argv=None) -> int:
    """The background process: compile the network of ``MODEL`` on ``STRUCTURE`` and save it."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file")
    parser.add_argument("structure", help="extxyz file of a structure the model runs (deleted afterwards)")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lock", default=None, help="lock file to remove at the end")
    parser.add_argument("--after-pid", type=int, default=None, help="compile once this process has ended")
    args = parser.parse_args(argv)
    try:
        if args.after_pid is not None:
            ended = wait_for_exit(args.after_pid)
            print(f"process {args.after_pid} {'ended' if ended else 'still runs'}; compiling", flush=True)
        from ase.io import read

        from .calculator import SINetCalculator
        from .fastpath import compiled_network
        from .ops import fused

        # the next run's network holds the fused kernels where they build (the saved network's
        # key records them), so build them first rather than compile a graph without them
        fused.kernels(build=fused.can_build())

        atoms = read(args.structure)
        atoms.calc = SINetCalculator(args.model, device=args.device, dtype=args.dtype, compile=True)
        start = time.perf_counter()
        atoms.get_forces()
        network = compiled_network(atoms.calc.model)
        state = network.artefact_state if network is not None else None
        print(f"compiled in {time.perf_counter() - start:.1f} s: {state}", flush=True)
        return 0 if state in ("compiled and saved", "loaded") else 1
    finally:
        for path in (args.structure, args.lock):
            if path is not None and os.path.exists(path):
                os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
