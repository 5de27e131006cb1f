"""Run outputs: the per-epoch CSV log, the learning curve and parity plots."""

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..files import atomic_write_text


def write_csv(history: List[Dict[str, float]], path: Path) -> None:
    """Rewrite the whole log from the history (atomic), so a resumed run stays consistent."""
    if not history:
        return
    fields = list(history[0].keys())
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


#: the metric panels of an energy + force run: (CSV column, title)
ENERGY_PANELS = (
    ("valid_e_mae_mev_atom", "valid energy MAE (meV/atom)"),
    ("valid_f_mae_mev_a", "valid force MAE (meV/Å)"),
)


def plot_learning_curve(
    history: List[Dict[str, float]], path: Path, panels: Optional[Sequence[Tuple[str, str]]] = None
) -> None:
    """Loss (train and valid) and one panel per ``(column, title)`` of ``panels``
    (default: the energy and force MAEs of an energy + force run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(ENERGY_PANELS if panels is None else panels)
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4.4 * (1 + len(panels)), 3.6))
    axes[0].semilogy(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].semilogy(epochs, [h["valid_loss"] for h in history], label="valid (EMA)")
    axes[0].set_title("loss")
    for ax, (key, title) in zip(axes[1:], panels):
        ax.semilogy(epochs, [h[key] for h in history])
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_force_parity(reference: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.scatter(reference.ravel(), predicted.ravel(), s=2, alpha=0.3)
    lim = float(np.abs(reference).max()) * 1.05 if reference.size else 1.0
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    mae = float(np.abs(predicted - reference).mean()) * 1000 if reference.size else float("nan")
    ax.set_xlabel("reference force component (eV/Å)")
    ax.set_ylabel("predicted (eV/Å)")
    ax.set_title(f"{title}: MAE {mae:.1f} meV/Å")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_parity(reference: np.ndarray, predicted: np.ndarray, path: Path, title: str, quantity: str, unit: str) -> None:
    """Predicted against reference values of one scalar, with its MAE in ``unit``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference, predicted = np.ravel(reference), np.ravel(predicted)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.scatter(reference, predicted, s=2, alpha=0.3)
    if reference.size:
        lo, hi = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    mae = float(np.abs(predicted - reference).mean()) if reference.size else float("nan")
    ax.set_xlabel(f"reference {quantity} ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.set_title(f"{title}: MAE {mae:.4g} {unit}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
