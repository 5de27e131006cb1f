"""benchmarks/bench_predict.py runs, writes its rows, and finds predict equal to the calculator."""

import json
import sys

import pytest

sys.path.insert(0, "benchmarks")

import bench_predict  # noqa: E402


@pytest.mark.slow  # loads the shipped potential and times three passes: seconds
def test_quick_run_writes_rows_with_every_key_and_equal_results(tmp_path):
    out = tmp_path / "predict.json"
    argv = ["--quick", "--frames", "3", "--batch-sizes", "1,2", "--dtypes", "float64", "--threads", "1"]
    bench_predict.main(argv + ["--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["method"], r["batch_size"]) for r in rows] == [("one_by_one", 1), ("predict", 1), ("predict", 2)]
    for row in rows:
        assert set(bench_predict.ROW_KEYS) <= set(row)
        assert row["set"] == "xtb" and row["dtype"] == "float64" and row["frames"] == 3
        assert row["atoms_per_s"] == pytest.approx(row["frames_per_s"] * row["atoms"] / 3)
    # the first frames of three different molecules (aspirin 21, azobenzene 24, benzene 12 atoms)
    assert rows[0]["atoms"] == 21 + 24 + 12
    for row in rows[1:]:  # batched and one-by-one give the same numbers (float64)
        assert row["max_energy_diff_eV"] < 1e-9 and row["max_force_diff_eV_per_A"] < 1e-9
    assert result["machine"]["cpu"] and result["machine"]["threads"] == 1
