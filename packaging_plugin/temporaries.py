"""Temporary files and folders that name the process owning them, and the sweep of dead owners'.

A run killed with SIGKILL (or a machine losing power) cannot clean up after itself: it leaves
half-written cache entries, compile work folders and staging directories. Every temporary this
package makes therefore carries an owner mark, `~<host>.<pid>~`, and a later run removes the ones
whose owner is gone. Only this host's marks are judged (a pid means nothing on another machine
sharing the folder), and a mark whose pid is alive is never touched, whoever owns that pid now:
a live run's work is never swept, at the price of keeping litter when a pid was reused.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:48] or "host"
_MARK = re.compile(r"~(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)~")


def owner_mark(pid: int | None = None) -> str:
    """`~<host>.<pid>~` of this process (or of `pid` on this host)."""
    return f"~{_HOST}.{pid if pid is not None else os.getpid()}~"


def owned_name(base: str) -> str:
    """`base` followed by this process's owner mark: the start of a temporary's name."""
    return f"{base}{owner_mark()}"


def make_temp_dir(base: str, folder: Path | None = None) -> Path:
    """A new folder `<base>~<host>.<pid>~<random>` in `folder` (default: the temp dir)."""
    return Path(tempfile.mkdtemp(prefix=owned_name(base), dir=folder))


@contextlib.contextmanager
def temp_dir(base: str) -> Iterator[Path]:
    """A marked temporary folder in the temp dir, removed when the block ends."""
    path = make_temp_dir(base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (one we may not signal counts as alive)."""
    if pid <= 0:
        return True  # not a pid we could have written: never judge it dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but was not reaped (where init does not reap orphans, a killed
    run's processes stay so): it works no more, so its temporaries are litter."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): signal 0 is all there is
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary of this package (it carries an owner mark)."""
    return _MARK.search(name) is not None


def dead_owner(name: str) -> bool:
    """Whether `name` carries this host's owner mark of a process that no longer exists."""
    found = _MARK.search(name)
    if found is None or found["host"] != _HOST:
        return False
    return not pid_alive(int(found["pid"]))


@dataclass(frozen=True)
class SweepPlace:
    """A folder to sweep, and the name prefix its temporaries start with ("" for any)."""

    folder: Path
    prefix: str = ""


def sweep(places: Iterable[SweepPlace]) -> list[Path]:
    """Remove the temporaries of dead owners in `places`; return what was removed.

    A folder that cannot be listed, or an entry that cannot be removed, is left alone: the sweep
    is tidying, and must never stop a run.
    """
    removed: list[Path] = []
    for place in places:
        try:
            entries = list(place.folder.iterdir())
        except OSError:
            continue
        for entry in sorted(entries):
            if not entry.name.startswith(place.prefix) or not dead_owner(entry.name):
                continue
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError:
                continue
            removed.append(entry)
    return removed
