r"""Test MAEs of trained QM9 models, printed like Table 1 of the paper.

Command::

    python -m sinet_ase.qm9.evaluate RUN_DIR_OR_MODEL [RUN_DIR_OR_MODEL ...]
        [--split test|valid] [--limit N] [--batch-size 128] [--device cpu]
        [--dtype float64] [--json results.json]

Each argument is a run folder (its ``best_model.pt``) or a model file written
by the ``qm9`` task. The target, the split scheme and its seed come from the
model file, so every model is scored on the *full* test split it was held
out from (10,831 molecules for the paper split) unless ``--limit`` takes a
seeded subset (for quick checks; the table then says so). Where a run folder
has ``split.json``, the test molecules are checked to be disjoint from the
molecules it trained on.

Output: one line per model (target, unit, MAE, molecules, path) and a row in
the column order of Table 1 (alpha, gap, HOMO, LUMO, mu).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .split import qm9_split
from .targets import TARGETS
from ..files import atomic_write_text
from ..graph import batch_graphs
from .data import qm9_dataset, qm9_graphs, subset_rows
from .model import load_qm9_model

#: Table 1 columns: target, header
TABLE1 = (
    ("alpha", "alpha (bohr^3)"),
    ("gap", "gap (meV)"),
    ("homo", "HOMO (meV)"),
    ("lumo", "LUMO (meV)"),
    ("mu", "mu (D)"),
)


def predict(model, graphs, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """Predictions of ``model`` for ``graphs`` in the target's unit, (n,) float64."""
    out = []
    model = model.to(device).eval()
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            batch = batch_graphs(graphs[start : start + batch_size]).to(device)
            out.append(model(batch)["prediction"].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_model(
    path,
    split: str = "test",
    limit: Optional[int] = None,
    batch_size: int = 128,
    device: str = "cpu",
    dtype: str = "float64",
    cache_dir: Optional[str] = None,
    progress: bool = True,
) -> Dict:
    """MAE of one model on ``split`` of the split recorded in the model file."""
    path = Path(path)
    model = load_qm9_model(path)
    model = model.to({"float32": torch.float32, "float64": torch.float64}[dtype])
    meta = model.metadata
    target = model.config["target"]
    scheme, seed = meta.get("split", "paper"), int(meta.get("split_seed", 0))
    data = qm9_dataset(cache_dir)
    rows = getattr(qm9_split(len(data), scheme, seed), split)
    full = len(rows)
    rows = subset_rows(rows, limit, 0)
    run_dir = path if path.is_dir() else path.parent
    if (run_dir / "split.json").is_file():
        record = json.loads((run_dir / "split.json").read_text())
        trained = set(record.get("train", []))
        if trained & set(rows.tolist()):
            raise ValueError(
                f"{run_dir}: {len(trained & set(rows.tolist()))} {split} molecules were "
                "trained on (split.json); refusing to report a test error"
            )
    started = time.perf_counter()
    graphs = qm9_graphs(data, rows, model.cutoff, model.elements, target, progress=progress, desc=f"{target} graphs")
    reference = np.array([float(g.y) for g in graphs])
    prediction = predict(model, graphs, batch_size, device)
    return {
        "target": target,
        "unit": TARGETS[target].unit,
        "mae": float(np.abs(prediction - reference).mean()),
        "n": int(len(rows)),
        "n_split": int(full),
        "split": split,
        "scheme": scheme,
        "split_seed": seed,
        "model": str(path),
        "epoch": meta.get("epoch"),
        "train_size": meta.get("train_size"),
        "seconds": time.perf_counter() - started,
    }


def format_table(results: List[Dict]) -> str:
    """Per-model lines, then a Table-1 row (``-`` where a target has no model)."""
    lines = [f"{'target':7s} {'unit':12s} {'MAE':>10s} {'molecules':>14s}  {'train':>7s}  model"]
    for r in results:
        n = f"{r['n']}/{r['n_split']}"
        lines.append(
            f"{r['target']:7s} {r['unit']:12s} {r['mae']:10.4g} {n:>14s}  "
            f"{str(r.get('train_size', '')):>7s}  {r['model']}"
        )
    best = {}
    for r in results:
        if r["target"] not in best or r["mae"] < best[r["target"]]["mae"]:
            best[r["target"]] = r
    lines.append("")
    lines.append(
        "Table 1 layout (" + ", ".join(sorted({f"{r['split']} of the {r['scheme']} split" for r in results})) + "):"
    )
    lines.append(" | ".join(["method"] + [h for _, h in TABLE1]))
    cells = []
    for target, _ in TABLE1:
        r = best.get(target)
        cells.append("-" if r is None else (f"{r['mae']:.3f}" if target in ("alpha", "mu") else f"{r['mae']:.0f}"))
    lines.append(" | ".join(["SINet (sinet-ase)"] + cells))
    if any(r["n"] < r["n_split"] for r in results):
        lines.append("note: --limit used, MAEs are over a subset of the split, not Table-1 numbers")
    others = sorted({r["target"] for r in results} - {t for t, _ in TABLE1})
    if others:
        lines.append("other targets: " + ", ".join(f"{t} {best[t]['mae']:.4g} {best[t]['unit']}" for t in others))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sinet_ase.qm9.evaluate", description=__doc__.split("Command::")[0].strip()
    )
    parser.add_argument("models", nargs="+", help="run folders or QM9 model files")
    parser.add_argument("--split", choices=["test", "valid"], default="test")
    parser.add_argument(
        "--limit", type=int, default=None, help="evaluate a seeded subset of this many molecules (quick check)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--cache-dir", default=None, help="QM9 cache folder (default: load_qm9's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from ..errors import ModelFileError

    results = []
    for path in args.models:
        try:
            results.append(
                evaluate_model(
                    path,
                    args.split,
                    args.limit,
                    args.batch_size,
                    args.device,
                    args.dtype,
                    args.cache_dir,
                    progress=not args.quiet,
                )
            )
        except (FileNotFoundError, ModelFileError, ValueError) as err:
            print(f"evaluate: error: {path}: {err}", file=sys.stderr)
            return 2
    print(format_table(results))
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
