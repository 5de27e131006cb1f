"""benchmarks/bench_md.py: model variants of the compiled-peers benchmark and its check of a
compiled path against the eager model (the peers' paths need their venvs and are checked by
``bench_md_compiled_peers.py`` itself)."""

import sys

import pytest

sys.path.insert(0, "benchmarks")

import bench_md  # noqa: E402


def test_eager_variant_names():
    assert bench_md.eager_variant("sinet", "l1t1c") == "l1t1"
    assert bench_md.eager_variant("sinet", "l2t3a") == "l2t3"
    assert bench_md.eager_variant("sinet", "l1t1") is None
    assert bench_md.eager_variant("nequip", "s:aoti") == "s"
    assert bench_md.eager_variant("mace", "l2:compile") == "l2"
    assert bench_md.eager_variant("mace", "l2") is None


def test_sinet_variants_and_default_warmup():
    atoms = bench_md.systems()["ethanol_9"]
    eager, info = bench_md._build_sinet("l1t1", "ethanol_9", atoms, "float32")
    assert info["compiled"] is False and eager.model.backbone.edge_chunk_size is None
    default, info = bench_md._build_sinet("l1t1a", "ethanol_9", atoms, "float32")
    assert info["compiled"] == "auto" and info["default_path"].startswith("compiled")
    from sinet_ase.fastpath import AUTO_COMPILE_AFTER

    assert bench_md.default_warmup(info, 3) == AUTO_COMPILE_AFTER + 3
    assert bench_md.default_warmup({"default_path": "chunked eager"}, 3) == 3
    assert bench_md.default_warmup({}, 3) == 3  # eager and compiled variants


def test_verify_against_eager_passes_and_fails():
    atoms = bench_md.systems()["ethanol_9"]
    cfg = {"system": "ethanol_9", "dtype": "float64", "stress": False}
    # the default calculator runs its first calls eagerly: same numbers as the eager model
    calc, _ = bench_md._build_sinet("l1t1a", "ethanol_9", atoms, "float64")
    r = bench_md.verify_against_eager("sinet", "l1t1a", cfg, atoms, calc)
    assert r["verify"] == "pass" and r["worst_rel_err"] <= 1e-12
    assert len(r["structures"]) == 3 and len({s["energy"] for s in r["structures"]}) == 3

    class Wrong(type(calc)):  # a "compiled" path whose forces are 1e-6 off
        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.results["forces"] = self.results["forces"] * (1 + 1e-6)

    wrong, _ = bench_md._build_sinet("l1t1", "ethanol_9", atoms, "float64")
    wrong.__class__ = Wrong
    r = bench_md.verify_against_eager("sinet", "l1t1c", cfg, atoms, wrong)
    assert r["verify"] == "FAIL" and r["worst_rel_err"] == pytest.approx(1e-6, rel=1e-3)
    assert bench_md.verify_against_eager("sinet", "l1t1", cfg, atoms, calc)["verify"].startswith("eager")
