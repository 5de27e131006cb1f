"""Figure 3c/3d: completeness r(l) = rank(H^l)/(2l+1) of the node features entering each layer.

Run (from the repository root, in the project venv)::

    python benchmarks/completeness.py MODEL.pt --structures FILE [--index :] [--max-structures 200]
        [--tol 1e-5] [--dtype float64] [--tensor-product] [--out DIR]
    python benchmarks/completeness.py NBODY_MODEL.pt --nbody-data test.npz [--max-structures 200]
        [--tensor-product] [--out DIR]

The second form reads an N-body model (``sinet_ase.nbody``) and systems from an
``.npz`` with ``x``, ``v``, ``q`` (the evaluation format).

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

``--tensor-product`` adds Figure 3c's counterpart: the model's own embedding (layer 0)
is fed through as many tensor-product message-passing layers as the model has
Scalar Interaction layers, ``h_i <- h_i + (1/n) sum_j R(r_ij) FCTP(h_j, Y_ij)`` with
e3nn's ``FullyConnectedTensorProduct(irreps, sh_irreps, irreps)`` (random weights,
a random positive radial factor per edge; NequIP and MACE layers have this form).
Rank is a structural property here: a tensor product of ``h_j^{l1}`` with
``Y^{l2}`` creates directions of ``V^l`` that neither holds, while Scalar
Interaction only recombines the type-``l`` fragments it is given, so random
weights show what a trained tensor-product model could reach, not how it is used.
"""

import argparse
import io
import json
import lzma
import os

import numpy as np
import torch

from e3nn import o3

from sinet_ase import atoms_to_graph, batch_graphs, load_model
from sinet_ase.analysis import DEFAULT_TOL, features_by_layer, nbody_features_by_layer, rank_ratio
from sinet_ase.model import edge_vectors, graph_batch

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


class TensorProductLayers(torch.nn.Module):
    """``T`` layers ``h_i <- h_i + (1/n) sum_j R_ij FCTP(h_j, Y_ij)`` (random weights), SINet layout in and out."""

    def __init__(self, layout, num_layers: int, avg_num_neighbors: float, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layout = layout
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.products = torch.nn.ModuleList(
            o3.FullyConnectedTensorProduct(layout.irreps, layout.sh_irreps, layout.irreps) for _ in range(num_layers)
        )

    def forward(self, h, edge_index, Y, radial):
        """``h (N, c, M)`` -> ``{t: features after t layers}``, ``t = 0..T``."""
        receiver, sender = edge_index[0], edge_index[1]
        out = {0: h}
        x = self.layout.to_e3nn(h)
        for t, product in enumerate(self.products, start=1):
            messages = product(x[sender], Y) * radial.unsqueeze(-1)
            x = x + torch.zeros_like(x).index_add_(0, receiver, messages) / self.avg_num_neighbors
            out[t] = self.layout.from_e3nn(x)
        return out


def tensor_product_features(layout, embedding, edge_index, vectors, num_layers, avg_num_neighbors):
    """Run :class:`TensorProductLayers` on a model's embedding over the same edges."""
    dtype = embedding.dtype
    layers = TensorProductLayers(layout, num_layers, avg_num_neighbors).to(dtype)
    Y = o3.spherical_harmonics(layout.sh_irreps, vectors.to(dtype), normalize=True, normalization="component")
    g = torch.Generator().manual_seed(1)
    radial = 0.5 + torch.rand(vectors.shape[0], generator=g, dtype=dtype)
    with torch.no_grad():
        return layers(embedding, edge_index, Y, radial)


def _panel(ax, result, lmax, heading):
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
    ax.set_title(heading, fontsize=8)


def plot(result, lmax, title, path, tp_result=None):
    """One panel (Scalar Interaction), or two side by side with ``tp_result`` (Figure 3c | 3d)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("(c) tensor product, random weights", tp_result)] if tp_result else []
    panels.append(("(d) Scalar Interaction" if tp_result else title, result))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (heading, res) in zip(axes[0], panels):
        _panel(ax, res, lmax, heading)
    if tp_result:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", help="sinet-ase model file (an N-body model file with --nbody-data)")
    ap.add_argument("--structures", help="file with structures (ase.io.read)")
    ap.add_argument("--nbody-data", help=".npz with x, v (N, n, 3) and q (N, n): systems for an N-body model")
    ap.add_argument(
        "--tensor-product",
        action="store_true",
        help="also r(l) after random tensor-product layers on the same embedding (Figure 3c)",
    )
    ap.add_argument("--index", default=":", help="ase.io.read index, e.g. ':' or '::10'")
    ap.add_argument("--max-structures", type=int, default=200, help="evenly spaced subset")
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--out", default="/tmp/sinet_bench")
    ap.add_argument("--name", help="output name (completeness_<name>.png/.json); default: the model file's stem")
    args = ap.parse_args()

    if (args.structures is None) == (args.nbody_data is None):
        ap.error("give exactly one of --structures (a potential) and --nbody-data (an N-body model)")
    torch.set_num_threads(2)
    dtype = getattr(torch, args.dtype)
    if args.nbody_data:
        from sinet_ase.nbody import load_nbody_model
        from sinet_ase.nbody.dataset import load_npz_split

        model = load_nbody_model(args.model).to(dtype)
        data = load_npz_split(args.nbody_data)
        count = min(args.max_structures or len(data["x"]), len(data["x"]))
        x, v, q = (torch.as_tensor(data[k][:count], dtype=dtype) for k in ("x", "v", "q"))
        feats = nbody_features_by_layer(model, x, v, q)
        n_frames, n_atoms, what = count, count * x.shape[1], "systems"
        edge_index = model.edges(count, x.shape[1], x.device)
        pos = x.reshape(-1, 3)
        vectors = pos[edge_index[1]] - pos[edge_index[0]]
        layout = model.layout
    else:
        model = load_model(args.model).to(dtype).eval()
        frames = read_structures(args.structures, args.index, args.max_structures)
        graph = batch_graphs([atoms_to_graph(a, model.cutoff, model.elements) for a in frames])
        feats = features_by_layer(model, graph)
        n_frames, n_atoms, what = len(frames), graph.pos.shape[0], "structures"
        edge_index = graph.edge_index
        vectors = edge_vectors(graph, graph.pos.to(torch.float64), graph.cell.to(torch.float64), graph_batch(graph))
        layout = model.backbone.layout
    lmax = model.config["lmax"]
    num_layers = len(feats) - 1
    tp_feats = {}
    if args.tensor_product:
        tp_feats = tensor_product_features(
            layout, feats[0], edge_index, vectors, num_layers, model.config["avg_num_neighbors"]
        )
    tols = sorted(set(SENSITIVITY_TOLS) | {args.tol}, reverse=True)

    def rank_summary(features):
        """r(l) per node at every tolerance, and its mean / std over nodes at ``--tol``."""
        by_tol = {tol: {t: rank_ratio(h, tol) for t, h in features.items()} for tol in tols}
        return by_tol, {t: (r.mean(0).numpy(), r.std(0, unbiased=False).numpy()) for t, r in by_tol[args.tol].items()}

    ratios, result = rank_summary(feats)
    tp_ratios, tp_result = rank_summary(tp_feats) if tp_feats else ({}, {})

    print(
        f"model {args.model}: lmax {lmax}, channels {model.config['channels']}, "
        f"{num_layers} layers; {n_frames} {what}, {n_atoms} atoms; tol {args.tol:g}, {args.dtype}"
    )
    kinds = [("Scalar Interaction (the model)", result, ratios)]
    if tp_feats:
        kinds.append(("tensor product (random weights, same embedding)", tp_result, tp_ratios))
    for kind, res, rat in kinds:
        print(f"\n{kind}\n\n| features | " + " | ".join(f"r({l})" for l in range(lmax + 1)) + " |")
        print("|---|" + "---|" * (lmax + 1))
        for t, (mean, std) in res.items():
            name = "embedding" if t == 0 else f"after layer {t}"
            print(f"| {name} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std)) + " |")
        print("\nmean r(l) at other tolerances:\n")
        print("| tol | features | " + " | ".join(f"r({l})" for l in range(lmax + 1)) + " |")
        print("|---|---|" + "---|" * (lmax + 1))
        for tol, per_layer in rat.items():
            for t, r in per_layer.items():
                print(f"| {tol:g} | {t} | " + " | ".join(f"{m:.3f}" for m in r.mean(0).tolist()) + " |")

    os.makedirs(args.out, exist_ok=True)
    name = args.name or os.path.splitext(os.path.basename(args.model))[0]
    stem = os.path.join(args.out, "completeness_" + name)
    title = f"{name}: L={lmax}, c={model.config['channels']}, {n_frames} {what} / {n_atoms} atoms, tol {args.tol:g}"
    plot(result, lmax, title, stem + ".png", tp_result)

    def per_layer(res):
        return {str(t): {"mean": m.tolist(), "std": s.tolist()} for t, (m, s) in res.items()}

    def by_tol(rat):
        return {f"{tol:g}": {str(t): r.mean(0).tolist() for t, r in per.items()} for tol, per in rat.items()}

    record = {
        "model": args.model,
        "structures": args.structures or args.nbody_data,
        "n_structures": n_frames,
        "n_atoms": n_atoms,
        "tol": args.tol,
        "dtype": args.dtype,
        "config": model.config,
        "layers": per_layer(result),
        "mean_by_tol": by_tol(ratios),
    }
    if tp_feats:
        record["tensor_product"] = {"layers": per_layer(tp_result), "mean_by_tol": by_tol(tp_ratios)}
    tmp = stem + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, stem + ".json")
    print("\nwrote", stem + ".png", stem + ".json")


if __name__ == "__main__":
    main()
