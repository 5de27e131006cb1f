"""Committee (ensemble) of SINet models: mean prediction and its spread.

Several independently trained models (different seeds, and with ``valid_size``
different training subsets) agree where the training data constrain them and
disagree where they do not; their spread is the usual uncertainty estimate of
active learning. :class:`~sinet_ase.SINetCalculator` takes a committee as a list
of model files or objects, or as a glob string (``"runs/c/member_*/best_model.pt"``).

Results, beside the usual ones (which hold the committee mean):

==================  ============  ===============================================
key                 shape         meaning
==================  ============  ===============================================
energy_std          float         population std (ddof=0) of the members' energies, eV
forces_std          (n, 3)        std of each force component over members, eV/Å
stress_std          (6,)          std of each Voigt stress component, eV/Å^3 (when stress is computed)
energy_comm         (M,)          each member's energy, eV
forces_comm         (M, n, 3)     each member's forces, eV/Å (MACE's name)
stress_comm         (M, 6)        each member's stress (when stress is computed)
energy_var          float         ``energy_std ** 2`` (MACE's ``energy_var``, also ddof=0)
stress_var          (6,)          ``stress_std ** 2`` (MACE's ``stress_var``)
==================  ============  ===============================================

Names: ``*_std`` in the units of the quantity (what a threshold is set in); ``energy_var``,
``forces_comm``, ``stress_var`` as MACE's ``MACECalculator(model_paths=[...])``
returns them, so scripts written for MACE committees run unchanged. One
deliberate difference: MACE puts the per-member energies in ``energies``; here
``energies`` keeps ASE's meaning (per-atom energies, committee mean, what
``atoms.get_potential_energies()`` reads) and the per-member energies are
``energy_comm``. ``forces_std`` is per component, so it depends on the frame;
its row norm ``np.linalg.norm(forces_std, axis=1)`` (the root-mean-square
deviation of an atom's force vector from the mean) is rotation-invariant and is
the per-atom uncertainty to threshold.

The graph of a structure is built once and every member runs on it (members
must share cutoff and elements, checked when the calculator is made).
"""

import glob
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

#: the results a committee adds to the calculator's usual ones
COMMITTEE_PROPERTIES = (
    "energy_std",
    "forces_std",
    "stress_std",
    "energy_comm",
    "forces_comm",
    "stress_comm",
    "energy_var",
    "stress_var",
)

_GLOB_CHARACTERS = "*?["


def committee_specs(model) -> Optional[List[Union[str, Path, torch.nn.Module]]]:
    """The members of a committee specification, or ``None`` for a single model.

    A list or tuple is a committee (of one or more); a string holding ``*``, ``?`` or
    ``[`` that is not itself an existing file is a glob pattern, expanded in sorted
    order (an error if it matches nothing). Anything else is a single model.
    """
    if isinstance(model, (list, tuple)):
        if not model:
            raise ValueError("the committee is empty: give at least one model (a path or module)")
        return list(model)
    if isinstance(model, str) and any(c in model for c in _GLOB_CHARACTERS) and not Path(model).exists():
        paths = sorted(glob.glob(model))
        if not paths:
            raise FileNotFoundError(f"the committee pattern {model!r} matches no file")
        return paths
    return None


def check_members(models: Sequence[torch.nn.Module]) -> None:
    """Raise ``ValueError`` unless every member has the first one's cutoff and element set
    (one graph serves all, and every element must mean the same to each)."""
    first = models[0]
    for k, member in enumerate(models[1:], 1):
        if abs(float(member.cutoff) - float(first.cutoff)) > 1e-12:
            raise ValueError(
                f"committee members must share the cutoff: member 0 has "
                f"{first.cutoff} Å, member {k} has {member.cutoff} Å"
            )
        if sorted(member.elements) != sorted(first.elements):
            raise ValueError(
                f"committee members must share the elements: member 0 knows "
                f"{', '.join(first.elements)}, member {k} knows "
                f"{', '.join(member.elements)}"
            )


def evaluate_committee(
    models: Sequence[torch.nn.Module], graph, compute_stress: bool, compute_stresses: bool = False
) -> Dict:
    """Run every member on the same ``graph`` (one structure) and return the calculator's
    results: committee means under the usual names plus the keys of the module table
    (and the mean per-atom ``stresses`` (n, 6) with ``compute_stresses``)."""
    energy, energies, forces, stress, stresses = [], [], [], [], []
    for model in models:
        out = model(graph, compute_forces=True, compute_stress=compute_stress, compute_stresses=compute_stresses)
        energy.append(float(out["energy"].item()))
        energies.append(out["energies"].detach().cpu().numpy().astype(np.float64))
        forces.append(out["forces"].detach().cpu().numpy().astype(np.float64))
        if compute_stress:
            stress.append(full_3x3_to_voigt_6_stress(out["stress"][0].detach().cpu().numpy().astype(np.float64)))
        if compute_stresses:
            stresses.append(full_3x3_to_voigt_6_stress(out["stresses"].detach().cpu().numpy().astype(np.float64)))
    energy = np.array(energy)
    if not np.all(np.isfinite(energy)):
        bad = np.where(~np.isfinite(energy))[0].tolist()
        raise FloatingPointError(
            f"committee member(s) {bad} returned a non-finite energy; the structure is far "
            "outside what they were trained on, or the weights are damaged"
        )
    forces = np.stack(forces)
    mean_energy = float(energy.mean())
    results = {
        "energy": mean_energy,
        "free_energy": mean_energy,
        "energies": np.stack(energies).mean(axis=0),
        "forces": forces.mean(axis=0),
        "energy_std": float(energy.std()),
        "forces_std": forces.std(axis=0),
        "energy_comm": energy,
        "forces_comm": forces,
        "energy_var": float(energy.var()),
    }
    if compute_stress:
        stress = np.stack(stress)
        results.update(
            stress=stress.mean(axis=0), stress_std=stress.std(axis=0), stress_comm=stress, stress_var=stress.var(axis=0)
        )
    if compute_stresses:
        results["stresses"] = np.stack(stresses).mean(axis=0)
    return results
