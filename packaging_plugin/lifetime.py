"""A run's processes end together: children die with their parent, SIGTERM is an interrupt.

Compile and smoke children run in a session of their own (so a timeout can kill whatever they
started), which also shields them from the terminal's signals: when the run is SIGKILLed they
would go on compiling for a minute with nobody waiting. Each child is therefore started through
this module (`python -m packaging_plugin.lifetime MODULE ARGS...`), which ties it to its parent
before the child's own code (and TVM) loads:

- on Linux, `PR_SET_PDEATHSIG`: the kernel sends SIGKILL the moment the parent dies, even while
  the child is deep in C code. The parent's pid is checked after the call, so a parent that died
  just before is caught too;
- elsewhere, a watcher thread polls the parent's pid and kills the child's process group when
  the child has been orphaned.

xdist workers tie themselves to the controller the same way (`tie_to_parent`), and in a run
SIGTERM (what `timeout`, CI runners and `kill` send) raises KeyboardInterrupt, so it ends like
Ctrl-C: the staging folder discarded, children killed, the previous output untouched.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

PARENT_PID = "MLC_PACKAGE_PARENT_PID"  # set by the parent for the child it starts
_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5


def child_command(module: str, args: list[str]) -> list[str]:
    """The command line that runs `python -m module args...` tied to this process."""
    return [sys.executable, "-m", "packaging_plugin.lifetime", module, *args]


def child_environment() -> dict[str, str]:
    return {**os.environ, PARENT_PID: str(os.getpid())}


def tie_to_parent(parent: int) -> None:
    """End this process (and, off Linux, its process group) when `parent` is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            _watch_parent(parent)  # not allowed here (a sandbox): poll instead
    else:
        _watch_parent(parent)
    if os.getppid() != parent:  # the parent died before the guard was in place
        os._exit(1)


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL_SECONDS)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


Handler = Callable[[int, FrameType | None], Any] | int | None


def interrupt_on_sigterm() -> Handler:
    """Make SIGTERM raise KeyboardInterrupt in this (main) thread; return the handler it
    replaced, for `restore_sigterm`. A handler someone else installed is left alone."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous != signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return previous


def restore_sigterm(previous: Handler) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str]) -> None:
    """`python -m packaging_plugin.lifetime MODULE ARGS...`: run MODULE as `__main__`, tied to
    the parent named by MLC_PACKAGE_PARENT_PID."""
    parent = os.environ.pop(PARENT_PID, None)
    if parent is not None:
        tie_to_parent(int(parent))
    module, *args = argv
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
