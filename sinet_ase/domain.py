"""The domain of validity of a trained potential: statistics of its training data.

A potential is only as good as the structures it was trained on: two atoms
closer than any pair in the training data, or a periodic cell so small that
an atom meets its own image, give energies that mean nothing (the model has
no built-in short-range repulsion, so they may be hugely negative). The
trainer stores :func:`training_domain` of the training set in the exported
model's metadata (``training_domain``), and :class:`~sinet_ase.SINetCalculator`
and :func:`~sinet_ase.predict` check each structure against it (:class:`DomainCheck`).

Two levels, because a potential is routinely used a little outside its data (a
hotter MD, a liquid from molecules) but not on structures where its numbers are
arbitrary (E = -3e14 eV for a 1 Å periodic cell):

- *outside*: a pair closer than :data:`DISTANCE_FACTOR` times the shortest training
  distance of its element pair, more than :data:`NEIGHBOUR_FACTOR` times the most
  neighbours, or an energy per atom more than a margin (the training range, at least
  :data:`ENERGY_MARGIN` eV) beyond the training range. By default an
  :class:`OutOfDomainWarning` (the first such structure of a calculator only, so that
  an MD run is not flooded), and the result is returned.
- *far outside*: below :data:`FAR_DISTANCE_FACTOR` of the shortest distance, more than
  :data:`FAR_NEIGHBOUR_FACTOR` times the neighbours, or :data:`FAR_ENERGY_MARGINS`
  margins beyond the energy range. By default an :class:`~sinet_ase.OutOfDomainError`
  (a ``SINetInputError``), every time: no number is returned. A model with the ZBL
  core repulsion (``zbl=True``) is meant for short distances, so for it short distances
  and high energies only warn.

``out_of_domain="raise"`` makes both levels errors, ``"ignore"`` turns the check off.

Stored statistics (JSON-plain, so a model file keeps loading safely):

- ``min_distance``: per element pair (symbols in atomic-number order, ``"H-C"``),
  the shortest distance (Å) within the cutoff, periodic images included;
- ``max_neighbours``: the largest number of neighbours within the cutoff of one atom;
- ``energy_per_atom``: ``[min, max]`` of the energy labels per atom (eV), less the
  per-element reference energies ``atomic_energies`` (also stored) when given, so that
  structures of another composition compare; only when the graphs carry energies.
"""

import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

#: a distance below this fraction of the shortest training distance of its pair is out of domain
DISTANCE_FACTOR = 0.75
#: more neighbours than this factor times the training maximum is out of domain
NEIGHBOUR_FACTOR = 2.0
#: an energy per atom more than ``max(training range, ENERGY_MARGIN)`` eV beyond the training
#: range is out of domain
ENERGY_MARGIN = 1.0
#: far outside (an error by default): a distance below this fraction of the shortest training
#: distance of its pair (0.48 Å for the shipped potentials' H-C, 0.44 Å for O-H: shorter than
#: any bond, where a model without a repulsive core is arbitrary)
FAR_DISTANCE_FACTOR = 0.5
#: far outside: more neighbours than this factor times the training maximum (a tiny or
#: degenerate periodic cell; liquid water is 2-3 times molecules' counts)
FAR_NEIGHBOUR_FACTOR = 8.0
#: far outside: an energy per atom this many margins beyond the training range
FAR_ENERGY_MARGINS = 10.0


class OutOfDomainWarning(UserWarning):
    """A structure outside the training data's domain: the result is not reliable."""


def _pair(za: int, zb: int) -> str:
    lo, hi = sorted((int(za), int(zb)))
    return f"{chemical_symbols[lo]}-{chemical_symbols[hi]}"


#: edges handled at a time by :func:`_shortest_pairs` and :class:`DomainCheck` (bounds its memory on large structures)
_EDGE_SLICE = 1 << 20


def _shortest_pairs(graph):
    """Per element pair (code ``1000 z_lo + z_hi``): the shortest edge ``(distance, i, j)``,
    and the largest neighbour count of an atom; edges taken a slice at a time."""
    pos = graph.pos.detach().cpu().double().numpy()
    edge_index = graph.edge_index.detach().cpu().numpy()
    shifts = graph.shifts.detach().cpu().double().numpy()
    cell = graph.cell.detach().cpu().double().numpy().reshape(-1, 3, 3)[0]
    z = graph.z.detach().cpu().numpy()
    shortest = {}
    neighbours = np.zeros(len(z), dtype=np.int64)
    for start in range(0, edge_index.shape[1], _EDGE_SLICE):
        i, j = edge_index[:, start : start + _EDGE_SLICE]
        dist = np.linalg.norm(pos[j] - pos[i] + shifts[start : start + _EDGE_SLICE] @ cell, axis=1)
        code = np.minimum(z[i], z[j]) * 1000 + np.maximum(z[i], z[j])
        order = np.lexsort((dist, code))  # by pair, then distance: the first of each pair is its shortest
        first = order[np.flatnonzero(np.r_[True, np.diff(code[order]) != 0])]
        for k in first:
            c = int(code[k])
            if c not in shortest or dist[k] < shortest[c][0]:
                shortest[c] = (float(dist[k]), int(i[k]), int(j[k]))
        neighbours += np.bincount(i, minlength=len(z))
    return shortest, int(neighbours.max()) if len(z) else 0, z


def _reference(z, atomic_energies: Dict[str, float]) -> float:
    return float(sum(atomic_energies.get(chemical_symbols[int(n)], 0.0) for n in z))


def training_domain(graphs, atomic_energies: Optional[Dict[str, float]] = None) -> Dict:
    """The statistics above over training graphs (from :func:`sinet_ase.graph.atoms_to_graph`);
    ``atomic_energies``: per-element reference energies (eV) taken off the energy labels."""
    atomic_energies = {k: float(v) for k, v in (atomic_energies or {}).items()}
    min_distance: Dict[str, float] = {}
    max_neighbours = 0
    energies: List[float] = []
    for graph in graphs:
        shortest, most, z = _shortest_pairs(graph)
        for code, (d, _, _) in shortest.items():
            key = _pair(code // 1000, code % 1000)
            min_distance[key] = min(d, min_distance.get(key, np.inf))
        max_neighbours = max(max_neighbours, most)
        energy = getattr(graph, "energy", None)
        if energy is not None:
            energies.append((float(energy.reshape(-1)[0]) - _reference(z, atomic_energies)) / len(z))
    domain = {
        "min_distance": {k: round(v, 4) for k, v in sorted(min_distance.items())},
        "max_neighbours": max_neighbours,
    }
    if energies:
        domain["energy_per_atom"] = [float(np.min(energies)), float(np.max(energies))]
        domain["atomic_energies"] = atomic_energies
    return domain


def _numpy(tensor, dtype=None) -> np.ndarray:
    """A CPU numpy view (or copy) of a graph tensor, in ``dtype`` if given; the common case of
    a CPU tensor already in that dtype costs one call, not four (the check runs every MD step)."""
    if tensor.device.type != "cpu" or tensor.requires_grad or (dtype is not None and tensor.dtype != dtype):
        tensor = tensor.detach().cpu()
        tensor = tensor if dtype is None else tensor.to(dtype)
    return tensor.numpy()


def _severity(value: float, inside: float, far: float) -> int:
    """0 inside, 1 outside (beyond ``inside``), 2 far outside (beyond ``far``), for a
    quantity whose larger values are worse."""
    return 2 if value > far else 1 if value > inside else 0


class DomainCheck:
    """Judge structures against a training domain, fast enough for every MD step.

    A screen over all pairs with per-element-pair thresholds looked up in ``(119, 119)``
    tables (a few vectorised operations per call); sentences are built only for what lies
    outside. ``repulsive``: the model has a physical short-range term (ZBL,
    :mod:`sinet_ase.ops.zbl`), so short distances and high energies are not *far* outside
    (they still warn).
    """

    def __init__(self, domain: Dict, repulsive: bool = False):
        self.domain = domain
        self.repulsive = bool(repulsive)
        self.shortest = np.zeros((119, 119))  # 0: a pair never seen within the cutoff, not judged
        for key, d in (domain.get("min_distance") or {}).items():
            a, b = (atomic_numbers[s] for s in key.split("-"))
            self.shortest[a, b] = self.shortest[b, a] = float(d)
        far = 0.0 if self.repulsive else FAR_DISTANCE_FACTOR
        self.near = DISTANCE_FACTOR * self.shortest
        self.far = far * self.shortest
        self._references = {}  # atomic numbers (bytes) -> their reference energy: constant in MD

    def _reference(self, z: np.ndarray) -> float:
        key = z.tobytes()
        reference = self._references.get(key)
        if reference is None:
            if len(self._references) > 64:  # many compositions (a data set): keep a few
                self._references.clear()
            reference = self._references[key] = _reference(z, self.domain.get("atomic_energies", {}))
        return reference

    def __call__(self, graph, energy: Optional[float] = None) -> Tuple[List[str], List[str]]:
        """``(outside, far_outside)``: sentences on how ``graph`` (and its total ``energy``, eV)
        lies outside the domain, and far outside it (module docstring)."""
        outside: List[str] = []
        far: List[str] = []
        pos, shifts = _numpy(graph.pos, torch.float64), _numpy(graph.shifts, torch.float64)
        edge_index, z = _numpy(graph.edge_index), _numpy(graph.z)
        cell = _numpy(graph.cell, torch.float64).reshape(-1, 3, 3)[0]
        neighbours = np.zeros(len(z), dtype=np.int64)
        worst = {}  # pair code -> (distance, i, j) of its shortest pair below the warning threshold
        for start in range(0, edge_index.shape[1], _EDGE_SLICE):
            i, j = edge_index[:, start : start + _EDGE_SLICE]
            neighbours += np.bincount(i, minlength=len(z))
            zi, zj = z[i], z[j]
            dist = np.linalg.norm(pos[j] - pos[i] + shifts[start : start + _EDGE_SLICE] @ cell, axis=1)
            close = np.flatnonzero(dist < self.near[zi, zj])
            for k in close[np.argsort(dist[close], kind="stable")]:
                code = int(min(zi[k], zj[k]) * 1000 + max(zi[k], zj[k]))
                if code not in worst:
                    worst[code] = (float(dist[k]), int(i[k]), int(j[k]))
        for code in sorted(worst):
            d, i, j = worst[code]
            lo, hi = code // 1000, code % 1000
            key = _pair(lo, hi)
            if d < self.far[lo, hi]:
                far.append(
                    f"atoms {i} and {j} ({key}) are {d:.3f} Å apart, less than "
                    f"{FAR_DISTANCE_FACTOR:g} times the shortest {key} distance in the "
                    f"training data ({self.shortest[lo, hi]:.3f} Å)"
                )
            else:
                outside.append(
                    f"atoms {i} and {j} ({key}) are {d:.3f} Å apart, much closer than the "
                    f"shortest {key} distance in the training data ({self.shortest[lo, hi]:.3f} Å)"
                )
        most = self.domain.get("max_neighbours")
        count = int(neighbours.max()) if len(z) else 0
        if most:
            level = _severity(count, NEIGHBOUR_FACTOR * most, FAR_NEIGHBOUR_FACTOR * most)
            if level:
                (far if level == 2 else outside).append(
                    f"an atom has {count} neighbours within the cutoff, the training data at most "
                    f"{most} (a too-small or degenerate periodic cell?)"
                )
        bounds = self.domain.get("energy_per_atom")
        if bounds and energy is not None and len(z):
            lo, hi = bounds
            margin = max(hi - lo, ENERGY_MARGIN)
            per_atom = (energy - self._reference(z)) / len(z)
            far_margin = FAR_ENERGY_MARGINS * margin
            level = max(
                _severity(lo - per_atom, margin, far_margin),  # a model with ZBL: high is physical
                _severity(per_atom - hi, margin, np.inf if self.repulsive else far_margin),
            )
            if level:
                (far if level == 2 else outside).append(
                    f"the energy is {per_atom:.4g} eV/atom above the atomic references, the "
                    f"training data's lies in [{lo:.4g}, {hi:.4g}] eV/atom"
                )
        return outside, far


def domain_problems(graph, domain: Optional[Dict], energy: Optional[float] = None) -> List[str]:
    """Sentences saying how the structure of ``graph`` (and its ``energy``) lies outside
    ``domain`` or far outside it (:class:`DomainCheck`); empty when it lies inside or there
    is no domain. Element pairs that never came within the cutoff in training are not judged."""
    if not domain:
        return []
    outside, far = DomainCheck(domain)(graph, energy)
    return far + outside


def report_domain(
    outside: List[str], far: List[str], mode: str, warned: bool = False, energy: Optional[float] = None
) -> bool:
    """Act on :class:`DomainCheck`'s sentences by ``mode``: ``"warn"`` (default) raises
    :class:`~sinet_ase.errors.OutOfDomainError` for a structure *far* outside and warns
    (:class:`OutOfDomainWarning`, unless ``warned`` already) for one outside; ``"raise"``
    raises for both; ``"ignore"`` does nothing. ``energy``: the model's, quoted in the
    error. Returns whether a warning has been given (``warned`` or now)."""
    if mode == "ignore" or not (outside or far):
        return warned
    if far or mode == "raise":
        from .errors import OutOfDomainError

        got = f" (it gave E = {energy:.6g} eV, not returned)" if energy is not None else ""
        if far:
            raise OutOfDomainError(
                "structure far outside the potential's training data: "
                + "; ".join(far + outside)
                + f". The energy and forces there are arbitrary{got}. Check the structure (atoms on "
                "top of each other, a too-small or degenerate periodic cell, a diverged MD run: "
                "a smaller timestep); out_of_domain='ignore' returns the numbers anyway"
            )
        raise OutOfDomainError(
            "structure outside the potential's training data: "
            + "; ".join(outside)
            + f". The energy and forces are not reliable there{got}"
        )
    if not warned:
        warnings.warn(
            "structure outside the potential's training data: "
            + "; ".join(outside)
            + ". The energy and forces are not reliable there (later structures outside it "
            "are not reported again; far outside it is an error)",
            OutOfDomainWarning,
            stacklevel=4,
        )
    return True
