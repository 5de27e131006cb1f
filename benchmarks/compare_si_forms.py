"""Which edge layout of Scalar Interaction is fastest? One op, forward + backward, A/B in one process.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
    MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true" \
        python benchmarks/compare_si_forms.py [--threads 2] [--Ls 1 2 3 4 5 6] [--reps 6]

The setting of ``bench_ops.py``'s ``SI`` kind (4,096 edges, 64 channels, no receiver,
coefficient MLP hidden 64), timed for three forms of the same operation, interleaved
repeat by repeat so that a change in machine load hits all three alike:

* ``ecm``: the per-edge reference on ``(E, c, M)`` edges
  (``sinet_ase.testing.scalar_interaction_messages``);
* ``cl_former``: an older channels-last form, rebuilt here (``<h, Y>`` as a full-size
  product then a degree sum, ``alpha h + beta Y`` by broadcasting both coefficients to
  ``(E, M, c)``);
* ``cl``: the per-edge channels-last form
  (``sinet_ase.testing.scalar_interaction_messages_channels_last``), the edge layout of
  the layers (which run it regrouped per node, ``ScalarInteraction``).

Prints the median ms per call of each form for every L (the three agree to float32
rounding, checked before timing).
"""

import argparse
import time

import torch
from e3nn import o3

from sinet_ase.ops import ScalarInteraction, SphericalLayout
from sinet_ase.testing import scalar_interaction_messages, scalar_interaction_messages_channels_last

EDGES, CHANNELS, HIDDEN = 4096, 64, 64


def former_channels_last(op, h_src, Y):
    """The older channels-last form (no receiver, no edge scalars)."""
    layout, L, E = op.layout, op.layout.lmax, h_src.shape[0]
    q = layout.degree_sum_channels_last(h_src * Y.unsqueeze(-1))
    coeff = op.coefficients(torch.cat([q.transpose(1, 2).reshape(E, -1), h_src[:, 0, :]], -1))
    coeff = layout.per_degree_channels_last(coeff.view(-1, 2, CHANNELS, L + 1).transpose(2, 3))
    alpha, beta = coeff.unbind(1)
    return torch.addcmul(beta * Y.unsqueeze(-1), alpha, h_src)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--Ls", nargs="*", type=int, default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--reps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"ms per fwd+bwd call, median of {args.reps}, {args.threads} threads")
    for L in args.Ls:
        layout = SphericalLayout(L, CHANNELS)
        op = ScalarInteraction(layout, 0, with_receiver=False, hidden=HIDDEN)
        Y = o3.spherical_harmonics(
            layout.sh_irreps, torch.randn(EDGES, 3), normalize=True, normalization="component"
        ).requires_grad_(True)
        M = layout.num_m
        h = torch.randn(EDGES, CHANNELS, M, requires_grad=True)
        h_cl = torch.randn(EDGES, M, CHANNELS, requires_grad=True)
        g, g_cl = torch.randn(EDGES, CHANNELS, M), torch.randn(EDGES, M, CHANNELS)
        wrt = [Y] + list(op.parameters())
        forms = {
            "ecm": lambda: torch.autograd.grad(scalar_interaction_messages(op, h, Y), [h] + wrt, g),
            "cl_former": lambda: torch.autograd.grad(former_channels_last(op, h_cl, Y), [h_cl] + wrt, g_cl),
            "cl": lambda: torch.autograd.grad(
                scalar_interaction_messages_channels_last(op, h_cl, Y), [h_cl] + wrt, g_cl
            ),
        }
        with torch.no_grad():
            cl = scalar_interaction_messages_channels_last(op, h_cl, Y)
            diff = (former_channels_last(op, h_cl, Y) - cl).abs().max()
            same = (scalar_interaction_messages(op, h_cl.transpose(1, 2), Y).transpose(1, 2) - cl).abs().max()
        assert diff < 1e-4 and same < 1e-4, (diff, same)
        times = {name: [] for name in forms}
        for fn in forms.values():
            fn()  # warm-up
        for _ in range(args.reps):
            for name, fn in forms.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        print(
            f"L = {L}: " + "  ".join(f"{name} {1e3 * sorted(v)[len(v) // 2]:7.1f}" for name, v in times.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
