"""Roll a trained N-body model out for K intervals and compare with the simulator.

    python examples/nbody_rollout.py CHECKPOINT [--data test.npz] [--K 10] [--system 0]
        [--num-systems 200] [--velocity finite_difference] [--out nbody_rollout.png]

CHECKPOINT is a model file (``training/nbody_results/best.pt``) or a training
checkpoint.  Starting states are the first ``--num-systems`` systems of
``--data`` (an ``.npz`` with ``x, v, q``, e.g. the test split written by
``python -m sinet_ase.nbody.generate --out DIR``); without ``--data`` fresh
states are simulated to frame 30 with the benchmark protocol (seed
``--seed``).  Each model step covers 1,000 integrator steps (1.0 time unit);
the velocity for the next step is estimated from the model's own positions
(``--velocity``, see :mod:`sinet_ase.nbody.rollout`).  The ground truth is the
simulator continued from the same states.

Writes one PNG: left, the 3-D trajectories of one system (solid: simulator,
dashed with markers: model); right, the position MSE after each interval,
averaged over the systems (log scale), with the constant-velocity baseline.
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, help=".npz with x, v, q (default: simulate fresh states)")
    p.add_argument("--K", type=int, default=10, help="number of 1,000-step intervals")
    p.add_argument("--system", type=int, default=0, help="which system to draw in 3-D")
    p.add_argument("--num-systems", type=int, default=200, help="systems averaged in the error curve")
    p.add_argument(
        "--velocity", default="finite_difference", choices=["finite_difference", "bdf2", "constant_acceleration"]
    )
    p.add_argument("--seed", type=int, default=123, help="seed of fresh states (without --data)")
    p.add_argument("--out", default="nbody_rollout.png")
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinet_ase.nbody.model import load_nbody_model
    from sinet_ase.nbody.rollout import INTERVAL, ground_truth, rollout, rollout_mse

    model = load_nbody_model(a.checkpoint)
    if a.data:
        from sinet_ase.nbody.dataset import load_npz_split

        split = load_npz_split(a.data)
    else:
        from sinet_ase.nbody.dataset import make_split

        split = make_split(a.num_systems, np.random.default_rng(a.seed))
    n = min(a.num_systems, split["x"].shape[0])
    x, v, q = split["x"][:n], split["v"][:n], split["q"][:n]

    pred = rollout(model, x, v, q, a.K, velocity=a.velocity)
    truth = ground_truth(x, v, q, a.K)
    mse = rollout_mse(pred["x"], truth["x"])
    # constant-velocity baseline with the true initial velocity
    steps = INTERVAL * np.arange(1, a.K + 1)[None, :, None, None]
    mse_cv = rollout_mse(x[:, None] + v[:, None] * steps, truth["x"])

    print(f"rollout of {n} systems, K = {a.K}, velocity = {a.velocity}")
    print(" k   model MSE    x + v t MSE")
    for k in range(a.K):
        print(f"{k + 1:2d}  {mse[k]:10.5f}  {mse_cv[k]:12.5f}")

    s = a.system
    fig = plt.figure(figsize=(12, 5.5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    colours = plt.cm.tab10(np.arange(x.shape[1]))
    for i in range(x.shape[1]):
        t_path = np.concatenate([x[s, i][None], truth["x"][s, :, i]])
        p_path = np.concatenate([x[s, i][None], pred["x"][s, :, i]])
        sign = "+" if q[s, i] > 0 else "-"
        ax.plot(*t_path.T, "-", color=colours[i], label=f"particle {i} ({sign}) simulator")
        ax.plot(*p_path.T, "--o", color=colours[i], markersize=3, alpha=0.8)
        ax.scatter(*x[s, i], color=colours[i], s=40, marker="*")
    ax.set_title(f"system {s}: simulator (solid) vs model (dashed), {a.K} x 1000 steps")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.legend(fontsize=7, loc="upper left")

    ax2 = fig.add_subplot(1, 2, 2)
    k = np.arange(1, a.K + 1)
    ax2.semilogy(k, mse, "o-", label=f"SINet rollout ({a.velocity} velocities)")
    ax2.semilogy(k, mse_cv, "s--", label="x + v t (true initial v)")
    ax2.set_xlabel("interval k (1,000 steps = 1.0 time unit each)")
    ax2.set_ylabel(f"position MSE over {n} systems")
    ax2.set_title("error growth")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"figure written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
