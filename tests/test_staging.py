"""The staged output: swapped in whole, or the previous output left where it was."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from packaging_plugin.assemble import staging
from packaging_plugin.assemble.staging import StagedOutput
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
    """os.replace in staging.py fails for sources whose name starts with one of `fail_when`."""
    real = os.replace

    def replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if any(Path(src).name.startswith(prefix) for prefix in fail_when):
            raise OSError(errno.EIO, "Input/output error", str(src))
        real(src, dst)

    monkeypatch.setattr(staging.os, "replace", replace)


def test_publish_swaps_the_new_output_in(tmp_path: Path) -> None:
    staged = staged_with_old_output(tmp_path)
    staged.publish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]
    assert (tmp_path / "dist" / "new.txt").read_text() == "new"


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
