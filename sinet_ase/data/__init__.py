"""Former home of the data loaders; each now lives with its task.

:mod:`sinet_ase.data.atomic` re-exports :mod:`sinet_ase.potential.data` (energy + force
data) and :mod:`sinet_ase.data.qm9` re-exports the QM9 loader of :mod:`sinet_ase.qm9`, so
that old imports keep working; importing this package alone costs nothing.
"""
