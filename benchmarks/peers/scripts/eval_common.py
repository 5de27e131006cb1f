"""Identical scoring for every model: energy and force errors of an ASE calculator on an extxyz file.

Energies are total energies (meV per molecule); forces are all Cartesian components (meV/A).
Reference labels are read from the file's `energy=` / `forces` (via ASE's SinglePointCalculator).
"""

import json
import time
import numpy as np
from ase.io import read


def score(calc, test_file, out_json, extra=None, limit=None):
    frames = read(test_file, ":")
    if limit:
        frames = frames[:limit]
    e_ref, e_pred, f_ref, f_pred, nat = [], [], [], [], []
    t0 = time.perf_counter()
    for at in frames:
        e_ref.append(at.get_potential_energy())
        f_ref.append(at.get_forces().copy())
        a = at.copy()
        a.calc = calc
        e_pred.append(a.get_potential_energy())
        f_pred.append(a.get_forces().copy())
        nat.append(len(a))
    t = time.perf_counter() - t0
    de = (np.array(e_pred) - np.array(e_ref)) * 1000.0
    df = (np.concatenate(f_pred) - np.concatenate(f_ref)).ravel() * 1000.0
    nat = np.array(nat)
    res = {
        "test_file": test_file,
        "n_frames": len(frames),
        "energy_mae_meV_per_molecule": float(np.mean(np.abs(de))),
        "energy_rmse_meV_per_molecule": float(np.sqrt(np.mean(de**2))),
        "energy_mae_meV_per_atom": float(np.mean(np.abs(de / nat))),
        "energy_rmse_meV_per_atom": float(np.sqrt(np.mean((de / nat) ** 2))),
        "energy_mean_error_meV_per_molecule": float(np.mean(de)),
        "energy_mae_offset_free_meV_per_molecule": float(np.mean(np.abs(de - de.mean()))),
        "forces_mae_meV_per_A": float(np.mean(np.abs(df))),
        "forces_rmse_meV_per_A": float(np.sqrt(np.mean(df**2))),
        "eval_seconds": t,
        "eval_ms_per_frame_ase": 1000.0 * t / len(frames),
    }
    if extra:
        res.update(extra)
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)
    print(
        f"[score] {test_file} ({len(frames)} frames): "
        f"E MAE {res['energy_mae_meV_per_molecule']:.3f} RMSE {res['energy_rmse_meV_per_molecule']:.3f} meV/molecule | "
        f"F MAE {res['forces_mae_meV_per_A']:.3f} RMSE {res['forces_rmse_meV_per_A']:.3f} meV/A -> {out_json}"
    )
    return res
