"""The staged output: swapped in whole, or the previous output left where it was."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from packaging_plugin.assemble import staging
from packaging_plugin.assemble.output_folder import (
    MANIFEST,
    OutputFolderError,
    foreign_entries,
    relative_files,
)
from packaging_plugin.assemble.staging import StagedOutput
from packaging_plugin.temporaries import owner_mark
from tests.helpers.packaging import SMALL, WriteConfig


def staged_with_old_output(tmp_path: Path) -> StagedOutput:
    output = tmp_path / "dist"
    (output / "lib").mkdir(parents=True)
    (output / "lib" / "libmodel_android.a").write_bytes(b"old")
    staged = StagedOutput(output)
    staged.create()
    (staged.staging / "new.txt").write_text("new")
    return staged


def failing_replace(fail_when: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap is two renames (as where the system has no exchange), and os.replace in
    staging.py fails for sources whose name starts with one of `fail_when`."""
    real = os.replace

    def replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if any(Path(src).name.startswith(prefix) for prefix in fail_when):
            raise OSError(errno.EIO, "Input/output error", str(src))
        real(src, dst)

    monkeypatch.setattr(staging, "exchange_paths", lambda first, second: False)
    monkeypatch.setattr(staging.os, "replace", replace)


def test_publish_swaps_the_new_output_in(tmp_path: Path) -> None:
    staged = staged_with_old_output(tmp_path)
    staged.publish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]
    assert (tmp_path / "dist" / "new.txt").read_text() == "new"
    assert relative_files(tmp_path / "dist") == [MANIFEST, "new.txt"]
    assert foreign_entries(tmp_path / "dist") == []


def test_the_swap_is_one_exchange_so_a_kill_never_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the steps of a publish, the output path always holds a whole output."""
    staged = staged_with_old_output(tmp_path)
    seen: list[list[str]] = []
    real_rmtree = staging.shutil.rmtree

    def rmtree(path: Path, **kwargs: object) -> None:  # runs after the swap, before the cleanup
        seen.append(sorted(p.name for p in (tmp_path / "dist").iterdir()))
        real_rmtree(path, **kwargs)

    monkeypatch.setattr(staging.shutil, "rmtree", rmtree)
    monkeypatch.setattr(StagedOutput, "_publish_by_renames", None)  # two steps: not allowed
    staged.publish()
    assert seen == [[MANIFEST, "new.txt"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def test_a_failed_swap_puts_the_previous_output_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = staged_with_old_output(tmp_path)
    failing_replace([".dist.staging~"], monkeypatch)
    with pytest.raises(OSError, match="Input/output error"):
        staged.publish()
    assert (tmp_path / "dist" / "lib" / "libmodel_android.a").read_bytes() == b"old"


def test_when_the_previous_output_cannot_be_put_back_the_error_says_where_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = staged_with_old_output(tmp_path)
    failing_replace([".dist.staging~", ".dist.old~"], monkeypatch)
    with pytest.raises(OSError) as raised:
        staged.publish()
    (retired,) = tmp_path.glob(".dist.old~*")
    assert f"it is in {retired}" in str(raised.value)
    assert (retired / "lib" / "libmodel_android.a").read_bytes() == b"old"


def test_a_folder_with_a_users_files_is_never_replaced(tmp_path: Path) -> None:
    staged = staged_with_old_output(tmp_path)
    staged.publish()  # ours now, with a manifest
    notes = tmp_path / "dist" / "lib" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    again = StagedOutput(tmp_path / "dist")
    again.create()
    with pytest.raises(OutputFolderError, match=r"did not write \(lib/notes.txt\)"):
        again.publish()
    assert notes.read_text() == "mine"
    assert (tmp_path / "dist" / "new.txt").read_text() == "new"


@pytest.mark.parametrize(
    ("entries", "foreign"),
    [
        ([], []),
        (["lib/libmodel_iphone.a", "bundle/m/params.bin", "package-report.json"], []),
        (["lib/x.a", "app.py", "models/m/config.json"], ["app.py", "models"]),
    ],
)
def test_a_folder_without_a_manifest_is_ours_only_in_a_packagers_layout(
    tmp_path: Path, entries: list[str], foreign: list[str]
) -> None:
    for name in entries:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert foreign_entries(tmp_path) == foreign


def test_a_run_killed_between_two_renames_gets_its_old_output_back(tmp_path: Path) -> None:
    """Where the swap is two renames, the next run restores an output a dead run moved aside."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    retired = tmp_path / f".dist.old{owner_mark(child.pid)}abc"
    (retired / "lib").mkdir(parents=True)
    (retired / "lib" / "x.a").write_bytes(b"old")
    StagedOutput(tmp_path / "dist").sweep_dead_runs()
    assert (tmp_path / "dist" / "lib" / "x.a").read_bytes() == b"old"
    assert not retired.exists()


def test_a_run_that_ends_before_its_session_leaves_no_staging(
    pytester: pytest.Pytester, write_config: WriteConfig
) -> None:
    config = write_config("android", {"tiny": (SMALL, {})})
    output = config.parent / "dist"
    result = pytester.runpytest_subprocess(
        f"--package-config={config}", f"--package-output={output}", "--help"
    )
    assert result.ret == 0
    assert [p.name for p in config.parent.iterdir() if p.name.startswith(".dist.")] == []
