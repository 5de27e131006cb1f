"""Safe file writing: atomic replacement, and NumPy archives that carry their own checksum.

Every file this package writes for a user (model files, checkpoints, logs,
data caches) goes through :func:`atomic_write`: the bytes go to a temporary
file in the same folder (so the final rename cannot cross file systems), are
flushed and ``fsync``-ed, and the temporary file is renamed over the target
with :func:`os.replace`.  A reader therefore sees the old file or the new one,
never half of one, and an error while writing (disk full, Ctrl-C) leaves the
old file untouched and no temporary file behind.  An optional ``verify``
callback reads the finished temporary file before the rename, so a file
that would not load back never replaces a good one.  A full disk is
reported as such (:class:`DiskFullError`), not as the writer's own error.
A process killed mid-write can leave its hidden temporary file
(``.NAME.PID.HEX.tmp``); :func:`remove_stale_temp_files` deletes those of
processes that no longer run.

Checksummed ``.npz`` archives (the QM9 and N-body caches) store one extra
string array, ``sha256``: the SHA-256 over every other array's name, dtype,
shape and bytes, in sorted name order (:func:`arrays_sha256`).  The digest
covers the content, not the zip container, so it survives re-zipping and
catches any change to a value.
"""

import errno
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Mapping, Optional, Type, Union

import numpy as np

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "DiskFullError",
    "remove_stale_temp_files",
    "process_exists",
    "arrays_sha256",
    "write_checksummed_npz",
    "read_checksummed_npz",
    "CHECKSUM_KEY",
]

PathLike = Union[str, Path]

#: name of the array that holds the digest in a checksummed archive
CHECKSUM_KEY = "sha256"


class DiskFullError(OSError):
    """No space left on the device while writing a file (the old file, if any, is kept)."""


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


#: the names :func:`_temp_name` gives: hidden, target name, writer's process id, 12 hex digits
_TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.tmp$")


def atomic_write(
    path: PathLike, write: Callable[[BinaryIO], None], verify: Optional[Callable[[Path], None]] = None
) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``verify(temporary_path)``, when given, runs on the complete temporary file before
    the rename; if it raises, ``path`` is left as it was. The file gets the usual
    permissions (``0o666`` less the umask), unlike :func:`tempfile.mkstemp`'s ``0o600``.
    Parent folders are created. Raises :class:`DiskFullError` when the disk is full.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            if verify is not None:
                verify(tmp)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as err:
        if err.errno in _NO_SPACE and not isinstance(err, DiskFullError):
            raise DiskFullError(
                err.errno,
                f"the disk is full: could not write {path} ({os.strerror(err.errno)}); "
                "the previous file, if any, is unchanged. Free some space and try again",
                str(path),
            ) from err
        raise


def remove_stale_temp_files(folder: PathLike) -> List[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when its process
    was killed mid-write (the writer's process id no longer runs); returns those removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for candidate in folder.iterdir():
        match = _TEMP_PATTERN.match(candidate.name)
        if match is None or not candidate.is_file():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or process_exists(pid):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs (or may: one owned by another user, or unknown, counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but belongs to someone else (or we cannot tell: keep the file)
    return True


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """:func:`atomic_write` of a string."""
    atomic_write(path, lambda handle: handle.write(text.encode(encoding)))


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all arrays but ``sha256`` (sorted by name)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        if key == CHECKSUM_KEY:
            continue
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_checksummed_npz(path: PathLike, arrays: Mapping[str, np.ndarray]) -> str:
    """Atomically write ``arrays`` (uncompressed ``np.savez``) plus their digest; returns it."""
    if CHECKSUM_KEY in arrays:
        raise ValueError(f"{CHECKSUM_KEY!r} is reserved for the checksum")
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    digest = arrays_sha256(arrays)
    arrays[CHECKSUM_KEY] = np.array(digest)
    atomic_write(path, lambda handle: np.savez(handle, **arrays))
    return digest


def read_checksummed_npz(
    path: PathLike, error: Type[Exception] = ValueError, what: str = "file", hint: str = ""
) -> Dict[str, np.ndarray]:
    """Read an archive of :func:`write_checksummed_npz` and verify it (the digest is dropped).

    Raises ``error`` (a message naming ``what``, the path and ``hint``) when the
    file cannot be read as an ``.npz``, has no digest, or its content does not
    match the digest.  Never unpickles (``allow_pickle=False``).
    """
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # BadZipFile, bad CRC, truncated member, not a zip, ...
        raise error(f"{what} {path} is corrupt or unreadable ({exc!r}){suffix}") from exc
    stored = arrays.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise error(f"{what} {path} has no {CHECKSUM_KEY} entry{suffix}")
    actual = arrays_sha256(arrays)
    if str(stored) != actual:
        raise error(
            f"{what} {path} is corrupt: SHA-256 checksum mismatch "
            f"(stored {str(stored)[:16]}..., computed {actual[:16]}...){suffix}"
        )
    return arrays
