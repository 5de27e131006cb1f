"""Command line of the charged N-body data set: generate (or load) and cache it, export the
splits in the evaluation format, print the trivial baselines.

``python -m sinet_ase.nbody.generate --out DIR`` writes the checksummed cache
(:func:`~sinet_ase.nbody.dataset.load_nbody_dataset`) and ``DIR/{train,valid,test}.npz``
(:func:`~sinet_ase.nbody.dataset.save_npz_split`). It sits above both the simulator and the
data set module, so neither imports the other's command line.
"""

import argparse
import time

from sinet_ase.nbody import dataset as ds


def main(argv=None) -> int:
    """CLI: generate + cache the full dataset, export splits, print baselines."""
    p = argparse.ArgumentParser(
        prog="python -m sinet_ase.nbody.generate",
        description="Generate (or load) and cache the charged N-body dataset "
        "(EGNN/SEGNN protocol) and print the trivial baselines.",
    )
    p.add_argument(
        "--out",
        default=None,
        help="cache/output directory (default: $SINET_ASE_CACHE/nbody or ~/.cache/sinet_ase/nbody)",
    )
    p.add_argument("--seed", type=int, default=ds.DEFAULT_SEED)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-valid", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument(
        "--no-export", action="store_true", help="do not write {train,valid,test}.npz in the evaluation format"
    )
    p.add_argument("--force", action="store_true", help="regenerate even if cached")
    a = p.parse_args(argv)

    t0 = time.perf_counter()
    data = ds.load_nbody_dataset(a.out, a.n_train, a.n_valid, a.n_test, a.seed, regenerate=a.force, verbose=True)
    elapsed = time.perf_counter() - t0
    out_dir = ds.resolve_cache_dir(a.out)
    print(f"cache: {ds.cache_path(out_dir, a.seed, a.n_train, a.n_valid, a.n_test)}")
    print(f"load/generate wall time: {elapsed:.1f} s")
    if not a.no_export:
        for name, split in data.items():
            path = out_dir / f"{name}.npz"
            ds.save_npz_split(path, split)
            print(f"wrote {path}")
    for name, split in data.items():
        b = ds.baseline_mse(split)
        print(
            f"{name:5s} N={len(split['x']):5d}  MSE no-motion={b['no_motion']:.4f}  "
            f"x+v*1.0={b['constant_velocity']:.4f}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
