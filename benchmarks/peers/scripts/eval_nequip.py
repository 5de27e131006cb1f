"""Score a NequIP model on a test set with NequIPCalculator (run with $PEERS_WORK/nequip/bin/python).
MODEL: a packaged model (.nequip.zip, from nequip-package) or checkpoint (.ckpt), loaded in eager mode, or a
compiled model (.nequip.pt2 / .nequip.pth) loaded with from_compiled_model."""

import argparse
import json
import os
import sys
import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))
from eval_common import score
from nequip.integrations.ase import NequIPCalculator

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("test")
p.add_argument("out_json")
p.add_argument("--extra", default=None)
p.add_argument("--limit", type=int, default=None)
a = p.parse_args()
if a.model.endswith((".pt2", ".pth")):
    calc = NequIPCalculator.from_compiled_model(
        compile_path=a.model, device="cpu", chemical_species_to_atom_type_map=True
    )
else:
    # documented loader for packaged models / checkpoints (eager mode; torchscript compile is refused on torch>=2.10)
    calc = NequIPCalculator._from_saved_model(a.model, device="cpu", chemical_species_to_atom_type_map=True)
extra = json.load(open(a.extra)) if a.extra and os.path.exists(a.extra) else {}
extra.update({"model": "NequIP", "model_file": a.model})
score(calc, a.test, a.out_json, extra, a.limit)
