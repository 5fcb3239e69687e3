"""Files that appear whole or not at all: written under a temporary name, synced, then renamed.

Caches are shared by xdist workers and concurrent runs, and a run can be killed at any moment; a
reader must never see half a file. The temporary file sits beside the target (a rename within one
filesystem is atomic), is flushed to disk before the rename, and is removed if anything fails.
"""

from __future__ import annotations

import contextlib
import os
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
