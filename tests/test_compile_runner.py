"""The compile child process: crashes, hangs and interruptions never leave a stray compile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from packaging_plugin.compile.runner import CompileError, run_compile

# Installed as sitecustomize for the child: it records its pid, then crashes or hangs as asked.
CHILD_FAULTS = textwrap.dedent(
    """
    import os, signal, sys, time
    requests = [arg for arg in sys.argv if arg.endswith("request.json")]
    if requests:
        text = open(requests[0]).read()
        open(os.environ["CHILD_PID_FILE"], "w").write(str(os.getpid()))
        if "crash_" in text:
            os.kill(os.getpid(), signal.SIGABRT)
        if "hang_" in text:
            time.sleep(600)
    """
)


@pytest.fixture
def faulty_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CHILD_FAULTS)
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("CHILD_PID_FILE", str(pid_file))
    return pid_file


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_crash_names_the_signal(faulty_child: Path, tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="compile crashed with SIGABRT"):
        run_compile({"system_lib_prefix": "crash_"}, tmp_path / "out.tar", timeout=60)


def test_a_hang_is_killed_at_the_timeout(faulty_child: Path, tmp_path: Path) -> None:
    with pytest.raises(CompileError, match=r"timed out after 1 s"):
        run_compile({"system_lib_prefix": "hang_"}, tmp_path / "out.tar", timeout=1)
    assert not is_running(int(faulty_child.read_text()))


def test_an_interrupted_run_kills_its_compile(faulty_child: Path, tmp_path: Path) -> None:
    # The runner stands for pytest in a terminal, where Ctrl-C raises KeyboardInterrupt. Started
    # from a background job (`cmd &` in a script), it would inherit SIGINT ignored: reset it.
    script = (
        "import signal, sys; from pathlib import Path\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from packaging_plugin.compile.runner import run_compile\n"
        "run_compile({'system_lib_prefix': 'hang_'}, Path(sys.argv[1]), timeout=600)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.tar")])
    deadline = time.monotonic() + 60
    while not faulty_child.exists() or not faulty_child.read_text():
        assert time.monotonic() < deadline, "the compile child never started"
        time.sleep(0.1)
    child_pid = int(faulty_child.read_text())
    assert is_running(child_pid)
    os.kill(runner.pid, signal.SIGINT)  # what Ctrl-C sends to the pytest process
    runner.wait(timeout=30)
    assert not is_running(child_pid), "the compile child outlived the interrupted run"
