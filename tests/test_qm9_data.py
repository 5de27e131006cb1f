"""Tests of the QM9 loader (sinet_ase.qm9.source, .cache, .split, .targets).

Speed: parsing all 130,831 molecules takes 30-40 s, so the parser tests build
a cache from a *mini* qm9pack directory holding only the rows they need
(copied verbatim from the installed CSVs; built once per session, < 1 s).
Only ``test_full_cache`` touches the full data, and only if the full cache
already exists (``load_qm9()`` once, ~2 s to load) or
``SINET_ASE_QM9_FULL_TEST=1`` asks for it to be built.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from sinet_ase.qm9 import cache as qm9_cache
from sinet_ase.qm9 import source
from sinet_ase.qm9 import targets as T
from sinet_ase.qm9.cache import QM9CacheError, load_qm9
from sinet_ase.qm9.split import load_split, qm9_split, save_split
from sinet_ase.qm9.targets import HARTREE_TO_MEV, TARGET_NAMES, TARGETS

needs_qm9pack = pytest.mark.skipif(
    importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed (extra sinet-ase[qm9])"
)

# Molecules copied into the mini data set, by QM9 index (file part1/2/3):
#   1 methane, 2 ammonia, 4 acetylene ("0." and "1." numbers), 29 (two
#   frequency lists), 3574 ("-7.E-6" Mulliken charge), 44747 (first row of
#   part2), 89009 (first row of part3).
PART_ROWS = {"qm9_part1.csv": [1, 2, 4, 29, 3574], "qm9_part2.csv": [44747], "qm9_part3.csv": [89009]}
MINI_IDS = [i for ids in PART_ROWS.values() for i in ids]

NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _raw_lines(path: Path, ids) -> dict:
    """Header and the verbatim lines of molecules ``ids`` (one molecule per line)."""
    wanted = {f'"dsgdb9nsd_{i:06d}.xyz"': i for i in ids}
    out = {}
    with open(path, encoding="utf-8") as fh:
        header = fh.readline()
        for line in fh:
            key = line[:22]
            if key in wanted:
                out[wanted[key]] = line
                if len(out) == len(wanted):
                    break
    assert len(out) == len(wanted), f"rows {set(wanted.values()) - set(out)} not in {path}"
    return {"header": header, "rows": out}


@pytest.fixture(scope="session")
def raw_rows():
    """{qm9 index: {column: raw string}} for the mini molecules, via a plain split."""
    import csv

    src = source.qm9pack_data_dir()
    rows = {}
    for name, ids in PART_ROWS.items():
        got = _raw_lines(src / name, ids)
        header = next(csv.reader([got["header"]]))
        for i, line in got["rows"].items():
            rows[i] = dict(zip(header, next(csv.reader([line]))))
    return rows


@pytest.fixture(scope="session")
def mini_source(tmp_path_factory):
    """A qm9pack-like data directory with only the MINI_IDS rows."""
    src = source.qm9pack_data_dir()
    dst = tmp_path_factory.mktemp("qm9pack_mini")
    for name, ids in PART_ROWS.items():
        got = _raw_lines(src / name, ids)
        (dst / name).write_text(got["header"] + "".join(got["rows"][i] for i in ids))
    # Polarizabilities of all molecules up to 3600 plus the part2/3 ones: the
    # loader must pick the right rows out of a larger file.
    with open(src / source.QM9PACK_POLARIZABILITY_FILE, encoding="utf-8") as fh:
        header = fh.readline()
        keep = [ln for ln in fh if int(ln[11:17]) <= 3600 or int(ln[11:17]) in MINI_IDS]
    (dst / source.QM9PACK_POLARIZABILITY_FILE).write_text(header + "".join(keep))
    return dst


@pytest.fixture(scope="session")
def mini_cache(tmp_path_factory, mini_source):
    cache = tmp_path_factory.mktemp("qm9_cache")
    load_qm9(cache, source_dir=mini_source)
    return cache


@pytest.fixture(scope="session")
def mini(mini_cache):
    return load_qm9(mini_cache)


def _floats(field: str) -> np.ndarray:
    return np.array([float(t) for t in NUM.findall(field)])


# ---------------------------------------------------------------------------
# Parsing against the raw CSV
# ---------------------------------------------------------------------------


@needs_qm9pack
def test_mini_rows_in_order(mini):
    assert mini.index.tolist() == MINI_IDS
    assert mini.qm9pack_version.startswith("custom:")


@needs_qm9pack
def test_methane_matches_csv(mini):
    i = mini.row_of(1)
    assert i == 0
    assert mini.numbers_of(i).tolist() == [6, 1, 1, 1, 1]
    # Literal values of qm9_part1.csv, molecule 1.
    np.testing.assert_array_equal(
        mini.positions_of(i),
        [
            [-0.0126981359, 1.0858041578, 0.0080009958],
            [0.002150416, -0.0060313176, 0.0019761204],
            [1.0117308433, 1.4637511618, 0.0002765748],
            [-0.540815069, 1.4475266138, -0.8766437152],
            [-0.5238136345, 1.4379326443, 0.9063972942],
        ],
    )
    np.testing.assert_array_equal(mini.mulliken_charges[0:5], [-0.535689, 0.133921, 0.133922, 0.133923, 0.133923])
    np.testing.assert_array_equal(
        mini.frequencies_of(i),
        [1341.307, 1341.3284, 1341.365, 1562.6731, 1562.7453, 3038.3205, 3151.6034, 3151.6788, 3151.7078],
    )
    raw = dict(zip(T.RAW_PROPERTY_NAMES, mini.raw_properties[i]))
    assert raw == {
        "A": 157.7118,
        "B": 157.70997,
        "C": 157.70699,
        "mu": 0.0,
        "alpha": 13.21,
        "homo": -0.3877,
        "lumo": 0.1171,
        "gap": 0.5048,
        "r2": 35.3641,
        "zpve": 0.044749,
        "U0": -40.47893,
        "U": -40.476062,
        "H": -40.475117,
        "G": -40.498597,
        "Cv": 6.469,
    }
    assert mini.smiles[i] == "C"
    np.testing.assert_array_equal(mini.polarizability_tensor[i], [13.211, 0.0, 13.211, 0.0, 0.0, 13.211])
    assert not mini.freq_duplicated[i]


@needs_qm9pack
def test_every_mini_row_matches_csv(mini, raw_rows):
    """All columns of all mini rows against an independent regex parse."""
    for qm9_id, row in raw_rows.items():
        i = mini.row_of(qm9_id)
        na = int(row["N_atoms"])
        assert mini.n_atoms[i] == na
        symbols = re.findall(r"'([A-Z][a-z]?)'", row["Elements"])
        assert mini.numbers_of(i).tolist() == [source._SYMBOL_TO_Z[s] for s in symbols]
        np.testing.assert_array_equal(mini.positions_of(i).ravel(), _floats(row["XYZ_Ang"]))
        s = slice(mini.offsets[i], mini.offsets[i + 1])
        np.testing.assert_array_equal(mini.mulliken_charges[s], _floats(row["Mulliken_pop"]))
        freqs = _floats(row["Harmonic_Freq_cmi"])
        if mini.freq_duplicated[i]:
            freqs = freqs[len(freqs) // 2 :]
        np.testing.assert_array_equal(mini.frequencies_of(i), freqs)
        np.testing.assert_array_equal(mini.raw_properties[i], [float(row[c]) for c in source._RAW_CSV_COLUMNS])
        assert mini.smiles[i] == row["SMILES"]


@needs_qm9pack
def test_zero_dot_numbers(mini, raw_rows):
    """Acetylene is written with "0." and "1." (invalid JSON)."""
    assert "0.,1.]" in raw_rows[4]["XYZ_Ang"] and raw_rows[4]["RotA_GHz"] == "0."
    i = mini.row_of(4)
    np.testing.assert_array_equal(
        mini.positions_of(i),
        [[0.5995394918, 0.0, 1.0], [-0.5995394918, 0.0, 1.0], [-1.6616385861, 0.0, 1.0], [1.6616385861, 0.0, 1.0]],
    )
    assert mini.raw_properties[i, T.RAW_PROPERTY_NAMES.index("A")] == 0.0
    assert mini.target("mu")[i] == 0.0
    assert len(mini.frequencies_of(i)) == 3 * 4 - 5  # linear molecule


@needs_qm9pack
def test_doubled_frequency_row(mini, raw_rows):
    raw = _floats(raw_rows[29]["Harmonic_Freq_cmi"])
    assert len(raw) == 2 * (3 * 10 - 6)
    i = mini.row_of(29)
    assert mini.freq_duplicated.tolist() == [q == 29 for q in MINI_IDS]
    np.testing.assert_array_equal(mini.frequencies_of(i), raw[24:])
    # The kept (second) list reproduces the ZPVE column: ZPVE = h c sum(nu) / 2.
    cm1_per_hartree = 219474.6313705
    zpve = mini.raw_properties[i, T.RAW_PROPERTY_NAMES.index("zpve")]
    assert abs(mini.frequencies_of(i).sum() / 2 / cm1_per_hartree - zpve) < 1e-6


@needs_qm9pack
def test_mulliken_exponent_without_mantissa_digits(mini, raw_rows):
    assert "-7.E-6" in raw_rows[3574]["Mulliken_pop"]
    i = mini.row_of(3574)
    s = slice(mini.offsets[i], mini.offsets[i + 1])
    assert mini.mulliken_charges[s][1] == -7e-6


@needs_qm9pack
def test_malformed_row_gives_clear_error(tmp_path, mini_source):
    for name in os.listdir(mini_source):
        shutil.copy(mini_source / name, tmp_path / name)
    part = tmp_path / "qm9_part1.csv"
    lines = part.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("[-0.0404260543,", "[", 1)  # ammonia loses a coordinate
    part.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"qm9_part1.csv, line 3.*11 coordinates"):
        load_qm9(tmp_path / "cache", source_dir=tmp_path)
    assert not (tmp_path / "cache" / qm9_cache.CACHE_FILENAME).exists()


# ---------------------------------------------------------------------------
# Units and atom references
# ---------------------------------------------------------------------------


def test_atomref_table_is_the_qm9_one():
    # U0 column of the atomref table of the QM9 paper (Ramakrishnan et al. 2014).
    assert {z: r[1] for z, r in T.ATOMREF_HARTREE.items()} == {
        1: -0.500273,
        6: -37.846772,
        7: -54.583861,
        8: -75.064579,
        9: -99.718730,
    }
    assert T.ATOMREF_HARTREE[6][1:5] == (-37.846772, -37.845355, -37.844411, -37.861317)
    assert T.ATOMREF_HARTREE[8][2] == -75.063163
    assert [t.name for t in TARGETS.values() if t.atomref] == ["U0", "U", "H", "G"]
    assert TARGET_NAMES == ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
    assert HARTREE_TO_MEV == 27211.386


@needs_qm9pack
def test_methane_targets_by_hand(mini):
    i = mini.row_of(1)
    t = dict(zip(TARGET_NAMES, mini.targets[i]))
    # Atomisation U0 of CH4 = U0(CH4) - U0(C) - 4 U0(H), Hartree -> meV.
    u0_hartree = -40.47893 - (-37.846772 + 4 * -0.500273)
    assert u0_hartree == pytest.approx(-0.631066, abs=1e-12)
    assert t["U0"] == pytest.approx(-0.631066 * 27211.386, abs=1e-6)  # -17172.18 meV
    assert t["U0"] == pytest.approx(-17172.1805, abs=1e-3)
    assert t["U"] == pytest.approx((-40.476062 + 37.845355 + 4 * 0.498857) * 27211.386, abs=1e-6)
    assert t["H"] == pytest.approx((-40.475117 + 37.844411 + 4 * 0.497912) * 27211.386, abs=1e-6)
    assert t["G"] == pytest.approx((-40.498597 + 37.861317 + 4 * 0.510927) * 27211.386, abs=1e-6)
    assert t["homo"] == pytest.approx(-0.3877 * 27211.386, rel=1e-15)
    assert t["lumo"] == pytest.approx(0.1171 * 27211.386, rel=1e-15)
    assert t["gap"] == pytest.approx(0.5048 * 27211.386, rel=1e-15)
    assert t["zpve"] == pytest.approx(0.044749 * 27211.386, rel=1e-15)
    assert (t["mu"], t["alpha"], t["r2"], t["Cv"]) == (0.0, 13.21, 35.3641, 6.469)


@needs_qm9pack
def test_atoms_object(mini):
    atoms = mini.atoms(0)
    assert atoms.get_chemical_formula() == "CH4"
    np.testing.assert_array_equal(atoms.positions, mini.positions_of(0))
    assert atoms.info["qm9_index"] == 1 and atoms.info["smiles"] == "C"
    for name in TARGET_NAMES:
        assert atoms.info[name] == mini.target(name)[0]
    np.testing.assert_array_equal(atoms.arrays["mulliken_charges"], mini.mulliken_charges[:5])
    atoms.positions[0, 0] = 99.0  # a copy: the data set is unchanged
    assert mini.positions[0, 0] != 99.0
    assert mini.atoms(-1).info["qm9_index"] == MINI_IDS[-1]
    assert [a.info["qm9_index"] for a in mini.iter_atoms([1, 2])] == MINI_IDS[1:3]
    with pytest.raises(IndexError):
        mini.atoms(len(mini))
    with pytest.raises(KeyError):
        mini.row_of(3)  # not in the mini set


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme, sizes", [("paper", (110_000, 10_000, 10_831)), ("egnn", (100_000, 17_748, 13_083))])
def test_split_sizes_disjoint_deterministic(scheme, sizes):
    split = qm9_split(130_831, scheme=scheme)
    assert split.sizes == sizes
    allidx = np.concatenate([split.train, split.valid, split.test])
    np.testing.assert_array_equal(np.sort(allidx), np.arange(130_831))  # disjoint, complete
    again = qm9_split(130_831, scheme=scheme, seed=0)
    for a, b in zip(split.as_dict().values(), again.as_dict().values()):
        np.testing.assert_array_equal(a, b)
    other = qm9_split(130_831, scheme=scheme, seed=1)
    assert not np.array_equal(split.test, other.test)


def test_split_is_the_seeded_legacy_permutation():
    # Pinned to RandomState (stream frozen by NumPy), so saved runs stay valid.
    perm = np.random.RandomState(0).permutation(130_831)
    assert qm9_split().test.tolist() == sorted(perm[120_000:].tolist())
    assert qm9_split(scheme="egnn").valid.tolist() == sorted(perm[100_000:117_748].tolist())


def test_split_errors():
    with pytest.raises(ValueError, match="unknown split scheme"):
        qm9_split(130_831, scheme="random")
    with pytest.raises(ValueError, match="needs more than"):
        qm9_split(1000)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_split(tmp_path, suffix):
    split = qm9_split(130_831, scheme="egnn", seed=3)
    ids = np.arange(1, 130_832) * 2
    path = save_split(split, tmp_path / "run" / f"split{suffix}", qm9_index=ids)
    back = load_split(path)
    assert (back.scheme, back.seed, back.n_total) == ("egnn", 3, 130_831)
    for a, b in zip(split.as_dict().values(), back.as_dict().values()):
        np.testing.assert_array_equal(a, b)
    if suffix == ".json":
        doc = json.loads(path.read_text())
        assert doc["sizes"] == {"train": 100_000, "valid": 17_748, "test": 13_083}
        assert doc["test_qm9_index"][:5] == (ids[split.test[:5]]).tolist()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    with pytest.raises(ValueError):
        save_split(split, tmp_path / "split.txt")


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------


@needs_qm9pack
def test_cache_reload_does_not_reparse(mini_cache, mini, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("cache was not used")

    monkeypatch.setattr(qm9_cache, "parse_qm9pack", boom)
    again = load_qm9(mini_cache)
    for name in ("index", "offsets", "numbers", "positions", "frequencies", "targets"):
        np.testing.assert_array_equal(getattr(again, name), getattr(mini, name))
    assert [p.name for p in mini_cache.iterdir()] == [qm9_cache.CACHE_FILENAME]  # no temp file left


@needs_qm9pack
@pytest.mark.parametrize("damage", ["flip", "truncate", "tamper"])
def test_corrupt_cache_is_detected(tmp_path, mini_cache, mini_source, damage):
    path = tmp_path / qm9_cache.CACHE_FILENAME
    shutil.copy(mini_cache / qm9_cache.CACHE_FILENAME, path)
    if damage == "flip":
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-1000])
    else:  # a well-formed npz whose content no longer matches its checksum
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["positions"] = arrays["positions"] + 1e-9
        np.savez(path, **arrays)
    with pytest.raises(QM9CacheError, match=r"rebuild=True") as err:
        load_qm9(tmp_path)
    assert str(path) in str(err.value)
    if damage == "tamper":
        assert "checksum mismatch" in str(err.value)
    fixed = load_qm9(tmp_path, rebuild=True, source_dir=mini_source)
    assert len(fixed) == len(MINI_IDS) and len(load_qm9(tmp_path)) == len(MINI_IDS)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SINET_ASE_CACHE", str(tmp_path))
    assert qm9_cache.default_cache_dir() == tmp_path / "qm9"
    monkeypatch.delenv("SINET_ASE_CACHE")
    assert qm9_cache.default_cache_dir() == Path.home() / ".cache" / "sinet_ase" / "qm9"


# ---------------------------------------------------------------------------
# Full data (only if the cache exists or is requested)
# ---------------------------------------------------------------------------


@needs_qm9pack
@pytest.mark.skipif(
    not (qm9_cache.default_cache_dir() / qm9_cache.CACHE_FILENAME).exists()
    and os.environ.get("SINET_ASE_QM9_FULL_TEST") != "1",
    reason="full QM9 cache not built (run load_qm9() once, ~40 s, or set SINET_ASE_QM9_FULL_TEST=1)",
)
def test_full_cache():
    data = load_qm9()
    assert len(data) == T.N_MOLECULES and data.index[0] == 1 and data.index[-1] == 133_885
    assert data.freq_duplicated.sum() == 334
    assert np.all(np.diff(data.index) > 0)
    assert set(np.unique(data.numbers).tolist()) == {1, 6, 7, 8, 9}
    # Every molecule: 3N-6 or 3N-5 frequencies, and the ZPVE column is half
    # their sum (imaginary modes, stored negative as in 129158, left out), to
    # the printed precision: this also pins the choice of the second list in
    # the 334 doubled rows.
    nf = np.diff(data.freq_offsets)
    assert np.all((nf == 3 * data.n_atoms - 6) | (nf == 3 * data.n_atoms - 5))
    real = np.clip(data.frequencies, 0.0, None)
    half_sum = np.add.reduceat(real, data.freq_offsets[:-1]) / 2 / 219474.6313705
    assert np.abs(half_sum - data.raw_properties[:, T.RAW_PROPERTY_NAMES.index("zpve")]).max() < 1e-6
    i = data.row_of(3574)
    assert data.mulliken_charges[data.offsets[i] + 1] == -7e-6
    assert data.atoms(0).info["U0"] == pytest.approx(-17172.1805, abs=1e-3)
    # Isotropic alpha (2 decimals) is the trace / 3 of the tensor (3 decimals).
    iso = data.polarizability_tensor[:, [0, 2, 5]].mean(axis=1)
    assert np.abs(iso - data.target("alpha")).max() < 0.01
    assert qm9_split(len(data)).sizes == (110_000, 10_000, 10_831)
