"""The one atomic file writer: every file vae_core writes for another reader goes through it.

Readers (the app, a resumed run, another server process) see the old file or the new one, never
half of one: the bytes go to a temporary file beside the target, are flushed to disk, and the
temporary file is renamed over the target. On any failure (a full disk, an interrupt) the
temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class DiskFullError(OSError):
    """No space left where a file was being written; the previous file, if any, is intact."""


def _read_umask() -> int:
    """The process's umask. Setting it is the only portable way to read it, and not thread-safe, so it
    is read once, at import."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def temporary_beside(path: Path) -> tuple[int, str]:
    """A new temporary file (descriptor, name) in `path`'s folder, with the permissions `path` has or,
    for a new file, those `open` would give it. mkstemp makes it private (0600), which a rename would
    pass on to the target: a checkpoint other accounts could not read."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if hasattr(os, "fchmod"):  # POSIX
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~UMASK
        os.fchmod(fd, mode)
    return fd, tmp


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                e.errno, f"The disk is full: could not write {path} (the previous file, if any, is intact)"
            ) from e
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, text.encode())
