"""End-to-end wall time of ``sinet-md`` and MD ms per step of the shipped potential, eager and compiled.

Run (from the repository root, in the project venv, on an idle machine)::

    python benchmarks/bench_sinet_md_wall.py                    # both parts, ~5-10 min
    python benchmarks/bench_sinet_md_wall.py --skip-steps       # the sinet-md runs only
    python benchmarks/bench_sinet_md_wall.py --skip-wall --molecules ethanol aspirin --dtypes float64 float32

Part 1, ``sinet-md MOLECULE --steps N`` as a user runs it (default ``aspirin --steps 2000``,
the shipped potential, float64): wall time from process start to exit, each run a fresh
process, in this order:

* ``eager``: ``--compile off`` with no fused edge kernels built and no background process;
* ``auto, cold cache``: the default (``--compile auto``) with an empty ``TORCHINDUCTOR_CACHE_DIR``
  and an empty ``TMPDIR`` (inductor's precompiled headers live under it), the first run on a
  new machine or after a torch upgrade: fewer than ``fastpath.MD_COLD_COMPILE_STEPS`` steps
  run eagerly while a low-priority background process compiles the network; the benchmark
  then waits for that process;
* ``auto, warm cache``: the default again, which now loads the compiled network;
* ``eager, kernels built``: ``--compile off`` once the fused edge kernels are built;
* ``compiled, cold cache``: ``--compile on`` on a second empty cache (compiled in the run);
* ``compiled, warm cache``: the same cache again (``--repeats`` times).

Each row also gives the start-up and the ms per step that ``sinet-md`` prints itself.

Part 2, ms per VelocityVerlet step (one energy + forces call) of
``SINetCalculator(potential, compile=False / True)`` on the shipped molecules, with
``bench_md.time_md`` (first call and ``--warmup`` steps untimed, then the median of
``--steps-timed`` steps), each config in a fresh process with inductor's usual cache
(``TORCHINDUCTOR_CACHE_DIR`` or its default); ``first call s`` is the compilation with the
cache as found (atoms and edges are dynamic: ethanol and aspirin share one artefact per dtype).

Threads and allocator as ``bench_md.py`` (``--threads 2``, jemalloc when installed, else
glibc). The foreign load (cores other processes used) is recorded with every number; only
numbers with a foreign load near 0 are worth reporting. Output: a table on stdout and
``--out``/``sinet_md_wall.json``.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_md import JEMALLOC, ForeignLoad, cpu_name, machine_state, time_md, worker_env  # noqa: E402

MD_MAIN = "import sys; from sinet_ase.cli import md_main; sys.exit(md_main(sys.argv[1:]))"


def _env(args, extra=None):
    env = worker_env(args.allocator, args.threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_sinet_md(args, name, compile_choice, cache_dir, tmp_dir, workdir, extensions, extra=None):
    """One ``sinet-md`` process; wall time and what it printed. ``extensions`` is its
    ``TORCH_EXTENSIONS_DIR`` (where the fused edge kernels are built and found)."""
    cmd = [
        sys.executable,
        "-W",
        "ignore",
        "-c",
        MD_MAIN,
        args.molecule,
        "--steps",
        str(args.md_steps),
        "--dtype",
        args.md_dtype,
        "--compile",
        compile_choice,
        "--no-progress",
        "--trajectory",
        os.path.join(workdir, f"{name.replace(' ', '_').replace(',', '')}.traj"),
    ]
    if args.potential:
        cmd += ["--potential", args.potential]
    env = _env(args, {"TORCHINDUCTOR_CACHE_DIR": cache_dir, "TMPDIR": tmp_dir, "TORCH_EXTENSIONS_DIR": extensions})
    env.update(extra or {})
    state = machine_state()
    with ForeignLoad() as load:
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        wall = time.perf_counter() - start
    out = proc.stdout
    record = {
        "name": name,
        "compile": compile_choice,
        "wall_s": round(wall, 2),
        "rc": proc.returncode,
        "foreign_load_cores": round(load.cores, 3),
        "load_before": state,
        "command": cmd[4:],
    }
    step = re.search(r"([0-9.]+) ms/step", out)
    start_up = re.search(r"start-up \([^)]*\): ([0-9.]+) s; (.*)", out)
    record["ms_per_step"] = float(step.group(1)) if step else None
    record["start_up_s"] = float(start_up.group(1)) if start_up else None
    record["network"] = start_up.group(2).strip() if start_up else None
    if proc.returncode != 0:
        record["error"] = (proc.stderr or out).strip().splitlines()[-3:]
    print(json.dumps({k: v for k, v in record.items() if k != "load_before"}), flush=True)
    return record


def _busy(cache, extensions):
    """Whether a background compilation (its lock file) or a kernel build (torch's ``lock``
    file in the extension's build folder) is still running."""
    folder = os.path.join(cache, "sinet_ase")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    builds = os.listdir(extensions) if os.path.isdir(extensions) else []
    return any(n.endswith(".lock") for n in names) or any(
        os.path.exists(os.path.join(extensions, b, "lock")) for b in builds
    )


def wait_for_background_compilation(cache, extensions, timeout):
    """Seconds until the background processes that ``--compile auto`` started on a cold
    cache (the fused kernels' build, the compilation) have finished, and what the
    compilation's log says."""
    folder = os.path.join(cache, "sinet_ase")
    start = time.perf_counter()
    time.sleep(1.0)  # the background processes start once the run has ended
    while time.perf_counter() - start < timeout and _busy(cache, extensions):
        time.sleep(0.5)
    logs = [
        os.path.join(folder, n) for n in (os.listdir(folder) if os.path.isdir(folder) else []) if n.endswith(".log")
    ]
    said = [line.strip() for path in logs for line in open(path) if line.startswith("compiled in")]
    record = {"name": "background compilation", "waited_s": round(time.perf_counter() - start, 1), "log": said}
    print(json.dumps(record), flush=True)
    return record


def wall_runs(args):
    """Part 1: eager; the default (auto) on a cold cache, which runs eagerly and compiles in a
    background process, then on the cache that process filled; compiled in the run (``on``)
    on a second cold cache, then warm (``--repeats``)."""
    base = tempfile.mkdtemp(prefix="sinet_md_wall_")
    tmp = os.path.join(base, "tmp")
    os.makedirs(tmp)
    auto_cache, on_cache = os.path.join(base, "inductor_auto"), os.path.join(base, "inductor_on")
    # the fused kernels: none built for the eager and the cold rows (a new machine)
    ext_eager, ext = os.path.join(base, "extensions_eager"), os.path.join(base, "extensions")
    no_background = {"SINET_ASE_BACKGROUND_COMPILE": "off"}
    records = []
    try:
        # eager first: it must not find anything compiled, and it warms the file system cache;
        # no background process, so that nothing it would build runs beside the next row
        records.append(run_sinet_md(args, "eager", "off", auto_cache, tmp, base, ext_eager, no_background))
        records.append(run_sinet_md(args, "auto, cold cache", "auto", auto_cache, tmp, base, ext))
        records.append(wait_for_background_compilation(auto_cache, ext, args.timeout))
        records.append(run_sinet_md(args, "auto, warm cache", "auto", auto_cache, tmp, base, ext))
        records.append(run_sinet_md(args, "eager, kernels built", "off", auto_cache, tmp, base, ext, no_background))
        shutil.rmtree(tmp)
        os.makedirs(tmp)  # inductor's precompiled headers live here: cold again
        records.append(run_sinet_md(args, "compiled, cold cache", "on", on_cache, tmp, base, ext))
        for k in range(args.repeats):
            records.append(run_sinet_md(args, f"compiled, warm cache #{k + 1}", "on", on_cache, tmp, base, ext))
    finally:
        if args.keep_cache:
            print("cache kept in", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return records


def step_worker(cfg):
    """Part 2, in a fresh process: ms per MD step of one (molecule, dtype, compile)."""
    import torch

    from sinet_ase import SINetCalculator
    from sinet_ase.pretrained import default_potential, shipped_structure

    torch.set_num_threads(cfg["threads"])
    atoms = shipped_structure(cfg["molecule"])
    calc = SINetCalculator.from_pretrained(
        cfg["potential"] or default_potential(), dtype=cfg["dtype"], compile=cfg["compile"]
    )
    r = time_md(atoms, calc, n_warmup=cfg["warmup"], n_steps=cfg["steps"], max_seconds=cfg["max_seconds"])
    r.update(cfg)
    return r


def step_runs(args):
    """Part 2: every (molecule, dtype, eager / compiled) in a fresh process."""
    records = []
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    for molecule in args.molecules:
        for dtype in args.dtypes:
            for compiled in (False, True):
                cfg = {
                    "molecule": molecule,
                    "dtype": dtype,
                    "compile": compiled,
                    "threads": args.threads,
                    "warmup": args.warmup,
                    "steps": args.steps_timed,
                    "max_seconds": args.max_seconds,
                    "potential": args.potential,
                }
                extra = {"TORCHINDUCTOR_CACHE_DIR": cache} if cache else {}
                proc = subprocess.run(
                    [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--worker", json.dumps(cfg)],
                    env=_env(args, extra),
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                )
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if line:
                    r = json.loads(line[-1][len("RESULT ") :])
                else:
                    r = {**cfg, "error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
                print(
                    json.dumps(
                        {
                            k: r.get(k)
                            for k in (
                                "molecule",
                                "dtype",
                                "compile",
                                "median_ms",
                                "first_call_s",
                                "foreign_load_cores",
                                "error",
                            )
                        }
                    ),
                    flush=True,
                )
                records.append(r)
    return records


def print_tables(wall, steps, args):
    if wall:
        print(f"\n`sinet-md {args.molecule} --steps {args.md_steps}` ({args.md_dtype}), one process each:\n")
        print("| run | wall s | start-up s | ms/step (sinet-md) | network | foreign load (cores) |")
        print("|---|---|---|---|---|---|")
        for r in wall:
            if "wall_s" not in r:  # the background compilation: waited for, not timed as a run
                print(
                    f"| (background compilation finished {r['waited_s']:.1f} s later: {'; '.join(r['log'])}) | | | | | |"
                )
                continue
            ms = f"{r['ms_per_step']:.2f}" if r.get("ms_per_step") is not None else "-"
            su = f"{r['start_up_s']:.1f}" if r.get("start_up_s") is not None else "-"
            net = r.get("network") or " ".join(r.get("error", []))[:60]
            print(f"| {r['name']} | {r['wall_s']:.1f} | {su} | {ms} | {net} | {r['foreign_load_cores']:.2f} |")
    if steps:
        print("\nms per MD step (median), shipped potential (first call: compilation, cache as found):\n")
        print("| molecule | dtype | eager | compiled | speed-up | compiled first call s | foreign load |")
        print("|---|---|---|---|---|---|---|")
        rows = {}
        for r in steps:
            rows.setdefault((r["molecule"], r["dtype"]), {})[bool(r["compile"])] = r
        for (molecule, dtype), v in rows.items():
            e, c = v.get(False, {}), v.get(True, {})
            em, cm = e.get("median_ms"), c.get("median_ms")
            speed = f"{em / cm:.2f}x" if em and cm else "-"
            loads = "/".join(f"{x.get('foreign_load_cores', float('nan')):.2f}" for x in (e, c))
            first = f"{c['first_call_s']:.1f}" if "first_call_s" in c else "-"
            print(
                f"| {molecule} ({e.get('n_atoms', c.get('n_atoms', '?'))} atoms) | {dtype} | "
                f"{em if em is None else round(em, 2)} | {cm if cm is None else round(cm, 2)} | {speed} | "
                f"{first} | {loads} |"
            )


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--molecule", default="aspirin", help="sinet-md structure of part 1")
    ap.add_argument("--md-steps", type=int, default=2000)
    ap.add_argument("--md-dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=2, help="warm-cache sinet-md runs")
    ap.add_argument("--potential", default=None, help="shipped potential (default: sinet-md's)")
    ap.add_argument("--molecules", nargs="*", default=["ethanol", "aspirin"], help="part 2")
    ap.add_argument("--dtypes", nargs="*", default=["float64", "float32"], help="part 2")
    ap.add_argument("--warmup", type=int, default=20, help="part 2: untimed steps after the first call")
    ap.add_argument("--steps-timed", type=int, default=200, help="part 2")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="part 2: cap per config")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--allocator", choices=["glibc", "jemalloc"], default="jemalloc" if os.path.exists(JEMALLOC) else "glibc"
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="s per process")
    ap.add_argument("--skip-wall", action="store_true")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--keep-cache", action="store_true", help="keep part 1's cache folder")
    ap.add_argument("--out", default="/tmp/sinet_bench")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(step_worker(json.loads(args.worker))), flush=True)
        return

    env = {
        "cpu": cpu_name(),
        "nproc": os.cpu_count(),
        "threads": args.threads,
        "allocator": args.allocator,
        "argv": sys.argv,
        "start": machine_state(),
    }
    print("env:", json.dumps(env), flush=True)
    wall = [] if args.skip_wall else wall_runs(args)
    steps = [] if args.skip_steps else step_runs(args)
    env["end"] = machine_state()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sinet_md_wall.json")
    with open(path + ".tmp", "w") as handle:
        json.dump({"env": env, "sinet_md": wall, "steps": steps}, handle, indent=1)
    os.replace(path + ".tmp", path)
    print_tables(wall, steps, args)
    print("wrote", path)


if __name__ == "__main__":
    main()
