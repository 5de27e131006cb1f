"""The domain of validity of a trained potential: statistics of its training data.

A potential is only as good as the structures it was trained on: two atoms
closer than any pair in the training data, or a periodic cell so small that
an atom meets its own image, give energies that mean nothing (the model has
no built-in short-range repulsion, so they may be hugely negative). The
trainer stores :func:`training_domain` of the training set in the exported
model's metadata (``training_domain``), and :class:`~sinet_ase.SINetCalculator`
checks each structure against it (:func:`domain_problems`), warning with an
:class:`OutOfDomainWarning` (or raising, by option).

Stored statistics (JSON-plain, so a model file keeps loading safely):

- ``min_distance``: per element pair (symbols in atomic-number order, ``"H-C"``),
  the shortest distance (Å) within the cutoff, periodic images included;
- ``max_neighbours``: the largest number of neighbours within the cutoff of one atom;
- ``energy_per_atom``: ``[min, max]`` of the energy labels per atom (eV), less the
  per-element reference energies ``atomic_energies`` (also stored) when given, so that
  structures of another composition compare; only when the graphs carry energies.
"""

import warnings
from typing import Dict, List, Optional

import numpy as np
from ase.data import chemical_symbols

#: a distance below this fraction of the shortest training distance of its pair is out of domain
DISTANCE_FACTOR = 0.75
#: more neighbours than this factor times the training maximum is out of domain
NEIGHBOUR_FACTOR = 2.0


class OutOfDomainWarning(UserWarning):
    """A structure outside the training data's domain: the result is not reliable."""


def _pair(za: int, zb: int) -> str:
    lo, hi = sorted((int(za), int(zb)))
    return f"{chemical_symbols[lo]}-{chemical_symbols[hi]}"


#: edges handled at a time by :func:`_shortest_pairs` (bounds its memory on large structures)
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
        i, j = edge_index[:, start:start + _EDGE_SLICE]
        dist = np.linalg.norm(pos[j] - pos[i] + shifts[start:start + _EDGE_SLICE] @ cell, axis=1)
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
    domain = {"min_distance": {k: round(v, 4) for k, v in sorted(min_distance.items())},
              "max_neighbours": max_neighbours}
    if energies:
        domain["energy_per_atom"] = [float(np.min(energies)), float(np.max(energies))]
        domain["atomic_energies"] = atomic_energies
    return domain


def domain_problems(graph, domain: Optional[Dict], energy: Optional[float] = None) -> List[str]:
    """Sentences saying how the structure of ``graph`` (and its ``energy``) lies outside
    ``domain``; empty when it lies inside or there is no domain. Element pairs that never
    came within the cutoff in training are not judged."""
    if not domain:
        return []
    problems = []
    pairs, count, z = _shortest_pairs(graph)
    shortest = domain.get("min_distance", {})
    for code in sorted(pairs):
        key = _pair(code // 1000, code % 1000)
        if key not in shortest:
            continue
        d, i, j = pairs[code]
        if d < DISTANCE_FACTOR * shortest[key]:
            problems.append(
                f"atoms {i} and {j} ({key}) are {d:.3f} Å apart, much closer than the shortest "
                f"{key} distance in the training data ({shortest[key]:.3f} Å)")
    most = domain.get("max_neighbours")
    if most and count > NEIGHBOUR_FACTOR * most:
        problems.append(f"an atom has {count} neighbours within the cutoff, the training data "
                        f"at most {most} (a too-small or degenerate periodic cell?)")
    bounds = domain.get("energy_per_atom")
    if bounds and energy is not None and len(z):
        lo, hi = bounds
        margin = max(hi - lo, 1.0)
        per_atom = (energy - _reference(z, domain.get("atomic_energies", {}))) / len(z)
        if not lo - margin <= per_atom <= hi + margin:
            problems.append(f"the energy is {per_atom:.4g} eV/atom above the atomic references, the "
                            f"training data's lies in [{lo:.4g}, {hi:.4g}] eV/atom")
    return problems


def report_domain(problems: List[str], mode: str) -> bool:
    """Warn (``mode="warn"``), raise :class:`~sinet_ase.errors.SINetInputError` (``"raise"``)
    or do nothing (``"ignore"``) about :func:`domain_problems`; True when it warned."""
    if not problems or mode == "ignore":
        return False
    text = ("structure outside the potential's training data: " + "; ".join(problems) +
            ". The energy and forces are not reliable there")
    if mode == "raise":
        from .errors import SINetInputError

        raise SINetInputError(text)
    warnings.warn(text + " (later structures outside it are not reported again)",
                  OutOfDomainWarning, stacklevel=4)
    return True
