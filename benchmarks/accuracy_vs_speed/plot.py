"""Force error against MD time per step: one point per model and size, as MLIP papers show.

    python benchmarks/accuracy_vs_speed/plot.py POINTS.json --out docs/results/ethanol_accuracy_speed.png

``POINTS.json`` is a list of records, one per trained model::

    {"family": "SINet" | "MACE" | "NequIP", "label": "L=2, 32 ch",
     "f_mae_mev_a": 5.1, "ms_per_step": 3.2, "dtype": "float64", ...}

(``benchmarks/accuracy_vs_speed/collect.py`` writes it from the training runs and the
``bench_md.py`` timings). Points of one family are joined by a line in order of speed.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

MARKERS = {"SINet": "o", "MACE": "s", "NequIP": "^"}


def plot(points, out: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for family in sorted({p["family"] for p in points}):
        rows = sorted((p for p in points if p["family"] == family), key=lambda p: p["ms_per_step"])
        x = [p["ms_per_step"] for p in rows]
        y = [p["f_mae_mev_a"] for p in rows]
        ax.plot(x, y, marker=MARKERS.get(family, "x"), label=family)
        for p in rows:
            ax.annotate(
                p["label"], (p["ms_per_step"], p["f_mae_mev_a"]), fontsize=7, textcoords="offset points", xytext=(4, 3)
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("MD time per step (ms, ASE velocity Verlet)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("points")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="rMD17 ethanol, equal CPU training time")
    args = parser.parse_args()
    plot(json.loads(Path(args.points).read_text()), Path(args.out), args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
