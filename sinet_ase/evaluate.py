"""Errors of a model on labelled data files, per file and per config type (``sinet-eval``).

Each file is read with :func:`sinet_ase.potential.data.read_structures` (labels under the
names of a :class:`~sinet_ase.labels.LabelKeys`), evaluated in batches
(:func:`sinet_ase.graph.batch_graphs`), and grouped by ``atoms.info["config_type"]``
(``Default`` when absent). For a group of structures ``s`` with ``n_s`` atoms and
residuals ``dE_s = E_s - E_s^ref``, ``dF_ia``, ``dsigma_sab``:

=================  ======================================================  ===========
metric             definition                                              unit
=================  ======================================================  ===========
energy per atom    MAE ``mean_s |dE_s| / n_s``, RMSE ``sqrt(mean_s (dE_s / n_s)^2)``  meV/atom
energy             MAE ``mean_s |dE_s|``, RMSE ``sqrt(mean_s dE_s^2)``          meV
forces             over every component ``(i, a)`` of the structures with
                   force labels                                            meV/Å
stress             over the 9 components ``(a, b)`` of the fully periodic
                   structures with a stress (or virials) label             meV/Å^3
=================  ======================================================  ===========

A metric without data (no force labels, no periodic structure with stress) is ``None``.
Predictions can be written to extxyz beside the reference labels: ``SINet_energy``
(info, eV), ``SINet_forces`` (per-atom column, eV/Å) and, for periodic structures,
``SINet_stress`` (info, ``(3, 3)`` eV/Å^3, ASE's sign), as MACE writes ``MACE_energy``.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from ase import Atoms

from .errors import ConfigError, SINetInputError
from .labels import LabelKeys, config_type, get_energy, get_forces, get_stress

#: prefix of the prediction keys written to extxyz
PREFIX = "SINet_"


def predict(
    model: torch.nn.Module, frames: Sequence[Atoms], batch_size: int = 16, device: str = "cpu", source: str = ""
) -> List[Dict[str, Optional[np.ndarray]]]:
    """Energy (eV), forces ``(N, 3)`` (eV/Å) and, for fully periodic frames, stress
    ``(3, 3)`` (eV/Å^3, else None) of each frame, evaluated ``batch_size`` frames at a time."""
    from .graph import atoms_to_graph, batch_graphs

    graphs = []
    for k, atoms in enumerate(frames):
        try:
            graphs.append(atoms_to_graph(atoms, model.cutoff, model.elements))
        except SINetInputError as err:
            raise ConfigError(f"{source}, frame {k}: {err}" if source else str(err)) from err
    out: List[Dict[str, Optional[np.ndarray]]] = []
    for start in range(0, len(graphs), batch_size):
        chunk = frames[start : start + batch_size]
        periodic = [bool(np.all(a.pbc)) for a in chunk]
        batch = batch_graphs(graphs[start : start + batch_size]).to(device)
        result = model(batch, compute_forces=True, compute_stress=any(periodic))
        energy = result["energy"].detach().cpu().numpy()
        forces = result["forces"].detach().cpu().numpy()
        stress = result["stress"].detach().cpu().numpy() if any(periodic) else None
        offsets = np.cumsum([0] + [len(a) for a in chunk])
        for g, atoms in enumerate(chunk):
            out.append(
                {
                    "energy": float(energy[g]),
                    "forces": forces[offsets[g] : offsets[g + 1]].astype(np.float64),
                    "stress": stress[g].astype(np.float64) if periodic[g] else None,
                }
            )
    return out


def _rows(frames: Sequence[Atoms], preds, keys: LabelKeys) -> List[Dict]:
    """Per structure: config type, atom count and the residuals present (pred - ref)."""
    rows = []
    for atoms, pred in zip(frames, preds):
        f_ref = get_forces(atoms, keys)
        s_ref = get_stress(atoms, keys) if pred["stress"] is not None else None
        rows.append(
            {
                "config_type": config_type(atoms, keys),
                "n_atoms": len(atoms),
                "de": pred["energy"] - get_energy(atoms, keys),
                "df": None if f_ref is None else pred["forces"] - f_ref,
                "ds": None if s_ref is None else pred["stress"] - s_ref,
            }
        )
    return rows


def _mae_rmse(values: List[np.ndarray]):
    if not values:
        return None, None
    x = np.concatenate([np.ravel(v) for v in values])
    return float(np.mean(np.abs(x))), float(np.sqrt(np.mean(x**2)))


def metrics(rows: Sequence[Dict]) -> Dict[str, Optional[float]]:
    """Errors of a group of structures (module docstring), in meV units."""
    de = np.array([r["de"] for r in rows])
    n = np.array([r["n_atoms"] for r in rows])
    out: Dict[str, Optional[float]] = {"n_structures": len(rows), "n_atoms": int(n.sum())}
    pairs = {
        "energy_{}_mev_atom": _mae_rmse([de / n]),
        "energy_{}_mev": _mae_rmse([de]),
        "forces_{}_mev_a": _mae_rmse([r["df"] for r in rows if r["df"] is not None]),
        "stress_{}_mev_a3": _mae_rmse([r["ds"] for r in rows if r["ds"] is not None]),
    }
    for name, (mae, rmse) in pairs.items():
        out[name.format("mae")] = None if mae is None else 1000 * mae
        out[name.format("rmse")] = None if rmse is None else 1000 * rmse
    return out


def _grouped(rows: Sequence[Dict]) -> Dict:
    types = sorted({r["config_type"] for r in rows})
    return {
        "all": metrics(rows),
        "config_types": {t: metrics([r for r in rows if r["config_type"] == t]) for t in types},
    }


def evaluate_files(
    model: torch.nn.Module,
    paths: Sequence[str],
    keys: Optional[LabelKeys] = None,
    batch_size: int = 16,
    device: str = "cpu",
    require_forces: bool = False,
    require_stress: bool = False,
):
    """Errors of ``model`` on each file (all and per config type) and over all files.

    Every frame needs an energy label; with ``require_forces`` / ``require_stress`` every
    frame (but isolated atoms) needs that label too, else the metric covers the frames that
    have it. Returns ``(result, frames, predictions)``: ``result`` is
    ``{"files": {path: {"all": m, "config_types": {type: m}}}, "all": m}`` with ``m`` from
    :func:`metrics`; ``frames`` and ``predictions`` list every file's frames in order.
    """
    from .potential.data import read_structures

    keys = keys or LabelKeys()
    result: Dict = {"files": {}}
    all_rows, all_frames, all_preds = [], [], []
    for path in paths:
        frames = read_structures(path, require_forces=require_forces, require_stress=require_stress, keys=keys)
        preds = predict(model, frames, batch_size, device, str(path))
        try:
            rows = _rows(frames, preds, keys)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
        result["files"][str(path)] = _grouped(rows)
        all_rows += rows
        all_frames += frames
        all_preds += preds
    result["all"] = metrics(all_rows)
    return result, all_frames, all_preds


def write_predictions(frames: Sequence[Atoms], preds, path) -> None:
    """Frames with their reference labels and ``SINet_energy/forces/stress`` to extxyz."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    out = []
    for atoms, pred in zip(frames, preds):
        copy = atoms.copy()
        if atoms.calc is not None and getattr(atoms.calc, "results", None):
            copy.calc = SinglePointCalculator(copy, **atoms.calc.results)
        copy.info[PREFIX + "energy"] = pred["energy"]
        copy.arrays[PREFIX + "forces"] = pred["forces"]
        if pred["stress"] is not None:
            copy.info[PREFIX + "stress"] = pred["stress"]
        out.append(copy)
    write(str(path), out, format="extxyz")


_COLUMNS = [
    ("E MAE", "energy_mae_mev_atom"),
    ("E RMSE", "energy_rmse_mev_atom"),
    ("E MAE", "energy_mae_mev"),
    ("E RMSE", "energy_rmse_mev"),
    ("F MAE", "forces_mae_mev_a"),
    ("F RMSE", "forces_rmse_mev_a"),
    ("S MAE", "stress_mae_mev_a3"),
    ("S RMSE", "stress_rmse_mev_a3"),
]
_UNITS = ["meV/at", "meV/at", "meV", "meV", "meV/Å", "meV/Å", "meV/Å³", "meV/Å³"]


def format_table(result: Dict) -> str:
    """The metrics as text: one block per file (a row per config type and ``all``),
    and an ``all files`` row when there are several files."""
    width = max([len("config type")] + [len(t) for f in result["files"].values() for t in f["config_types"]]) + 2
    head = f"{'config type':<{width}}{'N':>7}" + "".join(f"{c:>10}" for c, _ in _COLUMNS)
    units = " " * (width + 7) + "".join(f"{u:>10}" for u in _UNITS)

    def row(name, m):
        cells = "".join(f"{'-':>10}" if m[k] is None else f"{m[k]:>10.3f}" for _, k in _COLUMNS)
        return f"{name:<{width}}{m['n_structures']:>7}{cells}"

    lines = []
    for path, file_result in result["files"].items():
        lines += [f"{path}:", head, units]
        types = file_result["config_types"]
        lines += [row(t, m) for t, m in types.items()]
        if len(types) > 1:
            lines.append(row("all", file_result["all"]))
        lines.append("")
    if len(result["files"]) > 1:
        lines += ["all files:", head, units, row("all", result["all"])]
    return "\n".join(lines).rstrip()
