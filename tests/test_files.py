"""sinet_ase.files: atomic writes and checksummed archives."""

import numpy as np
import pytest

from sinet_ase.files import (arrays_sha256, atomic_write, atomic_write_text, read_checksummed_npz,
                             write_checksummed_npz)


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
