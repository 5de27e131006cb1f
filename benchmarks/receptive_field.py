"""How many message-passing steps each benchmarked model makes: the matched layer count.

``bench_md.py`` compares SINet with MACE and NequIP "at matched layers". SINet's
``num_layers`` counts the Scalar Interaction layers *after* the embedding, and the
embedding is itself a neighbour sum (``sum_j R(r_ij) z_j Y(r_ij)``); NequIP's ``num_layers``
and MACE's ``num_interactions`` count every convolution, the first of which acts on the
species embedding. This script measures the count instead of reading it from the code:
on a zig-zag chain of Cu atoms 4 Å apart (only nearest neighbours inside the 5 Å cutoff),
it moves atom ``k`` and reports whether atom 0's energy changes. A model that makes
``T`` message-passing steps sees ``T`` atoms along the chain.

    MACE_PYTHON=/tmp/venv_mace/bin/python NEQUIP_PYTHON=/tmp/venv_nequip/bin/python \\
        python benchmarks/receptive_field.py --models sinet-l1t1 sinet-l2 sinet-l2t3 sinet-l2t4 \\
        nequip-s nequip-m mace-l2

Each model runs with random weights (seed 0) in float64, in the interpreter that
``bench_md.py`` uses for it (``MACE_PYTHON`` / ``NEQUIP_PYTHON``). Prints one line per
model; ``--json`` writes them too.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_md  # noqa: E402  (the model builders and their interpreters)

CHAIN_LENGTH = 8
SPACING = 4.0  # Å: nearest neighbours only, with the benchmark's 5 Å cutoff
NUDGE = 0.2  # Å, moves atom k off the chain axis


def chain(displaced=None):
    import numpy as np
    from ase import Atoms

    positions = np.array([[SPACING * i, 0.3 * (i % 2), 0.0] for i in range(CHAIN_LENGTH)])
    if displaced is not None:
        positions[displaced, 1] += NUDGE
    return Atoms(f"Cu{CHAIN_LENGTH}", positions=positions)


def reach_of(spec):
    """Atoms ``1..CHAIN_LENGTH-1`` whose move changes atom 0's energy, for ``spec`` (e.g. ``nequip-s``)."""
    family, variant = bench_md.parse_model(spec)
    build = bench_md.MODELS[family][0]

    def energy_of_atom0(atoms):
        calc, _ = build(variant, "cu_chain", atoms, "float64")
        atoms.calc = calc
        return float(atoms.get_potential_energies()[0])

    base = energy_of_atom0(chain())
    moved = [k for k in range(1, CHAIN_LENGTH) if abs(energy_of_atom0(chain(k)) - base) > 1e-12]
    return dict(model=spec, atoms_seen=moved, message_passing_steps=max(moved, default=0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["sinet-l1t1", "sinet-l2", "nequip-s", "mace-l2"])
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(reach_of(args.worker)))
        return
    rows = []
    for spec in args.models:
        python, var = bench_md.interpreter_for(spec)
        if not python:
            raise SystemExit(f"{spec} needs {var} pointing at an interpreter that has the package")
        out = subprocess.run(
            [python, "-W", "ignore", os.path.abspath(__file__), "--worker", spec],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"),
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{spec:14s} message-passing steps {row['message_passing_steps']}  "
            f"(atom 0 sees chain atoms {row['atoms_seen']})",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
