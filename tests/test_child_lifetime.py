"""A run's processes end together: a child started by run_child dies with its parent, even
when the parent is SIGKILLed, and SIGTERM ends a packaging run as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.kill_points import RUN_TAG, tagged_processes, wait_for_no_processes
from tests.helpers.packaging import SMALL, WriteConfig
from tests.helpers.paths import REPO

GRACE_SECONDS = 3.0

PARENT = """
import sys
from pathlib import Path
from packaging_plugin.child_process import run_child
run_child("tests.helpers.sleeper", [sys.argv[1]], cwd=Path(sys.argv[2]), timeout=600,
          what="sleep", timeout_hint="none")
"""


def wait_for(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.is_file() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_a_child_dies_within_a_moment_of_its_parents_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file), str(REPO)])
    wait_for(pid_file)
    child = int(pid_file.read_text())
    assert alive(child)
    parent.kill()
    parent.wait()
    killed = time.monotonic()
    while alive(child) and time.monotonic() - killed < GRACE_SECONDS:
        time.sleep(0.02)
    assert not alive(child), f"the child outlived its SIGKILLed parent by {GRACE_SECONDS} s"


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigterm_ends_a_run_like_ctrl_c(
    write_config: WriteConfig, tmp_path: Path, workers: str
) -> None:
    """SIGTERM while a compile runs: exit 2 (interrupted), the old output untouched, no
    staging folder, no process left."""
    config = write_config("linux", {"tiny": (SMALL, {"model_lib": "sigterm_tiny"})})
    dist = config.parent / "dist"
    (dist / "lib").mkdir(parents=True)
    (dist / "lib" / "libmodel_linux.a").write_bytes(b"previous")
    tag = uuid.uuid4().hex
    env = {**os.environ, "MLC_LLM_HOME": str(tmp_path / "cold"), RUN_TAG: tag}
    env.pop("MLC_JIT_POLICY", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", f"--package-config={config}", "-n", workers,
         f"--package-output={dist}", "-p", "no:randomly"],
        cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any("compile.child" in cmd for cmd in tagged_processes(tag).values()):
        assert run.poll() is None and time.monotonic() < deadline, "no compile child started"
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert wait_for_no_processes(tag, GRACE_SECONDS) == {}
    assert (dist / "lib" / "libmodel_linux.a").read_bytes() == b"previous"
    assert [p.name for p in config.parent.iterdir() if p.name.startswith(".dist.")] == []
