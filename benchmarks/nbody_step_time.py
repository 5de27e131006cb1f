"""CPU time of one N-body training step (forward + backward of a random batch of 100
five-particle systems), one thread, median of 15 steps after 3 warm-up steps.

    PYTHONPATH=. python benchmarks/nbody_step_time.py

Run it in two checkouts (``PYTHONPATH=<tree>``) to compare two versions of the network.
"""

import time

import torch

from sinet_ase.nbody.model import NBodySINet

torch.set_num_threads(1)
torch.manual_seed(0)
for cfg in (dict(lmax=1, channels=64, num_layers=4), dict(lmax=3, channels=64, num_layers=4)):
    model = NBodySINet(**cfg)
    B = 100
    x, v = torch.randn(B, 5, 3) * 2, torch.randn(B, 5, 3)
    q = torch.where(torch.rand(B, 5) < 0.5, -1.0, 1.0)

    def step():
        model.zero_grad()
        model(x, v, q).pow(2).sum().backward()

    for _ in range(3):
        step()
    ts = []
    for _ in range(15):
        t = time.process_time()
        step()
        ts.append(time.process_time() - t)
    ts.sort()
    print(cfg, f"median CPU ms per step (B=100): {1e3 * ts[len(ts) // 2]:.1f}")
