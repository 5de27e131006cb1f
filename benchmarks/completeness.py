"""Figure 3d: completeness r(l) = rank(H^l)/(2l+1) of the node features entering each SINet layer.

Run (from the repository root, in the project venv)::

    python benchmarks/completeness.py MODEL.pt --structures FILE [--index :] [--max-structures 200]
        [--tol 1e-5] [--dtype float64] [--out DIR]

``MODEL.pt`` is a sinet-ase model file (``sinet_ase.save_model``); ``FILE`` anything
``ase.io.read`` reads (extxyz, ``.xz`` compressed too, an ASE database, ...). All atoms
of all structures are pooled; per layer the script prints the mean and standard
deviation over atoms of r(l) for l = 0..L (layer 0 = the embedding output, layer
t = the input of Scalar Interaction layer t+1, layer T = the backbone output),
the same means at tolerances 1e-3 .. 1e-9 (the rank of nearly degenerate features
depends on it), and writes ``completeness_<model>.png`` (r(l) vs l, one line per
layer, error bars = std over atoms) and ``.json`` to ``--out``. The metric and its
tolerance are documented in ``sinet_ase/analysis.py``.

The model is evaluated in float64 by default (a copy; the file is not changed), so
round-off stays far below the tolerance.

Figure 3c (the same metric for a tensor-product model) needs node features of a
MACE / NequIP model with equal channels per degree: convert them to SINet's layout
with ``SphericalLayout.from_e3nn`` and call ``sinet_ase.analysis.rank_ratio``.
"""

import argparse
import io
import json
import lzma
import os

import numpy as np
import torch

from sinet_ase import atoms_to_graph, batch_graphs, load_model
from sinet_ase.analysis import DEFAULT_TOL, features_by_layer, rank_ratio

SENSITIVITY_TOLS = (1e-3, 1e-5, 1e-7, 1e-9)


def read_structures(path, index=":", max_structures=None):
    import ase.io

    if path.endswith(".xz"):  # decompress once: ase.io.read on a compressed file is quadratic in frames
        with lzma.open(path, "rt") as handle:
            text = handle.read()
        fmt = os.path.splitext(path[:-3])[1].lstrip(".") or None
        frames = ase.io.read(io.StringIO(text), index=index, format=fmt)
    else:
        frames = ase.io.read(path, index=index)
    if not isinstance(frames, list):
        frames = [frames]
    if max_structures is not None and len(frames) > max_structures:
        picks = np.linspace(0, len(frames) - 1, max_structures).round().astype(int)
        frames = [frames[i] for i in picks]
    return frames


def plot(result, lmax, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ls = np.arange(lmax + 1)
    n = len(result)
    for k, (t, (mean, std)) in enumerate(result.items()):
        label = "embedding" if t == 0 else (f"after layer {t}" + (" (output)" if t == n - 1 else ""))
        ax.errorbar(ls + 0.06 * (k - (n - 1) / 2), mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xticks(ls)
    ax.set_xlabel("degree l")
    ax.set_ylabel("r(l) = rank(H^l) / (2l+1)")
    ax.set_ylim(-0.03, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="sinet-ase model file")
    ap.add_argument("--structures", required=True, help="file with structures (ase.io.read)")
    ap.add_argument("--index", default=":", help="ase.io.read index, e.g. ':' or '::10'")
    ap.add_argument("--max-structures", type=int, default=200, help="evenly spaced subset")
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--out", default="/tmp/sinet_bench")
    args = ap.parse_args()

    torch.set_num_threads(2)
    model = load_model(args.model).to(getattr(torch, args.dtype)).eval()
    frames = read_structures(args.structures, args.index, args.max_structures)
    graph = batch_graphs([atoms_to_graph(a, model.cutoff, model.elements) for a in frames])
    feats = features_by_layer(model, graph)
    lmax = model.config["lmax"]
    ratios = {tol: {t: rank_ratio(h, tol) for t, h in feats.items()} for tol in
              sorted(set(SENSITIVITY_TOLS) | {args.tol}, reverse=True)}
    result = {t: (r.mean(0).numpy(), r.std(0, unbiased=False).numpy()) for t, r in ratios[args.tol].items()}

    n_atoms = graph.pos.shape[0]
    print(f"model {args.model}: lmax {lmax}, channels {model.config['channels']}, "
          f"{len(model.backbone.layers)} layers; {len(frames)} structures, {n_atoms} atoms; "
          f"tol {args.tol:g}, {args.dtype}")
    print("\n| features | " + " | ".join(f"r({l})" for l in range(lmax + 1)) + " |")
    print("|---|" + "---|" * (lmax + 1))
    for t, (mean, std) in result.items():
        name = "embedding" if t == 0 else f"after layer {t}"
        print(f"| {name} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std)) + " |")
    print("\nmean r(l) at other tolerances:\n")
    print("| tol | features | " + " | ".join(f"r({l})" for l in range(lmax + 1)) + " |")
    print("|---|---|" + "---|" * (lmax + 1))
    for tol, per_layer in ratios.items():
        for t, r in per_layer.items():
            print(f"| {tol:g} | {t} | " + " | ".join(f"{m:.3f}" for m in r.mean(0).tolist()) + " |")

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "completeness_" + os.path.splitext(os.path.basename(args.model))[0])
    title = (f"{os.path.basename(args.model)}: L={lmax}, c={model.config['channels']}, "
             f"{len(frames)} structures / {n_atoms} atoms, tol {args.tol:g}")
    plot(result, lmax, title, stem + ".png")
    with open(stem + ".json", "w") as f:
        json.dump({"model": args.model, "structures": args.structures, "n_structures": len(frames),
                   "n_atoms": n_atoms, "tol": args.tol, "dtype": args.dtype, "config": model.config,
                   "layers": {str(t): {"mean": m.tolist(), "std": s.tolist()} for t, (m, s) in result.items()},
                   "mean_by_tol": {f"{tol:g}": {str(t): r.mean(0).tolist() for t, r in per.items()}
                                   for tol, per in ratios.items()}}, f, indent=1)
    print("\nwrote", stem + ".png", stem + ".json")


if __name__ == "__main__":
    main()
