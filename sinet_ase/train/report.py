"""Run outputs: the per-epoch CSV log, the learning curve and the force parity plot."""

import csv
import os
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np


def write_csv(history: List[Dict[str, float]], path: Path) -> None:
    """Rewrite the whole log from the history (atomic), so a resumed run stays consistent."""
    if not history:
        return
    fields = list(history[0].keys())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".metrics.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def plot_learning_curve(history: List[Dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].semilogy(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].semilogy(epochs, [h["valid_loss"] for h in history], label="valid (EMA)")
    axes[0].set_title("loss")
    axes[1].semilogy(epochs, [h["valid_e_mae_mev_atom"] for h in history])
    axes[1].set_title("valid energy MAE (meV/atom)")
    axes[2].semilogy(epochs, [h["valid_f_mae_mev_a"] for h in history])
    axes[2].set_title("valid force MAE (meV/Å)")
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
