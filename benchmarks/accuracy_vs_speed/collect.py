"""Join test errors and MD timings into the points of the accuracy-against-speed figure.

    python benchmarks/accuracy_vs_speed/collect.py --md-json benchmarks/results/md_sinet_dft_ethanol.json \\
        --sinet runs/sbs/sinet-l1-c32 runs/sbs/sinet-l2-c32 ... \\
        --peer mace=/tmp/sinet-peers/sbs/mace_ethanol:mace-l1 \\
        --peer nequip=/tmp/sinet-peers/sbs/nequip_ethanol:nequip-t3l1c32 \\
        --dtype float64 --out docs/results/ethanol_accuracy_speed.json

Every run folder holds ``test_results.json`` written by ``benchmarks/peers/score_sinet.py`` (SINet)
or by the peer runner (``benchmarks/peers/run_peer.sh``): the same scoring code for all. A SINet
point takes the MD time of its own model file (``file-RUN/best_model.pt`` in the bench_md
records, eager); a peer point the time of the bench_md model spec of its trained size.
Then ``plot.py`` beside it draws the JSON.
"""

import argparse
import json
from pathlib import Path


#: readable sizes of the bench_md peer specs
PEER_LABELS = {
    "mace-l1": "64x0e+64x1o",
    "mace-l2": "64x0e+64x1o+64x2e",
    "mace-paper": "256x0e+256x1o+256x2e",
    "nequip-t3l1c32": "3 layers, l=1, 32 ch",
}


def md_times(records, dtype):
    """``{model spec: ms per step}`` of the successful bench_md records in ``dtype``."""
    return {r["model"]: r["median_ms"] for r in records if "error" not in r and r["dtype"] == dtype}


def point(family, label, run_dir: Path, ms_per_step, dtype):
    scores = json.loads((run_dir / "test_results.json").read_text())
    return {
        "family": family,
        "label": label,
        "run": str(run_dir),
        "dtype": dtype,
        "ms_per_step": ms_per_step,
        "f_mae_mev_a": scores["forces_mae_meV_per_A"],
        "f_rmse_mev_a": scores["forces_rmse_meV_per_A"],
        "e_mae_mev": scores["energy_mae_meV_per_molecule"],
        "train_cpu_s": scores.get("train_loop_cpu_s", scores.get("train_cpu_seconds")),
    }


def sinet_label(run_dir: Path):
    config = json.loads((run_dir / "config.json").read_text())["model"]
    return f"L={config['lmax']}, {config['channels']} ch"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--md-json", required=True)
    parser.add_argument("--sinet", nargs="*", default=[], help="SINet run folders")
    parser.add_argument(
        "--peer", action="append", default=[], help="FAMILY=RUN_DIR:BENCH_MD_SPEC, e.g. mace=/tmp/x:mace-l1"
    )
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    times = md_times(json.loads(Path(args.md_json).read_text())["results"], args.dtype)
    points = []
    for run in map(Path, args.sinet):
        spec = f"file-{run}/best_model.pt"
        points.append(point("SINet", sinet_label(run), run, times[spec], args.dtype))
    for item in args.peer:
        family, rest = item.split("=", 1)
        run, spec = rest.rsplit(":", 1)
        points.append(
            point(
                {"mace": "MACE", "nequip": "NequIP"}[family],
                PEER_LABELS.get(spec, spec),
                Path(run),
                times[spec],
                args.dtype,
            )
        )
    Path(args.out).write_text(json.dumps(points, indent=1))
    for p in points:
        print(
            f"{p['family']:7s} {p['label']:14s} F MAE {p['f_mae_mev_a']:6.2f} meV/Å  "
            f"E MAE {p['e_mae_mev']:7.2f} meV  {p['ms_per_step']:7.2f} ms/step"
        )


if __name__ == "__main__":
    main()
