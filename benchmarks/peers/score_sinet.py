"""Score a SINet model file on a test set with the peers' scoring code (scripts/eval_common.py), so that
SINet, MACE and NequIP are scored by identical code and write the same JSON keys.
Run in the project venv from the repository root, e.g.

    python benchmarks/peers/score_sinet.py runs/x/best_model.pt ../shared/data/rmd17_ethanol/test_MD.xyz out.json

One thread and float64, as for the peers (eval_mace.py, eval_nequip.py).
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts"))
from eval_common import score  # noqa: E402
from sinet_ase import SINetCalculator  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("model", help="SINet model file (best_model.pt)")
p.add_argument("test", help="extxyz test file with energy= / forces labels")
p.add_argument("out_json")
p.add_argument("--extra", default=None, help="JSON file with run info to merge in")
p.add_argument("--limit", type=int, default=None, help="score only the first N test frames")
a = p.parse_args()
torch.set_num_threads(1)
calc = SINetCalculator(a.model, device="cpu", dtype="float64")
extra = json.load(open(a.extra)) if a.extra and os.path.exists(a.extra) else {}
extra.update({"model": "SINet", "model_file": a.model})
score(calc, a.test, a.out_json, extra, a.limit)
