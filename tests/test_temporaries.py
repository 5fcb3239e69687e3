"""Temporaries carry their owner's pid, and the sweep removes only those of dead owners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from packaging_plugin.temporaries import (
    SweepPlace,
    dead_owner,
    make_temp_dir,
    owner_mark,
    pid_alive,
    sweep,
)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_temporary_names_its_owner(tmp_path: Path) -> None:
    made = make_temp_dir("mlc-compile-", tmp_path)
    assert made.name.startswith(f"mlc-compile-{owner_mark()}")
    assert f".{os.getpid()}~" in made.name


def test_only_dead_owners_temporaries_are_swept(tmp_path: Path) -> None:
    gone = dead_pid()
    assert not pid_alive(gone)
    dead_file = tmp_path / f".key.tar.{owner_mark(gone)}abc.tar"
    dead_dir = tmp_path / f".dist.staging{owner_mark(gone)}123"
    live_file = tmp_path / f".key.tar.{owner_mark()}def.tar"
    other_host = tmp_path / f".key.tar.~elsewhere.{gone}~ghi.tar"
    unmarked = tmp_path / ".key.tar.jkl.tar"  # an older version's: its owner is unknown
    users = tmp_path / "notes.txt"
    dead_dir.mkdir()
    (dead_dir / "lib").mkdir()
    (dead_dir / "lib" / "x.a").write_bytes(b"x")
    for path in (dead_file, live_file, other_host, unmarked, users):
        path.write_bytes(b"data")

    removed = sweep([SweepPlace(tmp_path)])

    assert sorted(removed) == sorted([dead_file, dead_dir])
    assert not dead_file.exists() and not dead_dir.exists()
    for kept in (live_file, other_host, unmarked, users):
        assert kept.exists(), kept
    assert dead_owner(f"x{owner_mark(gone)}") and not dead_owner(f"x{owner_mark()}")


def test_a_prefix_limits_the_sweep_to_one_kind_of_temporary(tmp_path: Path) -> None:
    gone = dead_pid()
    staging = tmp_path / f".dist.staging{owner_mark(gone)}1"
    someone_elses = tmp_path / f".other.staging{owner_mark(gone)}1"
    staging.mkdir()
    someone_elses.mkdir()
    assert sweep([SweepPlace(tmp_path, ".dist.")]) == [staging]
    assert someone_elses.is_dir()


def test_an_unreadable_place_is_skipped(tmp_path: Path) -> None:
    assert sweep([SweepPlace(tmp_path / "missing"), SweepPlace(tmp_path / "f" / "g")]) == []
