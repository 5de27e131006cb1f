"""Score a MACE model file on a test set with MACECalculator (run with $PEERS_WORK/mace/bin/python)."""

import argparse
import json
import os
import sys
import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))
from eval_common import score
from mace.calculators import MACECalculator

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("test")
p.add_argument("out_json")
p.add_argument("--extra", default=None, help="JSON file with run info to merge in")
p.add_argument("--limit", type=int, default=None)
a = p.parse_args()
calc = MACECalculator(model_paths=a.model, device="cpu", default_dtype="float64")
extra = json.load(open(a.extra)) if a.extra and os.path.exists(a.extra) else {}
extra.update({"model": "MACE", "model_file": a.model})
score(calc, a.test, a.out_json, extra, a.limit)
