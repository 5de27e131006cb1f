"""Write the shared train/valid splits as verbatim copies of the source extxyz frames.
usage: make_splits.py SHARED_DATA OUT_DIR

Validation indices: sorted(numpy.random.default_rng(0).permutation(N)[:50]), the same frames SINet
validates on (sinet_ase.potential.data.split_indices with seed 0 and 50 validation structures).
Frames are copied byte-for-byte (no ASE round trip), so keys stay `energy=` / `forces`.
"""

import json
import os
import sys
import numpy as np


def frames(path):
    lines = open(path).read().splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i].split()[0])
        out.append("".join(lines[i : i + n + 2]))
        i += n + 2
    return out


def split(src, n_expected, train_out, valid_out):
    fr = frames(src)
    assert len(fr) == n_expected, (src, len(fr))
    valid = sorted(int(i) for i in np.random.default_rng(0).permutation(n_expected)[:50])
    vset = set(valid)
    with open(train_out, "w") as f:
        f.writelines(fr[i] for i in range(n_expected) if i not in vset)
    with open(valid_out, "w") as f:
        f.writelines(fr[i] for i in valid)
    return valid


D, O = sys.argv[1:3]
os.makedirs(O, exist_ok=True)
jobs = {
    "ethanol": ("rmd17_ethanol/train.xyz", 1000, "ethanol_train950.xyz", "ethanol_valid50.xyz"),
    "acac": ("acac/train_300K.xyz", 500, "acac_train450.xyz", "acac_valid50.xyz"),
}
idx = {
    k: {"source": src, "valid_indices_0based": split(os.path.join(D, src), n, os.path.join(O, tr), os.path.join(O, va))}
    for k, (src, n, tr, va) in jobs.items()
}
json.dump(idx, open(os.path.join(O, "split_indices.json"), "w"), indent=1)
print({k: v["valid_indices_0based"][:10] for k, v in idx.items()})
