"""Under xdist a model's steps stay on one worker (loadscope), unless the user chose a mode: on
the command line, in the ini file's addopts or in PYTEST_ADDOPTS."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.packaging import SMALL, WriteConfig, run_package

pytestmark = pytest.mark.slow  # packaging runs under xdist


@pytest.fixture
def quick_config(write_config: WriteConfig, package_env: Path, monkeypatch: pytest.MonkeyPatch):
    # No compiling: the policy forbids it, so the compile steps fail at once.
    monkeypatch.setenv("MLC_JIT_POLICY", "OFF")
    return write_config("linux", {"a": (SMALL, {}), "b": (SMALL, {"model_lib": "b_lib"})})


def scheduler(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("scheduling tests via ")]
    assert lines, result.stdout.str()[-2000:]
    return lines[0].removeprefix("scheduling tests via ")


def test_the_plugin_schedules_by_model_when_the_user_chose_no_mode(
    pytester: pytest.Pytester, quick_config: Path
) -> None:
    assert scheduler(run_package(pytester, quick_config, "-n", "2", "-v")) == "LoadScopeScheduling"


@pytest.mark.parametrize("where", ["command line", "PYTEST_ADDOPTS", "ini addopts"])
def test_a_mode_the_user_chose_anywhere_is_respected(
    pytester: pytest.Pytester, quick_config: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    args = ["-n", "2", "-v"]
    if where == "command line":
        args += ["--dist", "load"]
    elif where == "PYTEST_ADDOPTS":
        monkeypatch.setenv("PYTEST_ADDOPTS", "--dist=load")
    else:
        pytester.makeini("[pytest]\naddopts = --dist load\n")
    assert scheduler(run_package(pytester, quick_config, *args)) == "LoadScheduling"
