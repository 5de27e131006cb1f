"""GPU checks: the same numbers on CUDA as on the CPU, symmetry on CUDA, and MD step times.

    python benchmarks/gpu_check.py check  [--out results/gpu_check.json]
    python benchmarks/gpu_check.py time   [--out results/gpu_md.json] [--steps 20]

``check`` (exits 1 on any failure, so a driver script can stop early):

* the shipped potential (``sinet-xtb-md17``) in float64 on three of its
  test structures: energy, forces and stress on ``cuda`` against ``cpu``;
* on ``cuda``: energy invariant and forces equivariant under a random
  rotation with inversion;
* the N-body model (SINet and SiFormer backbones, random weights, float64):
  ``cuda`` output against ``cpu``.

``time``: ms per velocity-Verlet step (energy + forces, ASE driving the
calculator, neighbour list on the CPU) of ``SINetCalculator(device="cuda")``
with random-weight SINet L = 1 and 2 (64 channels, 2 layers, r_max 5, the
MD benchmark's settings) on ethanol and fcc Cu cells of 864, 6,912 and
108,000 atoms, float32 and float64; and the N-body model's inference time per
batch of 100 systems.  Not a timed test: the numbers go to the JSON file and
benchmarks/README.md.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check(out_path):
    from ase.io import read
    from scipy.spatial.transform import Rotation

    from sinet_ase import SINetCalculator
    from sinet_ase.nbody.model import NBodySINet

    report, ok = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}, True
    frames = read(HERE.parent / "sinet_ase" / "potentials" / "sinet-xtb-md17_test_slice.extxyz", ":3")
    cpu = SINetCalculator.from_pretrained("sinet-xtb-md17", device="cpu", dtype="float64")
    gpu = SINetCalculator.from_pretrained("sinet-xtb-md17", device="cuda", dtype="float64")
    rows = []
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.center(vacuum=4.0)
        atoms.pbc = True  # a periodic box, so that the stress is defined
        a_cpu, a_gpu = atoms.copy(), atoms.copy()
        a_cpu.calc, a_gpu.calc = cpu, gpu
        row = dict(
            n_atoms=len(atoms),
            energy_rel=_rel(a_gpu.get_potential_energy(), a_cpu.get_potential_energy()),
            forces_rel=_rel(a_gpu.get_forces(), a_cpu.get_forces()),
            stress_rel=_rel(a_gpu.get_stress(), a_cpu.get_stress()),
        )
        # symmetry on the GPU: rotation with inversion (det -1)
        R = Rotation.random(random_state=k).as_matrix() * -1.0
        rot = atoms.copy()
        rot.positions = atoms.positions @ R.T
        rot.cell = atoms.cell @ R.T
        rot.calc = gpu
        row["rotated_energy_rel"] = _rel(rot.get_potential_energy(), a_gpu.get_potential_energy())
        row["rotated_forces_rel"] = _rel(rot.get_forces(), a_gpu.get_forces() @ R.T)
        rows.append(row)
        ok &= all(v < 1e-9 for key, v in row.items() if key != "n_atoms")
    report["potential_float64"] = rows
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    v = torch.randn(4, 5, 3, generator=g, dtype=torch.float64) * 0.5
    q = torch.where(torch.rand(4, 5, generator=g) < 0.5, -1.0, 1.0).double()
    for backbone in ("sinet", "siformer"):
        torch.manual_seed(0)
        model = NBodySINet(lmax=2, channels=16, num_layers=2, backbone=backbone).double()
        with torch.no_grad():
            ref = model(x, v, q)
            got = model.cuda()(x.cuda(), v.cuda(), q.cuda()).cpu()
        report[f"nbody_{backbone}_rel"] = _rel(got, ref)
        ok &= report[f"nbody_{backbone}_rel"] < 1e-10
    report["ok"] = bool(ok)
    Path(out_path).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if ok else 1


def time_md_gpu(out_path, steps):
    from ase.build import bulk

    from bench_md import SINET_CONFIG, count_edges, elements_of, systems, time_md
    from sinet_ase import SINet, SINetCalculator

    structures = systems()
    structures["cu_fcc_108000"] = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(30)
    results = []
    for name in ("ethanol_9", "cu_fcc_864", "cu_fcc_6912", "cu_fcc_108000"):
        atoms = structures[name]
        avg_nn = count_edges(atoms) / len(atoms) if len(atoms) < 20000 else 78.0
        for lmax in (1, 2):
            for dtype in ("float32", "float64"):
                if name == "cu_fcc_108000" and (lmax, dtype) != (1, "float32"):
                    continue  # one point at 10^5 atoms keeps the run short
                torch.manual_seed(0)
                model = SINet(elements=elements_of(name), lmax=lmax, **dict(SINET_CONFIG, avg_num_neighbors=avg_nn))
                # 10^5 atoms: edges in checkpointed chunks of 2M (about 8M edges in all)
                chunk = 2_000_000 if len(atoms) > 20000 else None
                calc = SINetCalculator(model, device="cuda", dtype=dtype, edge_chunk_size=chunk)
                torch.cuda.reset_peak_memory_stats()
                r = time_md(atoms, calc, n_warmup=3, n_steps=steps, max_seconds=30.0)
                r.update(
                    system=name,
                    model=f"sinet-l{lmax}",
                    dtype=dtype,
                    peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30,
                )
                for key in ("load_before", "load_after"):
                    r.pop(key, None)
                results.append(r)
                print(
                    f"{name:15s} sinet-l{lmax} {dtype:8s} {r['median_ms']:9.2f} ms/step "
                    f"{r['atom_steps_per_s']:12.0f} atom-steps/s  peak {r['peak_gpu_gib']:.2f} GiB",
                    flush=True,
                )
    report = dict(
        device=torch.cuda.get_device_name(0),
        torch=torch.__version__,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        results=results,
    )
    Path(out_path).write_text(json.dumps(report, indent=1))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["check", "time"])
    p.add_argument("--out", default=None)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA device")
    if a.what == "check":
        return check(a.out or HERE / "results" / "gpu_check.json")
    return time_md_gpu(a.out or HERE / "results" / "gpu_md.json", a.steps)


if __name__ == "__main__":
    raise SystemExit(main())
