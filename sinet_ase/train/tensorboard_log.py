"""TensorBoard logging of the per-epoch metrics (``training.tensorboard: true``).

The same numbers as ``run_dir/metrics.csv`` (one row per epoch), written as scalars at
step = epoch into ``run_dir/tensorboard`` (``tensorboard --logdir run_dir``) through
``torch.utils.tensorboard``. Tags group them: ``loss/train``, ``loss/valid``,
``valid/<metric>`` (e.g. ``valid/f_mae_mev_a``), ``lr``, ``time/epoch_seconds``.
TensorBoard is an optional dependency (``pip install tensorboard``, or the
``tensorboard`` extra); the config check refuses ``tensorboard: true`` without it,
before any training starts.
"""

from pathlib import Path
from typing import Dict, Union

from ..errors import ConfigError

INSTALL_HINT = "pip install tensorboard (or pip install 'sinet-ase[tensorboard]')"


def check_tensorboard() -> None:
    """Raise :class:`ConfigError` when ``torch.utils.tensorboard`` cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(
            "training.tensorboard: true needs the tensorboard package, which is not "
            f"installed: {INSTALL_HINT}; or set training.tensorboard: false "
            "(run_dir/metrics.csv holds the same numbers)"
        ) from None


def tag(column: str) -> str:
    """The TensorBoard tag of a ``metrics.csv`` column."""
    if column in ("train_loss", "valid_loss"):
        return "loss/" + column.split("_")[0]
    if column.startswith("valid_"):
        return "valid/" + column[len("valid_") :]
    if column.endswith("_seconds"):
        return "time/" + column
    return column


class TensorBoardLog:
    """Writes each epoch's metrics row to ``run_dir/tensorboard``; flushed every epoch, so a
    stopped run keeps what it logged (a resumed run appends a new event file there)."""

    def __init__(self, run_dir: Union[str, Path]):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, row: Dict[str, float]) -> None:
        epoch = int(row["epoch"])
        for column, value in row.items():
            if column != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(tag(column), float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
