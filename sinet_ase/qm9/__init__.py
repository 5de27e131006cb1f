"""QM9 with SINet: the data set, scalar-property and dipole models, the ``qm9`` training task, evaluation.

Data (PyPI package ``qm9pack``, extra ``sinet-ase[qm9]``), one job per module:

- :mod:`sinet_ase.qm9.targets`: the 12 targets, their units and atom references.
- :mod:`sinet_ase.qm9.source`: qm9pack's CSV files parsed into arrays.
- :mod:`sinet_ase.qm9.cache`: the cache file, :class:`~sinet_ase.qm9.cache.QM9Data`,
  :func:`~sinet_ase.qm9.cache.load_qm9`.
- :mod:`sinet_ase.qm9.split`: the paper's and EGNN's splits, split files.
- :mod:`sinet_ase.qm9.data`: QM9 rows as labelled graphs, subsets, fitted atom references.

Model, task, evaluation:

- :mod:`sinet_ase.qm9.model`: :class:`QM9ScalarModel` (alpha, gap, HOMO, LUMO, ...),
  :class:`QM9DipoleModel` (mu), model files (:func:`save_qm9_model`, :func:`load_qm9_model`).
- :mod:`sinet_ase.qm9.task`: the ``task: qm9`` of ``sinet-train`` (recipes: ``training/qm9_*.yaml``).
- :mod:`sinet_ase.qm9.evaluate`: ``python -m sinet_ase.qm9.evaluate RUN_DIR [...]``, test MAEs
  in the form of the paper's Table 1.

The names below are imported on first use, so that the data modules load without torch.
"""

from ..lazy_exports import lazy_exports

_EXPORTS = {
    name: "model"
    for name in (
        "QM9_ELEMENTS",
        "QM9ScalarModel",
        "QM9DipoleModel",
        "build_qm9_model",
        "save_qm9_model",
        "load_qm9_model",
    )
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
