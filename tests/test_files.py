"""sinet_ase.files: atomic writes and checksummed archives."""

import os

import numpy as np
import pytest

from sinet_ase.files import (
    arrays_sha256,
    atomic_write,
    atomic_write_text,
    read_checksummed_npz,
    remove_stale_temp_files,
    write_checksummed_npz,
)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "model.bin"
    atomic_write_text(path, "old")
    assert path.read_text() == "old"

    def half_then_fail(handle):
        handle.write(b"new but incomplete")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.bin"]  # no temp file left


def test_checksummed_npz_roundtrip_and_tamper_detection(tmp_path):
    arrays = {"a": np.arange(5.0), "b": np.array(["x", "yz"])}
    path = tmp_path / "c.npz"
    digest = write_checksummed_npz(path, arrays)
    assert digest == arrays_sha256(arrays)
    back = read_checksummed_npz(path)
    assert set(back) == {"a", "b"} and np.array_equal(back["a"], arrays["a"])
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    stored["a"] = stored["a"] + 1e-12  # well-formed archive, content changed
    np.savez(path, **stored)
    with pytest.raises(KeyError, match="checksum mismatch"):
        read_checksummed_npz(path, KeyError, what="cache")
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt or unreadable.*rebuild it"):
        read_checksummed_npz(path, hint="rebuild it")
    with pytest.raises(ValueError, match="reserved"):
        write_checksummed_npz(path, {"sha256": np.zeros(1)})


def test_atomic_write_keeps_the_old_file_when_verification_fails(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    seen = []

    def verify(tmp):
        seen.append(tmp.read_text())
        raise ValueError("does not load back")

    with pytest.raises(ValueError, match="does not load back"):
        atomic_write(path, lambda handle: handle.write(b"new"), verify=verify)
    assert seen == ["new"] and path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".checkpoint.pt.4194999.0123456789ab.tmp"  # beyond Linux's largest pid
    mine = tmp_path / f".checkpoint.pt.{os.getpid()}.0123456789ab.tmp"
    other = tmp_path / ".notes.tmp"
    for p in (dead, mine, other):
        p.write_text("x")
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])
    assert remove_stale_temp_files(tmp_path / "missing") == []
