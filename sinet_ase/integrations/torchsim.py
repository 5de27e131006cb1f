"""torch-sim adapter: a SINet potential as a torch-sim ``ModelInterface``.

torch-sim runs MD, relaxations and other workflows on many structures at once, as one
batched ``SimState`` (positions ``(N, 3)``, cells ``(G, 3, 3)`` as column vectors,
``system_idx`` ``(N,)``). :class:`SINetModel` evaluates such a state in one model call::

    import torch_sim as ts
    from sinet_ase.integrations.torchsim import SINetModel

    model = SINetModel("my_model.pt")                 # or a shipped name, or a SINet object
    state = ts.io.atoms_to_state([crystal_a, crystal_b], model.device, model.dtype)
    out = model(state)    # energy (G,), forces (N, 3), stress (G, 3, 3) in eV, eV/Å, eV/Å^3

The graphs are built as :class:`~sinet_ase.SINetCalculator` builds them (the project's
neighbour lists, validation and clear errors, on the CPU), joined into one batch and
evaluated in one call (as :func:`~sinet_ase.predict`), so every number equals the
calculator's on each structure. Stress follows ASE's sign (positive = tensile), as
torch-sim's other models; it needs every structure periodic in all three directions
(make the model with ``compute_stress=False`` for molecules).
"""

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from ase import Atoms

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as err:  # pragma: no cover - exercised only without torch-sim
    raise ImportError(
        "the torch-sim adapter needs torch-sim: pip install 'sinet-ase[torchsim]' (or pip install torch-sim-atomistic)"
    ) from err

from ..errors import SINetInputError
from ..graph import atoms_to_graph, batch_graphs
from ..inference import prepare_model

_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


class SINetModel(ModelInterface):
    """A SINet energy model for torch-sim.

    Args:
        model: a model file, the name of a shipped potential or a SINet model object
            (copied).
        device: where the model runs (default: CUDA if available, else CPU); states on
            another device are moved.
        dtype: ``torch.float64`` (default, for MD) or ``torch.float32``; the network runs
            in it and the outputs have it.
        compute_forces: return ``forces`` (N, 3), eV/Å (``-dE/dx`` by autograd).
        compute_stress: return ``stress`` (G, 3, 3), eV/Å^3 (``(1/V) dE/d epsilon``).
        per_atom_stresses: also return ``stresses`` (N, 3, 3), the per-atom stresses that
            sum to the stress (:class:`~sinet_ase.SINet`).

    ``forward(state)`` returns ``energy`` (G,) in eV, and the arrays above, detached.
    """

    def __init__(
        self,
        model: Union[str, Path, torch.nn.Module],
        device: Optional[Union[str, torch.device]] = None,
        dtype: torch.dtype = torch.float64,
        compute_forces: bool = True,
        compute_stress: bool = True,
        per_atom_stresses: bool = False,
    ):
        super().__init__()
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self._dtype = dtype
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self.per_atom_stresses = bool(per_atom_stresses)
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff
        self.model = prepare_model(model, self._device, _DTYPE_NAMES[dtype])

    @property
    def cutoff(self) -> float:
        return self.model.cutoff

    @property
    def elements(self):
        return self.model.elements

    def _structures(self, state):
        """One ``ase.Atoms`` per system of ``state`` (CPU, float64: the graph builder's input)."""
        positions = state.positions.detach().to("cpu", torch.float64).numpy()
        cells = state.row_vector_cell.detach().to("cpu", torch.float64).numpy()  # rows, as ASE
        numbers = state.atomic_numbers.detach().cpu().numpy()
        system_idx = state.system_idx.detach().cpu().numpy()
        # torch-sim 0.3 keeps one bool for all directions; later versions may keep three
        pbc = np.broadcast_to(np.asarray(torch.as_tensor(state.pbc).cpu(), dtype=bool), (3,))
        n_systems = int(system_idx.max()) + 1 if len(system_idx) else 0
        if len(system_idx) and np.any(np.diff(system_idx) < 0):
            raise SINetInputError(
                "the state's atoms must be grouped by system (system_idx non-decreasing), as torch-sim builds states"
            )
        structures = []
        for g in range(n_systems):
            mask = system_idx == g
            if not mask.any():
                raise SINetInputError(f"system {g} of the state has no atoms")
            structures.append(Atoms(numbers=numbers[mask], positions=positions[mask], cell=cells[g], pbc=pbc))
        return structures, bool(pbc.all())

    def forward(self, state, **kwargs) -> dict:
        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"]))
        structures, periodic = self._structures(state)
        if self._compute_stress or self.per_atom_stresses:
            if not periodic:
                raise SINetInputError(
                    "stress needs structures periodic in all three directions (the state's "
                    f"pbc is {state.pbc}); make the model with compute_stress=False (and "
                    "per_atom_stresses=False) for molecules"
                )
        graphs = []
        for g, atoms in enumerate(structures):
            try:
                graphs.append(atoms_to_graph(atoms, self.model.cutoff, self.model.elements))
            except SINetInputError as err:
                err.args = (f"system {g}: {err}",)
                raise
        graph = batch_graphs(graphs).to(self._device)
        out = self.model(
            graph,
            compute_forces=self._compute_forces,
            compute_stress=self._compute_stress,
            compute_stresses=self.per_atom_stresses,
        )
        if not torch.all(torch.isfinite(out["energy"])):
            bad = torch.nonzero(~torch.isfinite(out["energy"])).flatten().tolist()
            raise FloatingPointError(
                f"the model returned a non-finite energy for system(s) "
                f"{bad}; they are far outside what it was trained on"
            )
        device, dtype = state.positions.device, self._dtype
        results = {"energy": out["energy"].detach().to(device, dtype)}
        if self._compute_forces:
            results["forces"] = out["forces"].detach().to(device, dtype)
        if self._compute_stress:
            results["stress"] = out["stress"].detach().to(device, dtype)
        if self.per_atom_stresses:
            results["stresses"] = out["stresses"].detach().to(device, dtype)
        return results
