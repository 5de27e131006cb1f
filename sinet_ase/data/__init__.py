"""Dataset loaders for sinet-ase (QM9 in :mod:`sinet_ase.data.qm9`).

Submodules are imported explicitly (``from sinet_ase.data.qm9 import load_qm9``)
so that importing :mod:`sinet_ase.data` stays cheap and never requires the
optional data extras.
"""
