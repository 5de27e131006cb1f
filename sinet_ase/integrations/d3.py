"""D3 dispersion on top of a SINet potential (Grimme's DFT-D3 through ``torch-dftd``).

``E = E_SINet + E_D3``, forces and stress likewise, as an ASE ``SumCalculator``
of the SINet calculator and torch-dftd's ``TorchDFTD3Calculator``::

    from sinet_ase import SINetCalculator
    from sinet_ase.integrations.d3 import with_d3

    atoms.calc = with_d3(SINetCalculator.from_pretrained("sinet-rmd17-ethanol"), xc="pbe")

Why a ``SumCalculator`` and not a ``dispersion=`` option of ``SINetCalculator``: the
two terms are independent calculators with their own neighbour lists (D3 reaches
~50 Å, the network ~5 Å), so the sum is exactly ASE's existing composition (as
MACE's ``mace_mp(dispersion=True)`` does it); the SINet calculator keeps one job, its
committee and per-atom results stay SINet's own, and the two parts stay separately
readable (``results["energy_contributions"]``). The sum has the properties both
calculators have: ``energy``, ``forces`` and, for periodic cells, ``stress``.

Add D3 only to a potential whose reference data had no dispersion, and give the
functional of those data: ``sinet-rmd17-ethanol`` (PBE, no D3) takes ``xc="pbe"``;
``sinet-acac`` (PBE+D3) already has it, and ``sinet-xtb-md17`` (GFN2-xTB, which has
its own D4 term) too.
"""

from ase.calculators.mixing import SumCalculator


def d3_calculator(
    xc: str = "pbe",
    damping: str = "bj",
    three_body: bool = False,
    dtype: str = "float64",
    device: str = "cpu",
    **kwargs,
):
    """torch-dftd's ``TorchDFTD3Calculator`` for functional ``xc`` and ``damping``
    (``"zero"``, ``"bj"``, ``"zerom"``, ``"bjm"``); ``three_body`` adds the
    Axilrod-Teller-Muto term. ``kwargs`` go to ``TorchDFTD3Calculator`` (``cutoff``,
    ``cnthr`` in Å; its defaults are 95 and 40 bohr)."""
    try:
        import torch
        from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator
    except ImportError as err:
        raise ImportError(
            "D3 dispersion needs torch-dftd: pip install 'sinet-ase[dftd]' (or pip install torch-dftd)"
        ) from err
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    # an unknown functional or damping is torch-dftd's ValueError, which names it
    return TorchDFTD3Calculator(xc=xc, damping=damping, abc=three_body, dtype=dtypes[dtype], device=device, **kwargs)


def with_d3(calc, xc: str = "pbe", damping: str = "bj", three_body: bool = False, **kwargs) -> SumCalculator:
    """``SumCalculator([calc, D3])``: ``calc`` (a :class:`~sinet_ase.SINetCalculator`, or
    any ASE calculator) plus D3 dispersion for functional ``xc`` (see :func:`d3_calculator`;
    the D3 part runs in the SINet calculator's dtype and on its device unless ``dtype`` /
    ``device`` are given)."""
    torch_dtype = getattr(calc, "dtype", None)
    kwargs.setdefault("dtype", str(torch_dtype).replace("torch.", "") if torch_dtype is not None else "float64")
    kwargs.setdefault("device", str(getattr(calc, "device", "cpu")))
    return SumCalculator([calc, d3_calculator(xc=xc, damping=damping, three_body=three_body, **kwargs)])
