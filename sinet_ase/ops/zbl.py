r"""Ziegler-Biersack-Littmark (ZBL) core repulsion, an optional pair term of the energy model.

A learned potential knows nothing about distances shorter than its training data's: two
atoms pushed together may even attract. The ZBL "universal" screened nuclear repulsion
(Ziegler, Biersack and Littmark, *The Stopping and Range of Ions in Solids*, 1985) gives the
right physics there, as NequIP's ``ZBL`` pair potential and MACE's ``ZBLBasis`` do:

``V(r) = k_e Z_i Z_j / r  phi(r / a_ij)  u(r / r_ij^max)``,

``phi(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x}
+ 0.02817 e^{-0.20162 x}``,  ``a_ij = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)``

(``0.46850 Å = 0.8854 a_0``), ``k_e = e^2 / (4 pi eps_0) = 14.399645 eV Å``, ``Z`` the
atomic numbers. ``u`` is the model's polynomial envelope (:class:`~sinet_ase.ops.PolynomialEnvelope`,
exponent ``p``): 1 at ``r = 0``, zero with its first and second derivatives at
``r_ij^max = f (r_cov,i + r_cov,j)`` (ASE's covalent radii, at most the model's cutoff), so
energy and forces stay continuous. ``f = 0.6`` by default, as NEP's per-type ZBL cutoff:
the term ends below bonding distances (O-H 0.58 Å, C-H 0.64 Å, C-C 0.91 Å), where no
training data lies, so it does not change what the network learns there. With ``f = 1``
(MACE's ``r_max``, the sum of covalent radii: O-H 0.97 Å, C-H 1.07 Å) the switching
region falls on vibrating bonds, and it cost force accuracy in our test (docs/model.md,
"ZBL core repulsion"). The screening length is the universal one of ZBL (as in LAMMPS
and NequIP), not MACE's refitted prefactor and exponent. Each pair's energy is split
evenly between its two atoms (``0.5 V`` per directed edge), so the per-atom energies still
sum to the total.

At 0.1 Å two hydrogens repel with about 93 eV, two carbons with about 2.8 keV. Evaluated
in float64 on the edges closer than ``r_ij^max`` only (selected without gradients), so
its cost and memory are negligible next to the network's.
"""

import torch
from ase.data import covalent_radii

from .radial import PolynomialEnvelope

#: ``e^2 / (4 pi eps_0)`` in eV Å
COULOMB_EV_A = 14.399645
#: the universal screening length's prefactor, ``0.8854 a_0``, in Å
SCREENING_LENGTH_A = 0.46850
SCREENING_EXPONENT = 0.23
PHI_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
PHI_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


def zbl_pair_energy(r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
    """The unswitched ZBL energy ``k_e Z_i Z_j / r phi(r / a_ij)`` in eV, elementwise."""
    a = SCREENING_LENGTH_A / (z_i.pow(SCREENING_EXPONENT) + z_j.pow(SCREENING_EXPONENT))
    x = r / a
    phi = sum(c * torch.exp(-e * x) for c, e in zip(PHI_COEFFICIENTS, PHI_EXPONENTS))
    return COULOMB_EV_A * z_i * z_j / r * phi


class ZBLRepulsion(torch.nn.Module):
    """Per-atom ZBL energies: ``forward(species (N,), edge_index (2, E), vectors (E, 3))
    -> (N,)`` float64, ``E_i = 0.5 sum_j V(r_ij)``. No parameters.

    Args:
        numbers: atomic number of each species (the model's ``elements`` order).
        cutoff: the model's cutoff; no pair reaches beyond it.
        envelope_p: exponent of the switching envelope.
        cutoff_factor: ``f``: the term ends at ``f`` times the sum of covalent radii.
    """

    def __init__(self, numbers, cutoff: float, envelope_p: int = 6, cutoff_factor: float = 0.6):
        super().__init__()
        numbers = torch.tensor([int(z) for z in numbers], dtype=torch.long)
        radii = torch.tensor(covalent_radii[numbers.numpy()], dtype=torch.float64)
        self.cutoff = float(cutoff)
        self.register_buffer("numbers", numbers.to(torch.float64), persistent=False)
        # r_max per species pair (S, S): sum of covalent radii, at most the model's cutoff
        self.cutoff_factor = float(cutoff_factor)
        self.register_buffer(
            "pair_cutoff",
            (self.cutoff_factor * (radii[:, None] + radii[None, :])).clamp(max=self.cutoff),
            persistent=False,
        )
        self.envelope = PolynomialEnvelope(1.0, envelope_p)  # of r / r_max

    def _apply(self, fn, *args, **kwargs):
        # casting the model to float32 must not round the pair term's constants
        numbers, pair_cutoff = self.numbers, self.pair_cutoff
        out = super()._apply(fn, *args, **kwargs)
        self.numbers = numbers.to(device=self.numbers.device, dtype=torch.float64)
        self.pair_cutoff = pair_cutoff.to(device=self.pair_cutoff.device, dtype=torch.float64)
        return out

    def forward(
        self, species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor, dense: bool = False
    ) -> torch.Tensor:
        """``dense``: evaluate every edge and mask (no data-dependent shapes, for
        ``torch.export``); the default selects the few edges inside ``r_max`` first."""
        receiver, sender = edge_index[0], edge_index[1]
        vectors = vectors.to(torch.float64)
        if dense:
            s_i, s_j = species.index_select(0, receiver), species.index_select(0, sender)
            r = vectors.norm(dim=-1)
            r_max = self.pair_cutoff[s_i, s_j]
            inside = r < r_max
            r = torch.where(inside, r, r_max)  # outside: a finite value with a zero gradient
            energy = zbl_pair_energy(r, self.numbers[s_i], self.numbers[s_j]) * self.envelope(r / r_max)
            energy = torch.where(inside, energy, torch.zeros_like(energy))
            return torch.zeros(species.shape[0], dtype=torch.float64, device=vectors.device).index_add(
                0, receiver, 0.5 * energy
            )
        with torch.no_grad():  # the few edges inside r_max; the rest contribute exactly zero
            r_max = self.pair_cutoff[species[receiver], species[sender]]
            close = torch.nonzero(vectors.norm(dim=-1) < r_max).squeeze(-1)
        receiver_c, sender_c = receiver.index_select(0, close), sender.index_select(0, close)
        r = vectors.index_select(0, close).norm(dim=-1)
        s_i, s_j = species.index_select(0, receiver_c), species.index_select(0, sender_c)
        energy = zbl_pair_energy(r, self.numbers[s_i], self.numbers[s_j])
        energy = energy * self.envelope(r / self.pair_cutoff[s_i, s_j])
        return torch.zeros(species.shape[0], dtype=torch.float64, device=vectors.device).index_add(
            0, receiver_c, 0.5 * energy
        )

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, cutoff_factor={self.cutoff_factor}, p={self.envelope.p}"
