"""Adapters to other codes, each in its own module with its own optional dependency:

===============  =========================================  ==========================
module           what                                       extra (``pip install``)
===============  =========================================  ==========================
``d3``           D3 dispersion added to a SINet calculator  ``sinet-ase[dftd]``
``ipi``          i-PI client over a UNIX or TCP socket      ``sinet-ase[ipi]``
``torchsim``     torch-sim ``ModelInterface`` (batched)     ``sinet-ase[torchsim]``
===============  =========================================  ==========================

OpenMM needs no module: openmm-ml's ASE bridge takes the calculator
(``examples/openmm_md.py``, extra ``sinet-ase[openmm]``). Nothing here is imported by
``sinet_ase`` itself, so the core package never needs these packages.
"""
