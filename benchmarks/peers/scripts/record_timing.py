"""Keep the epoch time measured by a run: TIMING_DIR/<peer>_<mol>.json (mace_train.sh uses it to place
MACE's stage two at 3/4 of the epochs the budget allows). usage: record_timing.py PEER MOL OUTDIR TIMING_DIR"""

import json
import os
import sys
import time

peer, mol, out, tdir = sys.argv[1:5]
r = json.load(open(os.path.join(out, "run_info.json")))
if not r.get("n_full_epochs"):
    sys.exit(0)
load = os.getloadavg()
d = {
    "peer": peer,
    "molecule": mol,
    "sec_per_epoch": r["sec_per_epoch"],
    "cpu_sec_per_epoch": r["cpu_sec_per_epoch"],
    "n_full_epochs": r["n_full_epochs"],
    "run": out,
    "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "loadavg_1_5_15_at_end": load,
    "nproc": os.cpu_count(),
}
os.makedirs(tdir, exist_ok=True)
path = os.path.join(tdir, f"{peer}_{mol}.json")
json.dump(d, open(path, "w"), indent=1)
print(
    f"[timing] {peer} {mol}: {d['cpu_sec_per_epoch']:.1f} CPU s/epoch, {d['sec_per_epoch']:.1f} wall s/epoch -> {path}"
)
