r"""Train / validation / test splits of QM9's rows, and split files.

Splits
------
:func:`qm9_split` gives the paper's 110,000 / 10,000 / rest (10,831) split
(default) or the Cormorant/EGNN 100,000 / 17,748 / 13,083 split, both as a
seeded random permutation of the rows.  See its docstring for what is (and is
not) reproduced of EGNN's split; :func:`save_split` / :func:`load_split` store
the indices next to a run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from ..files import atomic_write
from .targets import N_MOLECULES

PathLike = Union[str, "os.PathLike[str]"]

#: Default seed of :func:`qm9_split` (also the seed of Cormorant's split).
DEFAULT_SPLIT_SEED = 0
PAPER_N_TRAIN, PAPER_N_VALID = 110_000, 10_000
EGNN_N_TRAIN = 100_000
EGNN_TEST_FRACTION = 0.1
SPLIT_SCHEMES = ("paper", "egnn")


@dataclass(frozen=True, eq=False)
class QM9Split:
    """Row indices (0-based rows of :class:`QM9Data`, sorted, int64) of a split."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    scheme: str
    seed: int
    n_total: int

    @property
    def sizes(self) -> Tuple[int, int, int]:
        return len(self.train), len(self.valid), len(self.test)

    def as_dict(self) -> Dict[str, np.ndarray]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def split_sizes(n_total: int, scheme: str = "paper") -> Tuple[int, int, int]:
    """(train, valid, test) sizes of ``scheme`` for ``n_total`` molecules."""
    if scheme == "paper":
        n_train, n_valid = PAPER_N_TRAIN, PAPER_N_VALID
        n_test = n_total - n_train - n_valid
    elif scheme == "egnn":
        # Cormorant's gen_splits_gdb9: 100k train, int(10 %) test, rest valid.
        n_train = EGNN_N_TRAIN
        n_test = int(EGNN_TEST_FRACTION * n_total)
        n_valid = n_total - n_train - n_test
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; choose from {SPLIT_SCHEMES}")
    if min(n_train, n_valid, n_test) <= 0:
        raise ValueError(f"split {scheme!r} needs more than {n_total} molecules")
    return n_train, n_valid, n_test


def qm9_split(n_total: int = N_MOLECULES, scheme: str = "paper", seed: int = DEFAULT_SPLIT_SEED) -> QM9Split:
    """Random train/valid/test split of ``n_total`` rows.

    * ``"paper"`` (default): 110,000 / 10,000 / rest (10,831 for QM9).
    * ``"egnn"``: the Cormorant/EGNN sizes 100,000 / 17,748 / 13,083
      (100k / rest / int(10 %)).

    Both take ``np.random.RandomState(seed).permutation(n_total)`` and cut it
    into train, valid, test in that order.  The legacy ``RandomState`` stream
    is frozen by NumPy's compatibility policy, so a (scheme, seed) pair gives
    the same indices on every NumPy version.  With ``seed=0`` this is also
    Cormorant's recipe (``np.random.seed(0); np.random.permutation(130831)``
    over the characterised molecules in index order), but EGNN then selects
    molecules by their position in the original tar archive, which we cannot
    check here: the ``"egnn"`` split reproduces the *sizes* of EGNN's split,
    not necessarily the identical molecules.

    Returns sorted row indices (int64) into :class:`QM9Data` (not QM9 indices).
    """
    n_total = int(n_total)
    n_train, n_valid, n_test = split_sizes(n_total, scheme)
    perm = np.random.RandomState(seed).permutation(n_total).astype(np.int64)
    train, valid, test = np.split(perm, [n_train, n_train + n_valid])
    return QM9Split(np.sort(train), np.sort(valid), np.sort(test), scheme=scheme, seed=int(seed), n_total=n_total)


_SPLIT_FORMAT = "sinet_ase.qm9_split/1"


def save_split(split: QM9Split, path: PathLike, *, qm9_index: Optional[np.ndarray] = None) -> Path:
    """Save ``split`` to ``path`` (``.json`` or ``.npz``), atomically.

    Stores the row indices, scheme, seed and ``n_total``; with ``qm9_index``
    (e.g. ``data.index``) also the QM9 molecule numbers of each part, which
    stay meaningful if the row order ever changes.
    """
    path = Path(path)
    parts = split.as_dict()
    ids = {}
    if qm9_index is not None:
        qm9_index = np.asarray(qm9_index)
        if len(qm9_index) != split.n_total:
            raise ValueError(f"qm9_index has {len(qm9_index)} entries, split is over {split.n_total}")
        ids = {f"{k}_qm9_index": qm9_index[v].astype(np.int64) for k, v in parts.items()}
    meta = {"format": _SPLIT_FORMAT, "scheme": split.scheme, "seed": split.seed, "n_total": split.n_total}
    if path.suffix == ".json":
        doc = dict(meta, sizes=dict(zip(("train", "valid", "test"), split.sizes)))
        doc.update({k: v.tolist() for k, v in {**parts, **ids}.items()})
        payload = json.dumps(doc).encode()
        atomic_write(path, lambda fh: fh.write(payload))
    elif path.suffix == ".npz":
        arrays = {k: np.array(v) for k, v in meta.items()}
        arrays.update(parts)
        arrays.update(ids)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    else:
        raise ValueError(f"split file must end in .json or .npz, got {path.name!r}")
    return path


def load_split(path: PathLike) -> QM9Split:
    """Read a split written by :func:`save_split`."""
    path = Path(path)
    if path.suffix == ".json":
        doc = json.loads(path.read_text())
    else:
        with np.load(path, allow_pickle=False) as z:
            doc = {k: z[k] for k in z.files}
    if str(doc.get("format")) != _SPLIT_FORMAT:
        raise ValueError(f"{path} is not a QM9 split file ({_SPLIT_FORMAT})")
    return QM9Split(
        *(np.asarray(doc[k], dtype=np.int64) for k in ("train", "valid", "test")),
        scheme=str(doc["scheme"]),
        seed=int(doc["seed"]),
        n_total=int(doc["n_total"]),
    )
