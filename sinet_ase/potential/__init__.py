"""Energy + force potentials: the ``energy`` training task, its data and fine-tuning.

- :mod:`sinet_ase.potential.data`: extxyz / ASE files as labelled graphs, reproducible
  splits, E0s, force scale and average neighbour count.
- :mod:`sinet_ase.potential.finetune`: ``model.init_from`` (start from a model file or a
  shipped potential) and ``training.freeze``.
- :mod:`sinet_ase.potential.task`: the ``task: energy`` of ``sinet-train`` (the default;
  recipes: ``training/*.yaml``).

The model is :class:`sinet_ase.SINet` (:mod:`sinet_ase.model`), which the ASE calculator
runs. Submodules are imported explicitly, so importing this package costs nothing.
"""
