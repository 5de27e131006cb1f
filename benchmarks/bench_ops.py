"""Figure 3a/3b: one equivariant operation, forward + backward, vs degree L and channels n_c.

Run (from the repository root, in the project venv)::

    python benchmarks/bench_ops.py                 # full sweep (e3nn at L = 5, 6 takes minutes)
    python benchmarks/bench_ops.py --skip-slow     # e3nn only up to L = 4 (SI still to L = 6)
    python benchmarks/bench_ops.py --quick         # validation: L <= 3, n_c <= 64, 3 repeats

Setting (paper Sec. 5.1, and /work/shared/peer_bench/bench_e3nn_tp.py for the anchors):
``h1 = n_c x (0e + 1o + ... + L)`` node features and ``h2 = 1 x (0e + 1o + ... + L)``
spherical harmonics of random unit vectors (``component`` normalisation), on a batch
of E = 4,096 edges; output ``h1``'s irreps.

* ``SI``: ``sinet_ase.ops.ScalarInteraction(SphericalLayout(L, n_c), num_edge_scalars=0,
  with_receiver=False, hidden=64)`` - the operation as the paper benchmarks it:
  invariants ``q^{l,k} = <h1^{l,k}, Y^l>`` and ``h1^0``, one MLP (n_c (L+2) -> 64 ->
  2 n_c (L+1)), message ``alpha h1 + beta Y``. Inputs in the edge layout SINet's
  layers use: ``(E, (L+1)^2, n_c)`` (``sinet_ase.testing.scalar_interaction_messages_channels_last``,
  the per-edge form; the layers run the node-regrouped neighbour sum).
* ``SI+conv``: the same operation in its ``(E, n_c, (L+1)^2)`` form with
  e3nn-layout input and output
  (``sinet_ase.testing.scalar_interaction_messages``), i.e. ``from_e3nn`` before and ``to_e3nn`` after (two
  gathers), for a like-for-like memory layout with e3nn.
* ``FCTP``: ``e3nn.o3.FullyConnectedTensorProduct(h1, h2, h1)``, internal shared weights.
* ``UVU``: the channel-wise convolution TP of NequIP / MACE: ``o3.TensorProduct(h1, h2, mid,
  [(i, j, k, 'uvu', True)])``, one output block per path (``mid`` sorted as MACE's
  ``tp_out_irreps_with_instructions``), ``shared_weights=False``, per-edge weights
  ``(E, weight_numel)`` passed in.
* ``SI-c``, ``FCTP-c``: ``SI`` and ``FCTP`` through ``torch.compile`` (inductor, default
  options), as ``SINetCalculator(compile=True)`` runs SINet's layers; the two compiling
  calls (with and without gradients) are made before timing and reported as
  ``compile_s``. e3nn's TPs are TorchScript code already (``e3nn_opt`` in the env record).
  Not in the default sweep (``--kinds`` lists them).

fwd = forward under ``no_grad``; fwd+bwd = forward + ``torch.autograd.grad`` of a
random cotangent w.r.t. h1, h2 and the weights (the MLP parameters for SI, the
internal weights for FCTP, the per-edge weight tensor for UVU). Timing: warm-up
calls (3, or 1 when a call takes > 2 s), then the median of ``--reps`` calls (at
least 3; fewer than ``--reps`` only when they would exceed ``--max-seconds``; at
least 0.5 s of calls for fast ops). float32 by default, ``torch.set_num_threads(2)``.
The machine load (``os.getloadavg``, ``uptime``, and the cores other processes used
while timing) is stored with every point.

Output: a markdown table on stdout, ``ops_<dtype>.json`` and ``ops_<dtype>.png``
(log-scale, panels a: ms vs L at n_c = 64, b: ms vs n_c at L = 3) in ``--out``.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

torch.set_num_threads(2)

import e3nn  # noqa: E402
from e3nn import o3  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_md import ForeignLoad, allocator_name, cpu_name, machine_state, wait_for_idle  # noqa: E402

from sinet_ase.ops import ScalarInteraction, SphericalLayout  # noqa: E402
from sinet_ase.testing import (
    scalar_interaction_messages,  # noqa: E402
    scalar_interaction_messages_channels_last,
)

BATCH = 4096
SI_HIDDEN = 64
KINDS = ["SI", "SI+conv", "FCTP", "UVU", "SI-c", "FCTP-c"]
DEFAULT_KINDS = KINDS[:4]
COMPILED = "-c"  # suffix: the same op through torch.compile (inductor)


def h_irreps(L, mul):
    return o3.Irreps([(mul, (l, (-1) ** l)) for l in range(L + 1)])


def uvu_tp(irreps1, irreps2, target):
    """NequIP/MACE-style channel-wise TP (MACE's tp_out_irreps_with_instructions), as the anchors."""
    mid, instr = [], []
    for i, (mul, ir1) in enumerate(irreps1):
        for j, (_, ir2) in enumerate(irreps2):
            for ir_out in ir1 * ir2:
                if ir_out in target:
                    k = len(mid)
                    mid.append((mul, ir_out))
                    instr.append((i, j, k, "uvu", True))
    mid = o3.Irreps(mid)
    mid_sorted, p, _ = mid.sort()
    instr = [(i1, i2, p[io], m, t) for i1, i2, io, m, t in instr]
    return o3.TensorProduct(irreps1, irreps2, mid_sorted, instr, shared_weights=False, internal_weights=False)


def timeit(fn, n_warm=3, n_rep=10, min_rep=3, max_seconds=60.0, min_seconds=0.5, max_rep=200):
    """Median and min wall time and median process CPU time (ms) of ``fn`` calls after warm-up.

    The rule is in the module docstring. CPU time (all threads of this process) is kept
    because it is far less sensitive than wall time to other jobs on a shared machine.
    """
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    for _ in range((n_warm if first < 2.0 else 1) - 1):
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
    n_target = max(min_rep, min(n_rep, int(max_seconds / max(first, 1e-9))))
    ts, cpu = [], []
    t_all = time.perf_counter()
    while len(ts) < n_target or (time.perf_counter() - t_all < min_seconds and len(ts) < max_rep):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(ts) * 1e3, min(ts) * 1e3, statistics.median(cpu) * 1e3, len(ts)


def make_op(kind, L, nc, dtype):
    """Module, inputs, the tensors to differentiate and a cotangent for one op."""
    if kind.endswith(COMPILED):
        call, wrt, grad_out, info = make_op(kind[: -len(COMPILED)], L, nc, dtype)
        # every point compiles afresh: the calls of all points share one code object, and
        # after torch._dynamo's recompile limit (8) it would run the later points eager
        torch._dynamo.reset()
        return torch.compile(call), wrt, grad_out, info
    torch.manual_seed(0)
    h1 = h_irreps(L, nc)
    h2 = o3.Irreps.spherical_harmonics(L)
    vec = torch.randn(BATCH, 3, dtype=dtype)
    Y = o3.spherical_harmonics(h2, vec, normalize=True, normalization="component").detach()
    Y.requires_grad_(True)
    info = {}
    if kind in ("SI", "SI+conv"):
        layout = SphericalLayout(L, nc)
        op = ScalarInteraction(layout, num_edge_scalars=0, with_receiver=False, hidden=SI_HIDDEN).to(dtype)
        params = list(op.parameters())
        info["weight_numel"] = sum(p.numel() for p in params)
        if kind == "SI":
            # the edge layout SINet's layers use: (E, M, c), channels innermost
            x1 = torch.randn(BATCH, layout.num_m, nc, dtype=dtype, requires_grad=True)
            call = lambda: scalar_interaction_messages_channels_last(op, x1, Y)  # noqa: E731
        else:
            layout = layout.to(dtype)
            x1 = torch.randn(BATCH, h1.dim, dtype=dtype, requires_grad=True)
            call = lambda: layout.to_e3nn(scalar_interaction_messages(op, layout.from_e3nn(x1), Y))  # noqa: E731
        out_shape = call().shape
    else:
        tp = o3.FullyConnectedTensorProduct(h1, h2, h1) if kind == "FCTP" else uvu_tp(h1, h2, h1)
        tp = tp.to(dtype)
        x1 = torch.randn(BATCH, h1.dim, dtype=dtype, requires_grad=True)
        info.update(n_paths=len(tp.instructions), weight_numel=tp.weight_numel)
        if kind == "FCTP":
            params = list(tp.parameters())
            call = lambda: tp(x1, Y)  # noqa: E731
        else:
            w = torch.randn(BATCH, tp.weight_numel, dtype=dtype, requires_grad=True)
            params = [w]
            call = lambda: tp(x1, Y, w)  # noqa: E731
        out_shape = (BATCH, tp.irreps_out.dim)
    grad_out = torch.randn(out_shape, dtype=dtype)
    return call, [x1, Y] + params, grad_out, info


def bench_one(kind, L, nc, dtype, args):
    t0 = time.perf_counter()
    call, wrt, grad_out, info = make_op(kind, L, nc, dtype)
    build_s = time.perf_counter() - t0

    def fwd():
        with torch.no_grad():
            call()

    def fwd_bwd():
        torch.autograd.grad(call(), wrt, grad_out)

    compile_s = None
    if kind.endswith(COMPILED):  # compile both graphs (with and without gradients) before timing
        t0 = time.perf_counter()
        fwd_bwd()
        fwd()
        compile_s = round(time.perf_counter() - t0, 1)
    waited = wait_for_idle(args.wait_idle)
    before = machine_state()
    with ForeignLoad() as fl:
        f_med, f_min, f_cpu, f_n = timeit(fwd, n_rep=args.reps, max_seconds=args.max_seconds)
        fb_med, fb_min, fb_cpu, fb_n = timeit(fwd_bwd, n_rep=args.reps, max_seconds=args.max_seconds)
    return {
        "kind": kind,
        "L": L,
        "n_c": nc,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "batch": BATCH,
        **info,
        "build_s": round(build_s, 3),
        "compile_s": compile_s,
        "fwd_ms": f_med,
        "fwd_min_ms": f_min,
        "fwd_cpu_ms": f_cpu,
        "fwd_n": f_n,
        "fwd_bwd_ms": fb_med,
        "fwd_bwd_min_ms": fb_min,
        "fwd_bwd_cpu_ms": fb_cpu,
        "fwd_bwd_n": fb_n,
        "foreign_load_cores": round(fl.cores, 3),
        "waited_for_idle_s": round(waited, 1),
        "load_before": before,
        "load_after": machine_state(),
    }


# ------------------------------------------------------------------ report


def index(results):
    return {(r["kind"], r["L"], r["n_c"]): r for r in results}


def print_table(results):
    idx = index(results)
    points = sorted({(r["L"], r["n_c"]) for r in results}, key=lambda p: (p[1] != 64, p[0], p[1]))
    print("\nms per call (median), batch 4,096 edges; speed-up = e3nn time / SI time (fwd+bwd)\n")
    print(
        "| L | n_c | SI fwd | SI fwd+bwd | SI+conv fwd+bwd | FCTP fwd | FCTP fwd+bwd | UVU fwd | "
        "UVU fwd+bwd | FCTP/SI | UVU/SI | SI-c fwd+bwd | FCTP-c fwd+bwd | foreign load (cores) | loadavg 1 min |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def cell(kind, L, nc, key):
        r = idx.get((kind, L, nc))
        return f"{r[key]:.2f}" if r else "-"

    for L, nc in points:
        si = idx.get(("SI", L, nc))
        ratios = []
        for kind in ("FCTP", "UVU"):
            r = idx.get((kind, L, nc))
            ratios.append(f"{r['fwd_bwd_ms'] / si['fwd_bwd_ms']:.1f}x" if (r and si) else "-")
        present = [idx[(k, L, nc)] for k in KINDS if (k, L, nc) in idx]
        loads = "/".join(f"{r['foreign_load_cores']:.2f}" for r in present)
        lavg = "/".join(f"{r['load_before']['loadavg'][0]:.1f}" for r in present)
        print(
            f"| {L} | {nc} | {cell('SI', L, nc, 'fwd_ms')} | {cell('SI', L, nc, 'fwd_bwd_ms')} | "
            f"{cell('SI+conv', L, nc, 'fwd_bwd_ms')} | {cell('FCTP', L, nc, 'fwd_ms')} | "
            f"{cell('FCTP', L, nc, 'fwd_bwd_ms')} | {cell('UVU', L, nc, 'fwd_ms')} | "
            f"{cell('UVU', L, nc, 'fwd_bwd_ms')} | {ratios[0]} | {ratios[1]} | "
            f"{cell('SI-c', L, nc, 'fwd_bwd_ms')} | {cell('FCTP-c', L, nc, 'fwd_bwd_ms')} | {loads} | {lavg} |"
        )
    print("\nprocess CPU time per fwd+bwd call (ms, all threads; less sensitive to other jobs)\n")
    print("| L | n_c | " + " | ".join(KINDS) + " | FCTP/SI | UVU/SI |")
    print("|---|---|" + "---|" * (len(KINDS) + 2))
    for L, nc in points:
        si = idx.get(("SI", L, nc))
        ratios = []
        for kind in ("FCTP", "UVU"):
            r = idx.get((kind, L, nc))
            ratios.append(f"{r['fwd_bwd_cpu_ms'] / si['fwd_bwd_cpu_ms']:.1f}x" if (r and si) else "-")
        print(
            f"| {L} | {nc} | "
            + " | ".join(cell(k, L, nc, "fwd_bwd_cpu_ms") for k in KINDS)
            + f" | {ratios[0]} | {ratios[1]} |"
        )


def scaling_exponent(results, kind="SI", nc=64, key="fwd_bwd_ms"):
    """Least-squares slope of log(time) vs log(L+1) over the n_c = 64 sweep (2 = (L+1)^2)."""
    pts = sorted((r["L"], r[key]) for r in results if r["kind"] == kind and r["n_c"] == nc)
    if len(pts) < 2:
        return None
    xs = [math.log(L + 1) for L, _ in pts]
    ys = [math.log(t) for _, t in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def check_goals(results, key="fwd_bwd_ms"):
    """The speed issue's goals, checked on fwd+bwd times (``key``); returns printable lines."""
    idx = index(results)
    lines = [f"goals on {key}:"]

    def ratio(kind, L):
        a, b = idx.get((kind, L, 64)), idx.get(("SI", L, 64))
        return a[key] / b[key] if (a and b) else None

    for L, goal in ((3, 10.0), (6, 50.0)):
        r = ratio("FCTP", L)
        lines.append(
            f"  FCTP/SI at L={L}, n_c=64 >= {goal:.0f}x: "
            + ("not measured" if r is None else f"{r:.1f}x -> {'MET' if r >= goal else 'NOT MET'}")
        )
        si_c = idx.get(("SI-c", L, 64))
        fctp = [idx[(k, L, 64)][key] for k in ("FCTP", "FCTP-c") if (k, L, 64) in idx]
        if si_c and fctp:  # compiled SI against the faster FCTP form measured
            r = min(fctp) / si_c[key]
            lines.append(
                f"  faster FCTP form / SI-c at L={L}, n_c=64 >= {goal:.0f}x: {r:.1f}x -> "
                f"{'MET' if r >= goal else 'NOT MET'}"
            )
    uvu = {L: ratio("UVU", L) for L in range(2, 7)}
    meas = {L: r for L, r in uvu.items() if r is not None}
    if meas:
        ok = all(r > 1.0 for r in meas.values())
        lines.append(
            "  SI faster than UVU at every measured L >= 2: "
            + ", ".join(f"L={L} {r:.1f}x" for L, r in meas.items())
            + f" -> {'MET' if ok else 'NOT MET'}"
        )
    k = scaling_exponent(results, key=key)
    if k is not None:
        Ls = sorted(r["L"] for r in results if r["kind"] == "SI" and r["n_c"] == 64)
        lines.append(
            f"  SI time ~ (L+1)^{k:.2f} (least squares over L={Ls[0]}..{Ls[-1]}; goal: exponent <= 2)"
            f" -> {'MET' if k <= 2.0 else 'NOT MET'}"
        )
    return lines


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {
        "SI": ("C0", "o", "Scalar Interaction"),
        "SI+conv": ("C0", ".", "SI + e3nn layout conversion"),
        "FCTP": ("C3", "s", "e3nn FullyConnectedTensorProduct"),
        "UVU": ("C1", "^", "e3nn 'uvu' TP, per-edge weights"),
        "SI-c": ("C2", "o", "Scalar Interaction, torch.compile"),
        "FCTP-c": ("C4", "s", "e3nn FCTP, torch.compile"),
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (x_key, fixed_key, fixed_val) in zip(axes, (("L", "n_c", 64), ("n_c", "L", 3))):
        for kind in KINDS:
            pts = sorted(
                (r[x_key], r["fwd_bwd_ms"]) for r in results if r["kind"] == kind and r[fixed_key] == fixed_val
            )
            if not pts:
                continue
            color, marker, label = style[kind]
            ls = ":" if kind == "SI+conv" else "-"
            ax.plot(*zip(*pts), ls, color=color, marker=marker, label=label)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (forward + backward)")
        ax.grid(True, which="both", alpha=0.3)
    si = sorted((r["L"], r["fwd_bwd_ms"]) for r in results if r["kind"] == "SI" and r["n_c"] == 64)
    if si:
        L0, t0 = si[0]
        Ls = [L for L, _ in si]
        axes[0].plot(
            Ls,
            [t0 * ((L + 1) / (L0 + 1)) ** 2 for L in Ls],
            "--",
            color="gray",
            label=r"$\propto (L+1)^2$ (from SI at L=%d)" % L0,
        )
    axes[0].set_xticks(sorted({r["L"] for r in results if r["n_c"] == 64}))
    axes[0].set_xlabel("L (n_c = 64)")
    axes[0].set_title("(a) time vs L")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("n_c (L = 3)")
    axes[1].set_title("(b) time vs channels")
    axes[0].legend(fontsize=7)
    dt = results[0]["dtype"] if results else ""
    threads = results[0].get("threads", 2) if results else 2
    fig.suptitle(
        f"one op, E = {BATCH} edges, {dt}, {threads} threads (torch {torch.__version__}, e3nn {e3nn.__version__})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="L <= 3, n_c <= 64, 3 repeats")
    ap.add_argument("--skip-slow", action="store_true", help="e3nn TPs only up to L = 4 (sets --e3nn-max-L 4)")
    ap.add_argument("--e3nn-max-L", type=int, default=6, help="largest L for the e3nn TPs")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time budget per point and mode")
    ap.add_argument("--kinds", nargs="*", default=DEFAULT_KINDS, choices=KINDS)
    ap.add_argument("--Ls", nargs="*", type=int, default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--ncs", nargs="*", type=int, default=[16, 32, 64, 128, 256])
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="seconds to wait at most for other processes to go quiet before each point",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the benchmark setting is 2)")
    ap.add_argument("--out", default="/tmp/sinet_bench")
    ap.add_argument(
        "--replot",
        nargs="+",
        metavar="JSON",
        help="only redraw table and PNG from results files; a point in a later file replaces "
        "the same (kind, L, n_c) of an earlier one (reruns); writes <out>/ops_merged.*",
    )
    args = ap.parse_args()

    if args.replot:
        merged = {}
        for path in args.replot:
            for r in json.load(open(path))["results"]:
                merged[(r["kind"], r["L"], r["n_c"])] = dict(r, source=path)
        results = list(merged.values())
        print_table(results)
        print("\n".join(check_goals(results) + check_goals(results, "fwd_bwd_cpu_ms")))
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, "ops_merged")
        with open(stem + ".json", "w") as f:
            json.dump({"sources": args.replot, "results": results}, f, indent=1)
        plot(results, stem + ".png")
        print("wrote", stem + ".json", stem + ".png")
        return
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    Ls, ncs, reps = args.Ls, args.ncs, args.reps
    if args.quick:
        Ls, ncs = [L for L in Ls if L <= 3], [n for n in ncs if n <= 64]
        args.reps = min(reps, 3)
    e3nn_max_L = min(args.e3nn_max_L, 4) if args.skip_slow else args.e3nn_max_L
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(
        args.out,
        f"ops_{args.dtype}{'_quick' if args.quick else ''}{'' if args.threads == 2 else f'_{args.threads}threads'}",
    )
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "nproc": os.cpu_count(),
        "e3nn_opt": e3nn.get_optimization_defaults(),
        "batch": BATCH,
        "si_hidden": SI_HIDDEN,
        "allocator": allocator_name(),
        "malloc_conf": os.environ.get("MALLOC_CONF", ""),
        "argv": sys.argv,
        "start": machine_state(),
    }
    print("env:", json.dumps(env), flush=True)
    configs = [(L, 64) for L in Ls] + [(3, nc) for nc in ncs if not (nc == 64 and 3 in Ls)]
    results = []
    for kind in args.kinds:
        for L, nc in configs:
            if kind in ("FCTP", "UVU", "FCTP-c") and L > e3nn_max_L:
                continue
            r = bench_one(kind, L, nc, dtype, args)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if not k.startswith("load_")}), flush=True)
            with open(stem + ".json", "w") as f:
                json.dump({"env": env, "results": results}, f, indent=1)
    env["end"] = machine_state()
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "results": results}, f, indent=1)
    print_table(results)
    print()
    print("\n".join(check_goals(results) + check_goals(results, "fwd_bwd_cpu_ms")))
    plot(results, stem + ".png")
    print("wrote", stem + ".json", stem + ".png")


if __name__ == "__main__":
    main()
