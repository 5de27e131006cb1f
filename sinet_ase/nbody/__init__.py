"""Charged N-body benchmark (EGNN / SEGNN protocol): simulator and dataset.

- :mod:`sinet_ase.nbody.simulator`: physics, integrator (``simulate``),
  ``generate_trajectories`` (NumPy only).
- :mod:`sinet_ase.nbody.generate`: CLI ``python -m sinet_ase.nbody.generate --out DIR``
  (the data set's cache and evaluation files; the former ``python -m
  sinet_ase.nbody.simulator`` runs it too).
- :mod:`sinet_ase.nbody.dataset`: splits, checksummed cache
  (``load_nbody_dataset``) and the evaluation format (``save_npz_split``).
- :mod:`sinet_ase.nbody.model`: ``NBodySINet`` (SINet with a vector head),
  model files (``save_nbody_model`` / ``load_nbody_model``).
- :mod:`sinet_ase.nbody.task`: the ``nbody`` task of the shared trainer;
  ``sinet-train training/nbody.yaml``.
- :mod:`sinet_ase.nbody.evaluate`: the benchmark MSE (``evaluate_mse``) and test MSE of
  model files on an ``.npz`` split; ``sinet-eval MODEL.pt DATA.npz``.
- :mod:`sinet_ase.nbody.train`: the former command ``python -m sinet_ase.nbody.train``,
  deprecated: it runs its recipe through ``sinet-train``.
- :mod:`sinet_ase.nbody.rollout`: ``rollout`` (autoregressive, K intervals of
  1,000 steps), ``ground_truth`` (simulator), ``rollout_mse``.  The function
  ``rollout`` is not re-exported here (it shares its module's name): use
  ``from sinet_ase.nbody.rollout import rollout``.

Names are re-exported lazily (PEP 562): ``import sinet_ase.nbody`` stays free of torch
for the NumPy-only simulator and data set, and the former command ``python -m
sinet_ase.nbody.simulator`` finds its module not yet imported (runpy warns otherwise).
"""

from ..lazy_exports import lazy_exports

_EXPORTS = {
    # simulator
    "DT": "simulator",
    "MAX_FORCE": "simulator",
    "N_PARTICLES": "simulator",
    "N_FRAMES": "simulator",
    "RECORD_EVERY": "simulator",
    "INPUT_FRAME": "simulator",
    "TARGET_FRAME": "simulator",
    "frame_to_step": "simulator",
    "step_to_frame": "simulator",
    "sample_initial_conditions": "simulator",
    "forces": "simulator",
    "simulate": "simulator",
    "generate_trajectories": "simulator",
    "energy": "simulator",
    # dataset
    "DEFAULT_SEED": "dataset",
    "NBodyCacheError": "dataset",
    "default_cache_dir": "dataset",
    "cache_path": "dataset",
    "make_split": "dataset",
    "make_splits": "dataset",
    "load_nbody_dataset": "dataset",
    "save_npz_split": "dataset",
    "load_npz_split": "dataset",
    "baseline_mse": "dataset",
    "time_reversed": "dataset",
    # model
    "NBodySINet": "model",
    "save_nbody_model": "model",
    "load_nbody_model": "model",
    "load_nbody_ensemble": "model",
    # rollout
    "ground_truth": "rollout",
    "rollout_mse": "rollout",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
