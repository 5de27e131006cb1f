"""QM9 with SINet: scalar-property and dipole models, the ``qm9`` training task, evaluation.

- :mod:`sinet_ase.qm9.model`: :class:`QM9ScalarModel` (alpha, gap, HOMO, LUMO, ...),
  :class:`QM9DipoleModel` (mu), model files (:func:`save_qm9_model`, :func:`load_qm9_model`).
- :mod:`sinet_ase.qm9.data`: QM9 rows as labelled graphs, subsets, atom references.
- :mod:`sinet_ase.qm9.task`: the ``task: qm9`` of ``sinet-train`` (recipes: ``training/qm9_*.yaml``).
- :mod:`sinet_ase.qm9.evaluate`: ``python -m sinet_ase.qm9.evaluate RUN_DIR [...]``, test MAEs
  in the form of the paper's Table 1.

The data come from :mod:`sinet_ase.data.qm9` (PyPI package ``qm9pack``).
"""

from .model import QM9_ELEMENTS, QM9DipoleModel, QM9ScalarModel, build_qm9_model, load_qm9_model, save_qm9_model

__all__ = ["QM9_ELEMENTS", "QM9ScalarModel", "QM9DipoleModel", "build_qm9_model", "save_qm9_model", "load_qm9_model"]
