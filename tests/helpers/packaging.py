"""Packaging runs under test: the demo models they use, how they are started, and how faults are
put into their child processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

SMALL = "tiny-llama-q0f32"
SMALL_Q4 = "tiny-llama-q4f16_1"

# The `write_config` fixture (conftest.py): (device, {model_id: (demo model, extra entry fields)},
# folder=None, name="mlc-package-config.json") -> the config's path.
WriteConfig = Callable[..., Path]


def run_package(pytester: pytest.Pytester, config: Path, *args: str) -> pytest.RunResult:
    """A packaging run in a subprocess (as a user runs it), output written beside the config."""
    output = config.parent / "dist"
    return pytester.runpytest_subprocess(
        f"--package-config={config}", f"--package-output={output}", "-p", "no:randomly", *args
    )


def install_sitecustomize(folder: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Make every Python process the test starts run `source` first (a sitecustomize module):
    how tests put faults into the child processes of a packaging run."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(source)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    )
