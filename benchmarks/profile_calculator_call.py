"""Where the time of one ``SINetCalculator`` call on a small molecule goes.

Run (from the repository root, in the project venv; one thread, as the lead's MD timing of
small molecules)::

    python benchmarks/profile_calculator_call.py --json benchmarks/results/calculator_call_profile.json
    python benchmarks/profile_calculator_call.py --modes compiled --dtypes float64 --cprofile 25
    python benchmarks/profile_calculator_call.py --code-root /work/main --json before.json   # another checkout
    python benchmarks/profile_calculator_call.py --compare before*.json --vs after*.json      # table of both

Each configuration (shipped potential x molecule x dtype x eager / compiled) runs an MD-like
loop: the positions move by about 0.001 Å before each step, and a step is what ASE's
``VelocityVerlet`` asks of the calculator, ``atoms.get_forces()`` (one calculation) and then
``atoms.get_potential_energy()`` (a cached result). ``--rounds`` rounds of ``--steps`` steps
plain (the per-step total) and ``--steps`` steps with the stages timed, in turn, so that
changes of machine load hit both alike. Stages (``time.perf_counter`` around the functions
that run them, installed for the timed steps only; they cost about a microsecond each):

==================  =====================================================================
stage               what runs
==================  =====================================================================
check_state         ``SINetCalculator.check_state`` (ASE's "what changed", both properties)
ase_calculate       ``ase.calculators.calculator.Calculator.calculate`` (copies the atoms)
memory_checks       ``check_periodic_memory`` and ``check_memory`` of the calculator
validate            ``sinet_ase.graph.validate_atoms``
neighbour_list      the graph module's neighbour list (``neighbour_list``)
graph_tensors       the rest of ``atoms_to_graph``: distance check, torch tensors, ``Data``
model_other         ``SINet.forward`` less network and autograd: edge vectors, species,
                    energy sum, dtype casts
network             the network: eager forward, or the compiled graph, which holds forward
                    *and* backward of the network
autograd            ``torch.autograd.grad`` in ``SINet.forward``: the whole backward when
                    eager, the edge vectors' backward (and the compiled gradient) when compiled
domain_check        ``SINetCalculator._check_domain`` (training-domain screen)
calc_other          the rest of ``SINetCalculator.calculate``: ``graph.to``, ``.item()``,
                    results to numpy
ase_get_property    the rest of the step: ASE's ``get_property`` bookkeeping, result copies
==================  =====================================================================

The table gives the median over rounds of the mean per step, in microseconds, and each
stage's share of the instrumented step. ``--cprofile N`` adds the top N functions of a
cProfile of one round per configuration (cumulative time; cProfile slows Python by ~2x).

On a loaded machine absolute times are inflated; the shares within one step are still
informative. Compare two checkouts with ``--code-root`` runs alternating in time and
``--compare``.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

STAGES = [
    "check_state",
    "ase_calculate",
    "memory_checks",
    "validate",
    "neighbour_list",
    "graph_tensors",
    "model_other",
    "network",
    "autograd",
    "domain_check",
    "calc_other",
    "ase_get_property",
]


class Timer:
    """Accumulated seconds per stage; ``wrap`` times a function's calls into a stage."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.seconds = {}
        self.depth = 0  # > 0 inside SINet.forward: only its autograd.grad counts as "autograd"

    def add(self, stage, dt):
        self.seconds[stage] = self.seconds.get(stage, 0.0) + dt

    def wrap(self, stage, fn, only_in_model=False):
        clock = self.clock

        def timed(*args, **kwargs):
            if only_in_model and self.depth != 1:
                return fn(*args, **kwargs)
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, clock() - t)

        timed.__wrapped__ = fn
        return timed


@contextlib.contextmanager
def instrumented(timer, compiled):
    """Install the stage timers (module docstring), and remove them on exit. ``compiled``: the
    network is timed at the fast path's entry and ``SINet.network_energies`` is left alone
    (the compiled graph traced it; a changed attribute could cost a recompilation)."""
    import ase.calculators.calculator as ase_calculator
    import torch

    import sinet_ase.calculator as calculator
    import sinet_ase.graph as graph
    import sinet_ase.model as model
    from sinet_ase import fastpath

    patches = []

    def patch(owner, name, stage, **kw):
        if hasattr(owner, name) and name in vars(owner):
            original = vars(owner)[name]
            patches.append((owner, name, original))
            setattr(owner, name, timer.wrap(stage, getattr(owner, name), **kw))

    for name in ("check_periodic_memory", "check_memory"):
        patch(calculator, name, "memory_checks")
    patch(calculator, "atoms_to_graph", "atoms_to_graph")
    patch(graph, "validate_atoms", "validate")
    for name in ("neighbour_list", "small_neighbour_list"):
        patch(graph, name, "neighbour_list")
    patch(calculator.SINetCalculator, "check_state", "check_state")
    patch(calculator.SINetCalculator, "_check_domain", "domain_check")
    patch(calculator.SINetCalculator, "calculate", "calculate")
    patch(ase_calculator.Calculator, "calculate", "ase_calculate")
    if compiled:
        patch(fastpath.CompiledNetwork, "__call__", "network", only_in_model=True)
    else:
        patch(model.SINet, "network_energies", "network", only_in_model=True)
    patch(torch.autograd, "grad", "autograd", only_in_model=True)
    forward = model.SINet.forward

    def timed_forward(self, *args, **kwargs):
        timer.depth += 1
        t = timer.clock()
        try:
            return forward(self, *args, **kwargs)
        finally:
            timer.add("model", timer.clock() - t)
            timer.depth -= 1

    patches.append((model.SINet, "forward", forward))
    model.SINet.forward = timed_forward
    try:
        yield
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


def stage_breakdown(seconds, steps):
    """Stage -> microseconds per step, from the accumulated seconds of the timers."""
    s = {k: v / steps * 1e6 for k, v in seconds.items()}
    get = lambda k: s.get(k, 0.0)  # noqa: E731
    out = {
        "check_state": get("check_state"),
        "ase_calculate": get("ase_calculate"),
        "memory_checks": get("memory_checks"),
        "validate": get("validate"),
        "neighbour_list": get("neighbour_list"),
        "graph_tensors": get("atoms_to_graph") - get("validate") - get("neighbour_list"),
        "model_other": get("model") - get("network") - get("autograd"),
        "network": get("network"),
        "autograd": get("autograd"),
        "domain_check": get("domain_check"),
    }
    out["calc_other"] = (
        get("calculate")
        - sum(out[k] for k in ("ase_calculate", "memory_checks", "domain_check"))
        - get("atoms_to_graph")
        - get("model")
    )
    out["ase_get_property"] = get("step") - get("calculate") - get("check_state")
    out["step"] = get("step")
    return out


def molecule(name):
    from sinet_ase.pretrained import shipped_structure

    atoms = shipped_structure(name)
    atoms.pbc = False
    return atoms


def run_config(potential, mol, dtype, mode, rounds, steps, warmup, cprofile_rows, clock=time.perf_counter):
    import numpy as np

    from sinet_ase import SINetCalculator

    atoms = molecule(mol)
    calc = SINetCalculator.from_pretrained(potential, dtype=dtype, compile=(mode == "compiled"))
    atoms.calc = calc
    rng = np.random.default_rng(0)
    start = atoms.positions.copy()

    def step():
        atoms.positions = start + 1e-3 * rng.standard_normal(start.shape)  # untimed
        t = clock()
        atoms.get_forces()
        atoms.get_potential_energy()
        return clock() - t

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    plain, stages = [], []
    for _ in range(rounds):
        plain.append(sum(step() for _ in range(steps)) / steps * 1e6)
        timer = Timer(clock)
        with instrumented(timer, mode == "compiled"):
            timer.add("step", sum(step() for _ in range(steps)))
        stages.append(stage_breakdown(timer.seconds, steps))
    result = {
        "potential": potential,
        "molecule": mol,
        "atoms": len(atoms),
        "edges": int(_edges(atoms, calc)),
        "dtype": dtype,
        "mode": mode,
        "first_call_s": round(first, 2),
        "step_us_plain": statistics.median(plain),
        "step_us_plain_rounds": [round(x, 1) for x in plain],
        "stages_us": {k: statistics.median(r[k] for r in stages) for k in STAGES + ["step"]},
    }
    if cprofile_rows:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(steps):
            step()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(cprofile_rows)
        result["cprofile"] = text.getvalue()
    return result


def _edges(atoms, calc):
    from sinet_ase.graph import atoms_to_graph

    return atoms_to_graph(atoms, calc.model.cutoff).edge_index.shape[1]


def print_table(results, label=""):
    if label:
        print(f"\n{label}")
    head = "| stage | " + " | ".join(f"{r['molecule']} {r['dtype'][-2:]} {r['mode']}" for r in results) + " |"
    print(head)
    print("|---" * (len(results) + 1) + "|")
    for stage in STAGES + ["step"]:
        cells = []
        for r in results:
            us = r["stages_us"][stage]
            share = us / r["stages_us"]["step"] * 100
            cells.append(f"{us:.0f} ({share:.0f}%)" if stage != "step" else f"**{us:.0f}**")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("| step, plain | " + " | ".join(f"**{r['step_us_plain']:.0f}**" for r in results) + " |")


def _key(r):
    return (r["potential"], r["molecule"], r["dtype"], r["mode"])


def compare(before_files, after_files):
    """Median over files of each stage, before and after, per configuration."""

    def load(files):
        runs = {}
        for path in files:
            with open(path) as f:
                for r in json.load(f)["results"]:
                    runs.setdefault(_key(r), []).append(r)
        return runs

    before, after = load(before_files), load(after_files)
    for key in before:
        if key not in after:
            continue
        b, a = before[key], after[key]
        print(f"\n{' '.join(key)} ({b[0]['atoms']} atoms), microseconds per step, median of {len(b)} / {len(a)} runs")
        print("| stage | before | after | after - before |")
        print("|---|---|---|---|")
        for stage in STAGES + ["step"]:
            x = statistics.median(r["stages_us"][stage] for r in b)
            y = statistics.median(r["stages_us"][stage] for r in a)
            print(f"| {stage} | {x:.0f} | {y:.0f} | {y - x:+.0f} |")
        x = statistics.median(r["step_us_plain"] for r in b)
        y = statistics.median(r["step_us_plain"] for r in a)
        print(f"| step, uninstrumented | {x:.0f} | {y:.0f} | {y - x:+.0f} ({(y - x) / x * 100:+.0f} %) |")


def write_json(path, payload):
    tmp = f"{path}.{os.getpid()}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--potentials", nargs="*", default=["sinet-xtb-md17"], help="e.g. add sinet-rmd17-ethanol")
    ap.add_argument("--molecules", nargs="*", default=["ethanol", "aspirin"])
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    ap.add_argument("--modes", nargs="*", default=["eager", "compiled"], choices=["eager", "compiled"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=100, help="steps per round and kind")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: time.perf_counter (the real cost, idle machine); cpu: this thread's CPU time "
        "(time.thread_time), less sensitive to other processes on a loaded machine",
    )
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="top N functions of a cProfile")
    ap.add_argument("--code-root", default=os.path.dirname(HERE), help="checkout whose sinet_ase is profiled")
    ap.add_argument("--json", help="write the results here (atomic write)")
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="only compare these runs ...")
    ap.add_argument("--vs", nargs="+", metavar="JSON", help="... with these")
    args = ap.parse_args()
    if args.compare:
        compare(args.compare, args.vs or [])
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, os.path.abspath(args.code_root))
    import torch

    import sinet_ase

    sys.path.insert(0, HERE)
    from bench_md import ForeignLoad, machine_state

    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    state = machine_state()
    print("sinet_ase from", os.path.dirname(sinet_ase.__file__), "load", state["loadavg"], flush=True)
    results = []
    with ForeignLoad() as load:
        for potential in args.potentials:
            for mol in args.molecules:
                for dtype in args.dtypes:
                    for mode in args.modes:
                        r = run_config(
                            potential, mol, dtype, mode, args.rounds, args.steps, args.warmup, args.cprofile, clock
                        )
                        results.append(r)
                        print(
                            f"{potential} {mol} {dtype} {mode}: {r['step_us_plain']:.0f} us per step "
                            f"(first call {r['first_call_s']} s)",
                            flush=True,
                        )
                        if r.get("cprofile"):
                            print(r["cprofile"])
                        if args.json:  # after every configuration: a killed run keeps what it measured
                            write_json(args.json, payload(args, state, load, results))
    for potential in args.potentials:
        print_table([r for r in results if r["potential"] == potential], f"{potential}, microseconds per step")
    print(f"\nforeign load during the run: {load.cores:.2f} cores; threads {args.threads}; clock {args.clock}")
    if args.json:
        write_json(args.json, payload(args, state, load, results))


def payload(args, state, load, results):
    import torch
    from bench_md import git_commit  # on sys.path since main()

    import sinet_ase

    return {
        "machine": state,
        "foreign_load_cores": round(getattr(load, "cores", float("nan")), 2),
        "threads": args.threads,
        "clock": args.clock,
        "allocator": os.environ.get("LD_PRELOAD", "") or "glibc",
        "code": os.path.dirname(sinet_ase.__file__),
        "commit": git_commit(args.code_root),
        "torch": torch.__version__,
        "results": results,
    }


if __name__ == "__main__":
    main()
