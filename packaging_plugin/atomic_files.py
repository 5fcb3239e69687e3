"""Files that appear whole or not at all: written under a temporary name, synced, then renamed.

Caches are shared by xdist workers and concurrent runs, and a run can be killed at any moment; a
reader must never see half a file. The temporary file sits beside the target (a rename within one
filesystem is atomic), is flushed to disk before the rename, and is removed if anything fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from packaging_plugin.temporaries import owned_name

SHARED_MODE = 0o644  # what every reader of a cache or an output may read (mkstemp makes 0600)


@contextlib.contextmanager
def atomic_path(path: Path, *, suffix: str = ".tmp", mode: int = SHARED_MODE) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a path (a child process, a tool);
    when the block ends it is synced, given `mode` and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=owned_name(f".{path.name}."), suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = SHARED_MODE) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new contents into; renamed over `path` when the block
    ends without an error."""
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as stream:
        yield stream
        stream.flush()


def write_atomically(path: Path, data: bytes | str, *, mode: int = SHARED_MODE) -> None:
    """Replace `path` by `data` (text is written as UTF-8)."""
    with atomic_file(path, mode=mode) as stream:
        stream.write(data.encode("utf-8") if isinstance(data, str) else data)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # Linux renameat2 flag
_RENAME_SWAP = 2  # macOS renamex_np flag
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system or the filesystem
    cannot, and the caller must fall back to two renames.

    Two renames leave a moment with neither path in place: a run killed there would leave no
    output at all. An exchange never does.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    src, dst = os.fsencode(first), os.fsencode(second)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        result = libc.renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        result = libc.renamex_np(src, dst, _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))
