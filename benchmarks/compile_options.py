"""Which inductor options for ``SINet.enable_compile``: one energy + forces call, eager or compiled.

    python benchmarks/compile_options.py L SYSTEM OPTION [DTYPE]

L: lmax; SYSTEM: ``ethanol`` or ``cu<n>`` (fcc Cu repeated n times, rattled 0.05 Å);
OPTION: ``eager``, ``default`` (``enable_compile``'s options: inductor's defaults, generated
kernels on every thread), ``simd0`` (inductor ``cpp.simdlen=0``: multi-threaded kernels
without SIMD) or ``thr1`` (``cpp.threads=1``: single-threaded generated kernels, the default
of ``enable_compile`` before the custom neighbour-sum operators). Model: 64 channels, 2 layers, cutoff 5 Å, random weights (seed 0);
2 torch threads. Before each timed call the atoms move by N(0, 0.005 Å); median of 30
calls (8 from 500 atoms) after 3 untimed ones; prints one JSON line. The first call
(which compiles) is reported as ``first_s``. Run it with the jemalloc settings of
benchmarks/README.md, on an idle machine.
"""

import time
import sys
import json
import torch
import numpy as np

torch.set_num_threads(2)
from ase.build import molecule, bulk
from sinet_ase import SINet, SINetCalculator

L = int(sys.argv[1])
system = sys.argv[2]
opt = sys.argv[3]
dtype = sys.argv[4] if len(sys.argv) > 4 else "float32"
if system == "ethanol":
    atoms = molecule("CH3CH2OH")
    el = ["H", "C", "N", "O"]
else:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(int(system[2:]))
    el = ["Cu"]
    atoms.rattle(0.05, seed=1)
torch.manual_seed(0)
model = SINet(el, lmax=L, channels=64, num_layers=2, cutoff=5.0)
calc = SINetCalculator(model, dtype=dtype)
if opt != "eager":
    options = {"simd0": {"cpp.simdlen": 0, "cpp.threads": -1}, "thr1": {"cpp.threads": 1}, "default": {}}[opt]
    calc.model.enable_compile(options=options)
a = atoms.copy()
a.calc = calc
t = time.perf_counter()
a.get_forces()
first = time.perf_counter() - t
rng = np.random.default_rng(0)


def step():
    a.positions += rng.normal(scale=0.005, size=a.positions.shape)
    a.get_forces()


for _ in range(3):
    step()
n = 30 if len(a) < 500 else 8
ts = []
for k in range(n):
    t = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t)
print(
    json.dumps(
        dict(
            L=L,
            system=system,
            atoms=len(a),
            opt=opt,
            dtype=dtype,
            first_s=round(first, 1),
            median_ms=round(1e3 * sorted(ts)[n // 2], 2),
        )
    ),
    flush=True,
)
