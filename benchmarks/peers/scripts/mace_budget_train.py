"""mace_run_train with a training budget in CPU or wall-clock seconds (MACE 0.3.x has no max_time option).

usage: python mace_budget_train.py BUDGET_SECONDS TIMING_JSON -- <mace_run_train arguments>
env PEER_BUDGET_CLOCK=cpu (default: CPU time of this process, time.process_time(), so that runs on a
loaded machine get the same compute) or wall (wall-clock seconds).

The budget clock starts when MACE's training loop starts (after data loading and statistics),
like Lightning's `max_time` for NequIP. When the budget is used up, the current optimizer step
finishes, the rest of that epoch is skipped, MACE runs its usual validation/checkpoint for that
epoch, and the loop ends. MACE then does its normal end of run: it reloads the best (lowest
validation loss, EMA weights) checkpoint of stage one and of stage two (SWA) and saves
`<name>.model` / `<name>_stagetwo.model`. Per-epoch wall times are written to TIMING_JSON.
Nothing else in MACE is changed.
"""

import json
import os
import sys
import time

import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

budget_s = float(sys.argv[1])
timing_path = sys.argv[2]
assert sys.argv[3] == "--"
sys.argv = ["mace_run_train"] + sys.argv[4:]

import mace.tools
import mace.tools.train  # noqa: F401  (the submodule; mace.tools.train is shadowed by the function)

trainmod = sys.modules["mace.tools.train"]


class _Stop(Exception):
    pass


CLOCK = os.environ.get("PEER_BUDGET_CLOCK", "cpu")
assert CLOCK in ("cpu", "wall"), CLOCK
clock = time.process_time if CLOCK == "cpu" else time.time
state = {"t0": None, "c0": None, "deadline": None, "hit": False, "epochs": [], "valid": []}


def dump():
    d = {
        "budget_s": budget_s,
        "budget_clock": CLOCK,
        "train_loop_wall_s": (time.time() - state["t0"]) if state["t0"] else None,
        "train_loop_cpu_s": (time.process_time() - state["c0"]) if state["c0"] else None,
        "budget_hit": state["hit"],
        "n_epochs_started": len(state["epochs"]),
        "epochs": state["epochs"],
    }
    full = [e["seconds"] for e in state["epochs"] if e["complete"]]
    fullc = [e["cpu_seconds"] for e in state["epochs"] if e["complete"]]
    d["n_full_epochs"] = len(full)
    d["cpu_sec_per_epoch_median_full"] = sorted(fullc)[len(fullc) // 2] if fullc else None
    d["sec_per_epoch_mean_full"] = sum(full) / len(full) if full else None
    d["sec_per_epoch_median_full"] = sorted(full)[len(full) // 2] if full else None
    with open(timing_path, "w") as f:
        json.dump(d, f, indent=1)


_orig_take_step = trainmod.take_step


def take_step(*a, **k):
    if clock() >= state["deadline"]:
        state["hit"] = True
        raise _Stop()
    return _orig_take_step(*a, **k)


_orig_one_epoch = trainmod.train_one_epoch


def train_one_epoch(*a, **k):
    if state["hit"]:
        raise _Stop()  # budget used up during the previous epoch: leave the loop
    t, c = time.time(), time.process_time()
    complete = True
    try:
        _orig_one_epoch(*a, **k)
    except _Stop:
        complete = False
    state["epochs"].append(
        {
            "epoch": k.get("epoch"),
            "seconds": time.time() - t,
            "cpu_seconds": time.process_time() - c,
            "complete": complete,
            "t_end_since_start": time.time() - state["t0"],
        }
    )
    dump()


_orig_train = mace.tools.train


def train(*a, **k):
    state["t0"], state["c0"] = time.time(), time.process_time()
    state["deadline"] = clock() + budget_s
    try:
        _orig_train(*a, **k)
    except _Stop:
        pass
    dump()
    print(
        f"[budget] training loop ended after {time.time() - state['t0']:.1f} s wall, "
        f"{time.process_time() - state['c0']:.1f} s CPU "
        f"({len(state['epochs'])} epochs started, budget {budget_s:.0f} s {CLOCK}, hit={state['hit']})",
        flush=True,
    )


trainmod.take_step = take_step
trainmod.train_one_epoch = train_one_epoch
mace.tools.train = train

from mace.cli.run_train import main


def _arg(name):
    for x in sys.argv:
        if x.startswith(f"--{name}="):
            return x.split("=", 1)[1]
    return None


try:
    main()
except Exception as e:  # noqa: BLE001
    # MACE's end of run loads a stage-two (SWA) checkpoint whenever --swa is given; if the budget ran out
    # before stage two began there is none and MACE raises after it has already saved the stage-one
    # model. That stage-one model is then the result of the run.
    start_swa = _arg("start_swa")
    last_epoch = max([ep["epoch"] for ep in state["epochs"]] or [-1])
    name, wd = _arg("name"), _arg("work_dir") or "."
    stage_one = os.path.join(wd, f"{name}.model")
    if start_swa is not None and last_epoch < int(start_swa) and os.path.exists(stage_one):
        print(
            f"[budget] stage two (from epoch {start_swa}) was not reached (last epoch {last_epoch}); "
            f"MACE failed to load a stage-two checkpoint ({type(e).__name__}); the result is the "
            f"stage-one model {stage_one}",
            flush=True,
        )
        sys.exit(0)
    raise
