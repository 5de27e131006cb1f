"""MD speed with every model at its fastest CPU mode: SINet eager / compiled / default against
NequIP and MACE eager and compiled, at the matched settings of ``bench_md.py`` (issue #24.1).

Run from the repository root in the project venv, on an idle machine::

    python benchmarks/bench_md_compiled_peers.py --quick    # ~15 min: ethanol, aspirin, Cu 864
    python benchmarks/bench_md_compiled_peers.py            # full: + Cu 6,912, L = 2 and NequIP-M
    python benchmarks/bench_md_compiled_peers.py --prepare-only [--quick]   # exports, caches, checks

Two stages, each config in a fresh ``bench_md.py`` worker process (jemalloc for every
model, 2 threads):

1. **prepare**: every compiled path (``nequip-*:aoti``, ``nequip-*:ts``, ``mace-*:compile``,
   ``sinet-*c``) is built once per (model, system, dtype) and its energy and forces are
   compared with the eager model of the same weights on three structures
   (``bench_md.verify_against_eager``). This writes the NequIP AOTInductor exports and fills
   the inductor caches, all under ``--cache`` (default ``~/.cache/sinet_bench_peers``:
   ``nequip/*.nequip.pt2``, ``inductor/{mace,sinet}/``, ``verify.json``), so the timed stage
   never waits for an export and its first calls load compiled code from disk. A config
   already checked (same versions) is not checked again; ``--reverify`` redoes them. The
   default mode (``sinet-*a``) runs the same compiled network as ``sinet-*c`` and is not
   checked separately. Cu 6,912 is not checked (its exports are those of Cu 864: the
   artefacts have dynamic atom and edge counts).
2. **time**: ms per ASE VelocityVerlet step (``bench_md.time_md``; first call and warm-up
   untimed, compilations included there), ordered system by system and dtype by dtype so
   that the points compared are close in time. Compiled points whose check failed are
   still timed and flagged.

Writes ``md_compiled_peers<tag>.json`` (environment, checks, every record with the
machine load) and ``md_compiled_peers<tag>.md`` (the checks, ms per step, and the ratio of
each SINet mode to the fastest mode of each matched peer). Matched message-passing steps
(``receptive_field.py``): SINet ``num_layers`` 1 against NequIP-S and MACE (2 steps), 3
against NequIP-M (4 steps); L, channels and cutoff as in ``bench_md.py``.

The peers run in their own venvs: ``NEQUIP_PYTHON`` / ``MACE_PYTHON`` (default
``/work/peers/{nequip,mace}/bin/python`` when present).
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_md  # noqa: E402

#: models timed by --quick and by the full run (mode suffixes: bench_md.py)
QUICK_MODELS = ["nequip-s", "nequip-s:aoti", "mace-l2", "mace-l2:compile", "sinet-l1t1", "sinet-l1t1c", "sinet-l1t1a"]
FULL_MODELS = QUICK_MODELS + [
    "sinet-l2t1",
    "sinet-l2t1c",
    "sinet-l2t1a",
    "nequip-m",
    "nequip-m:aoti",
    "sinet-l2t3",
    "sinet-l2t3c",
    "sinet-l2t3a",
]
#: compiled paths that are checked but not timed (they do not run here: the record says why)
CHECK_ONLY = ["nequip-s:ts"]
QUICK_SYSTEMS = ["ethanol_9", "aspirin_21", "cu_fcc_864"]
FULL_SYSTEMS = QUICK_SYSTEMS + ["cu_fcc_6912"]
#: SINet model -> the peers it is matched with
MATCHED = {"sinet-l1t1": ["nequip-s", "mace-l2"], "sinet-l2t1": ["nequip-s", "mace-l2"], "sinet-l2t3": ["nequip-m"]}
PEER_VENVS = {"NEQUIP_PYTHON": "/work/peers/nequip/bin/python", "MACE_PYTHON": "/work/peers/mace/bin/python"}


def base_model(spec):
    """``sinet-l1t1c`` -> ``sinet-l1t1``, ``sinet-l1t1u`` -> ``sinet-l1t1``, ``nequip-s:aoti`` -> ``nequip-s``."""
    family, variant = bench_md.parse_model(spec)
    if family == "sinet" and bench_md.sinet_suffix(variant) in ("u", "cu"):
        return f"{family}-{variant.rstrip('cau')}"
    eager = bench_md.eager_variant(family, variant)
    return f"{family}-{eager}" if eager else spec


def mode_of(spec):
    family, variant = bench_md.parse_model(spec)
    if ":" in variant:
        return variant.partition(":")[2]
    if family == "sinet":
        suffix = bench_md.sinet_suffix(variant)
        return {"c": "compiled", "a": "default", "u": "eager, unfused", "cu": "compiled, unfused"}.get(suffix, "eager")
    return "eager"


def is_compiled(spec):
    return mode_of(spec) not in ("eager", "eager, unfused", "default")


def cache_env(cache, spec):
    """Environment of a worker: the peer artefact folder and one inductor cache per family."""
    family, _ = bench_md.parse_model(spec)
    return {"SINET_BENCH_PEER_CACHE": cache, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor", family)}


def versions_key(spec):
    """What a check depends on besides the config: the interpreter of the model's family."""
    python, _ = bench_md.interpreter_for(spec)
    return os.path.abspath(python) if python else ""


def prepare(args, models, systems, log):
    """Stage 1: build and check every compiled path; returns the check records."""
    path = os.path.join(args.cache, "verify.json")
    done = {}
    if os.path.isfile(path) and not args.reverify:
        with open(path) as f:
            done = {r["key"]: r for r in json.load(f)}
    records = []
    todo = [m for m in models if is_compiled(m)] + [m for m in CHECK_ONLY if args.check_ts]
    for system in systems:
        if system == "cu_fcc_6912":
            continue
        for dtype in args.dtypes:
            for spec in todo:
                key = json.dumps([spec, system, dtype, versions_key(spec)])
                if key in done and "error" not in done[key]:
                    records.append(done[key])
                    continue
                cfg = {
                    "model": spec,
                    "system": system,
                    "dtype": dtype,
                    "stress": False,
                    "steps": 0,
                    "warmup": 0,
                    "max_seconds": None,
                    "wait_idle": 0.0,
                    "threads": args.threads,
                    "verify": True,
                }
                t0 = time.perf_counter()
                r = bench_md.launch(cfg, "jemalloc", args.worker_timeout, cache_env(args.cache, spec))
                r.update(key=key, prepare_wall_s=round(time.perf_counter() - t0, 1))
                if "error" in r:  # the worker failed (the record holds its config and the error)
                    r["verify"] = "error"
                if r.get("verify") == "pass" and not args.keep_rows:
                    r.pop("structures", None)
                records.append(r)
                done[key] = r
                log(
                    f"check {spec} {system} {dtype}: {r.get('verify') or r.get('error')} "
                    f"(worst {r.get('worst_rel_err', float('nan')):.1e}, {r['prepare_wall_s']} s)"
                )
                os.makedirs(args.cache, exist_ok=True)
                tmp = path + f".tmp{os.getpid()}"
                with open(tmp, "w") as f:
                    json.dump(list(done.values()), f, indent=1)
                os.replace(tmp, path)
    return records


def time_all(args, models, systems, log, write):
    """Stage 2: the timed MD matrix, system by system, dtype by dtype."""
    results = []
    for system in systems:
        for dtype in args.dtypes:
            for spec in models:
                cfg = {
                    "model": spec,
                    "system": system,
                    "dtype": dtype,
                    "stress": False,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "max_seconds": args.max_seconds,
                    "wait_idle": args.wait_idle,
                    "threads": args.threads,
                }
                if system == "cu_fcc_6912":
                    need = bench_md.predicted_peak_gib(results, cfg, "jemalloc")
                    have = bench_md.machine_state()["mem_available_gib"]
                    if need is not None and have is not None and need > args.max_mem_frac * have:
                        r = {**cfg, "allocator": "jemalloc", "skipped": f"needs ~{need:.0f} GiB, {have:.0f} free"}
                        results.append(r)
                        log(json.dumps(r))
                        continue
                t0 = time.perf_counter()
                r = bench_md.launch(cfg, "jemalloc", args.worker_timeout, cache_env(args.cache, spec))
                r["worker_wall_s"] = round(time.perf_counter() - t0, 1)
                results.append(r)
                brief = {
                    k: r.get(k)
                    for k in (
                        "model",
                        "system",
                        "dtype",
                        "median_ms",
                        "first_call_s",
                        "foreign_load_cores",
                        "worker_wall_s",
                        "error",
                    )
                }
                log(json.dumps(brief))
                write(results)
    return results


# ------------------------------------------------------------------ report

SYSTEM_NAMES = {
    "ethanol_9": "ethanol (9)",
    "aspirin_21": "aspirin (21)",
    "cu_fcc_108": "Cu 108",
    "cu_fcc_864": "Cu 864",
    "cu_fcc_6912": "Cu 6,912",
}


def _ms(results, spec, system, dtype):
    for r in results:
        if r.get("model") == spec and r.get("system") == system and r.get("dtype") == dtype:
            return r.get("median_ms")
    return None


def _cell(results, spec, system, dtype):
    for r in results:
        if r.get("model") == spec and r.get("system") == system and r.get("dtype") == dtype:
            if "median_ms" in r:
                return f"{r['median_ms']:,.1f}"
            return "skipped" if "skipped" in r else "error"
    return "-"


def markdown(env, checks, results, models, systems, dtypes):
    lines = [
        "# MD ms per step, every model at its fastest CPU mode",
        "",
        f"Run {env['start']['date']} to {env.get('end', {}).get('date', '?')}, {env['cpu']}, "
        f"{env['threads']} threads, jemalloc for every model; command `{' '.join(env['argv'])}`. "
        "Median ms per VelocityVerlet step (first call and warm-up untimed); f32 / f64.",
        "",
    ]
    lines += [
        "## Checks: compiled against eager, same weights",
        "",
        "| model | system | dtype | result | worst relative difference (energy, forces) |",
        "|---|---|---|---|---|",
    ]
    for r in checks:
        res = r.get("verify")
        if "error" in r:
            res = "error: " + str(r["error"])[-200:].replace("|", "/")
        worst = f"{r['worst_rel_err']:.1e}" if "worst_rel_err" in r else "-"
        lines.append(f"| {r.get('model')} | {r.get('system')} | {r.get('dtype')} | {res} | {worst} |")
    lines += [
        "",
        "## ms per step (f32 / f64)",
        "",
        "| model | mode | " + " | ".join(SYSTEM_NAMES.get(s, s) for s in systems) + " |",
        "|---|---|" + "---|" * len(systems),
    ]
    for spec in models:
        cells = [" / ".join(_cell(results, spec, s, d) for d in dtypes) for s in systems]
        lines.append(f"| {base_model(spec)} | {mode_of(spec)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "First call (s, f32 / f64; compilation or loading of compiled code included, untimed in the table above):",
        "",
        "| model | mode | " + " | ".join(SYSTEM_NAMES.get(s, s) for s in systems) + " |",
        "|---|---|" + "---|" * len(systems),
    ]
    for spec in models:
        cells = []
        for s in systems:
            vals = []
            for d in dtypes:
                r = next(
                    (
                        r
                        for r in results
                        if r.get("model") == spec
                        and r.get("system") == s
                        and r.get("dtype") == d
                        and "first_call_s" in r
                    ),
                    None,
                )
                vals.append(f"{r['first_call_s']:.1f}" if r else "-")
            cells.append(" / ".join(vals))
        lines.append(f"| {base_model(spec)} | {mode_of(spec)} | " + " | ".join(cells) + " |")
    loads = [r["foreign_load_cores"] for r in results if "foreign_load_cores" in r]
    if loads:
        lines += [
            "",
            f"Foreign load during the timed windows: max {max(loads):.2f} cores "
            f"(points above 0.15 are not trustworthy).",
        ]
    lines += [
        "",
        "## Ratios: fastest mode of the matched peer / SINet mode (above 1: SINet faster)",
        "",
        "| SINet | peer (fastest mode) | system | dtype | eager | eager, unfused | compiled | compiled, unfused | default |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sinet, peers in MATCHED.items():
        if sinet not in models:
            continue
        for peer in peers:
            modes = [m for m in models if base_model(m) == peer]
            for s in systems:
                for d in dtypes:
                    times = {m: _ms(results, m, s, d) for m in modes}
                    times = {m: t for m, t in times.items() if t is not None}
                    if not times:
                        continue
                    best = min(times, key=times.get)
                    row = []
                    for suffix in ("", "u", "c", "cu", "a"):
                        t = _ms(results, sinet + suffix, s, d)
                        row.append(f"{times[best] / t:.2f}x" if t else "-")
                    lines.append(
                        f"| {sinet} | {best} ({times[best]:,.1f} ms) | {SYSTEM_NAMES.get(s, s)} | "
                        f"{d} | " + " | ".join(row) + " |"
                    )
    lines += _eager_ratio_lines(results, models, systems, dtypes)
    return "\n".join(lines) + "\n"


def _eager_ratio_lines(results, models, systems, dtypes):
    """Issue #24.4: SINet eager (with and without the fused kernels) against each matched
    peer's eager mode, for the runs where no compiler is at hand."""
    lines = [
        "",
        "## Eager against eager: the matched peer eager / SINet eager (above 1: SINet faster)",
        "",
        "| SINet | peer (eager) | system | dtype | eager (fused kernels) | eager, unfused |",
        "|---|---|---|---|---|---|",
    ]
    for sinet, peers in MATCHED.items():
        for peer in peers:
            if sinet not in models or peer not in models:
                continue
            for s in systems:
                for d in dtypes:
                    peer_ms = _ms(results, peer, s, d)
                    if peer_ms is None:
                        continue
                    row = []
                    for suffix in ("", "u"):
                        t = _ms(results, sinet + suffix, s, d)
                        row.append(f"{peer_ms / t:.2f}x" if t else "-")
                    lines.append(
                        f"| {sinet} | {peer} ({peer_ms:,.1f} ms) | {SYSTEM_NAMES.get(s, s)} | {d} | "
                        + " | ".join(row)
                        + " |"
                    )
    return lines


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="ethanol, aspirin, Cu 864; SINet L = 1 (1 layer), NequIP-S, MACE; 5 steps"
    )
    ap.add_argument("--models", nargs="*", help="default: the quick or the full set")
    ap.add_argument("--systems", nargs="*", help="default: the quick or the full set")
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    ap.add_argument("--steps", type=int, help="timed steps (quick 5, full 10)")
    ap.add_argument("--warmup", type=int, help="untimed steps after the first call (quick 2, full 3)")
    ap.add_argument(
        "--max-seconds", type=float, default=20.0, help="cap on timed seconds per config (steps reduced, never below 5)"
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        help="seconds to wait at most for other processes to go quiet (quick 5, full 60)",
    )
    ap.add_argument("--threads", type=int, default=bench_md.THREADS)
    ap.add_argument("--max-mem-frac", type=float, default=0.8)
    ap.add_argument("--worker-timeout", type=float, default=3600.0)
    ap.add_argument(
        "--cache",
        default=None,
        help="compiled artefacts and checks (default SINET_BENCH_PEER_CACHE or ~/.cache/sinet_bench_peers)",
    )
    ap.add_argument("--prepare-only", action="store_true", help="stage 1 only: exports, caches, checks")
    ap.add_argument("--skip-prepare", action="store_true", help="stage 2 only")
    ap.add_argument("--reverify", action="store_true", help="check again configs checked before")
    ap.add_argument("--no-ts", dest="check_ts", action="store_false", help="do not try NequIP's TorchScript mode")
    ap.add_argument("--keep-rows", action="store_true", help="keep per-structure rows of passed checks")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    for var, path in PEER_VENVS.items():
        if not os.environ.get(var) and os.path.exists(path):
            os.environ[var] = path
    args.cache = os.path.abspath(os.path.expanduser(args.cache or bench_md.peer_cache_dir()))
    models = args.models or (QUICK_MODELS if args.quick else FULL_MODELS)
    systems = args.systems or (QUICK_SYSTEMS if args.quick else FULL_SYSTEMS)
    args.steps = args.steps or (5 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    if args.wait_idle is None:
        args.wait_idle = 5.0 if args.quick else 60.0
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"md_compiled_peers{args.tag}")
    env = {
        "python": platform.python_version(),
        "cpu": bench_md.cpu_name(),
        "nproc": os.cpu_count(),
        "threads": args.threads,
        "argv": sys.argv,
        "cache": args.cache,
        "interpreters": {m: bench_md.interpreter_for(m)[0] for m in models},
        "start": bench_md.machine_state(),
    }
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    checks = [] if args.skip_prepare else prepare(args, models, systems, log)
    env["prepare_wall_s"] = round(time.perf_counter() - t_start, 1)
    results = []

    def write(results):
        tmp = base + ".json.tmp"
        with open(tmp, "w") as f:
            json.dump({"env": env, "checks": checks, "results": results}, f, indent=1)
        os.replace(tmp, base + ".json")

    if not args.prepare_only:
        results = time_all(args, models, systems, log, write)
    env["end"] = bench_md.machine_state()
    env["wall_s"] = round(time.perf_counter() - t_start, 1)
    write(results)
    text = markdown(env, checks, results, models, systems, args.dtypes)
    with open(base + ".md", "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {base}.json and {base}.md")
    failed = [c for c in checks if c.get("verify") == "FAIL"]
    if failed:
        print(f"{len(failed)} compiled paths differ from their eager models: see the checks table")


if __name__ == "__main__":
    main()
