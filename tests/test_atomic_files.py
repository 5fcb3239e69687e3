"""Files written whole or not at all."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from packaging_plugin.atomic_files import atomic_file, atomic_path, write_atomically


def test_a_write_replaces_the_file_readable_by_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "record.json"
    write_atomically(target, "old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "libmodel.a"
    target.write_bytes(b"old archive")
    with pytest.raises(OSError, match="disk full"), atomic_file(target) as stream:
        stream.write(b"half an archi")
        raise OSError("disk full")
    assert target.read_bytes() == b"old archive"
    assert [p.name for p in tmp_path.iterdir()] == ["libmodel.a"]


def test_a_path_filled_by_another_writer_appears_only_when_done(tmp_path: Path) -> None:
    target = tmp_path / "key.tar"
    with atomic_path(target, suffix=".tar") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tar")
        tmp.write_bytes(b"library")
        assert not target.exists()
    assert target.read_bytes() == b"library"
    assert not tmp.exists()
