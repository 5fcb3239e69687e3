"""SIGKILL at a chosen point of a packaging run, and a census of the processes a run left.

A kill point names a function as its callers reach it (`module:name`) and when to strike: on
entry, a delay after entry (while it works: a compile child running), or when it returns (its
output written, the next step not begun). The run's controller is killed, as a user's `kill -9`
or the OOM killer would; wherever the point is reached (the controller, an xdist worker), that
process then stays at the point, so a worker outlives its controller only if nothing stops it.

The hook is a sitecustomize module (tests/helpers/packaging.py::install_sitecustomize) that
patches the function when its module is first imported, in pytest processes only: compile and
smoke children are left as they are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

RUN_TAG = "MLC_TEST_RUN_TAG"  # every process of one run inherits it: how its processes are found


@dataclass(frozen=True)
class KillPoint:
    """Where a run is killed, and what its output folder must hold afterwards."""

    name: str
    target: str  # "module:function" as its callers look it up
    when: str = "entry"  # "entry", "during" (a delay after entry) or "return"
    max_delay: float = 0.0  # "during": the delay is drawn from [max_delay / 4, max_delay]
    output_after: str = "previous"  # "previous", or "new" once the swap has happened
    cold: tuple[str, ...] = ()  # cache folders emptied first, so the point is reached
    workers: int = 2  # xdist workers of the run (0: model steps run in the controller)


SITECUSTOMIZE = """
import importlib.abc, importlib.util, os, signal, sys, threading, time

_AT = os.environ.get("MLC_TEST_KILL_AT", "")
_CHILD = any(arg.endswith((".child", "_child")) for arg in sys.orig_argv)  # TVM children
if _AT and not _CHILD:
    if "MLC_TEST_KILL_PID" not in os.environ:  # the first pytest process is the controller
        os.environ["MLC_TEST_KILL_PID"] = str(os.getpid())
    _MODULE, _NAME = _AT.split(":")
    _WHEN = os.environ.get("MLC_TEST_KILL_WHEN", "entry")
    _DELAY = float(os.environ.get("MLC_TEST_KILL_DELAY", "0"))

    def _strike():
        with open(os.environ["MLC_TEST_KILL_REACHED"], "a") as note:
            note.write(f"{os.getpid()}\\n")
        os.kill(int(os.environ["MLC_TEST_KILL_PID"]), signal.SIGKILL)
        time.sleep(120)  # a worker stays at the point: only its guard may end it

    def _wrap(function):
        def wrapper(*args, **kwargs):
            if _WHEN == "entry":
                _strike()
            if _WHEN == "during":
                threading.Timer(_DELAY, _strike).start()
            result = function(*args, **kwargs)
            if _WHEN == "return":
                _strike()
            return result
        return wrapper

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != _MODULE:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                setattr(module, _NAME, _wrap(getattr(module, _NAME)))

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())
"""


def kill_environment(point: KillPoint, delay: float, reached: Path) -> dict[str, str]:
    return {
        "MLC_TEST_KILL_AT": point.target,
        "MLC_TEST_KILL_WHEN": point.when,
        "MLC_TEST_KILL_DELAY": f"{delay:.3f}",
        "MLC_TEST_KILL_REACHED": str(reached),
    }


def tagged_processes(tag: str) -> dict[int, str]:
    """pid -> command line of every live (not zombie) process whose environment holds `tag`."""
    found = {}
    needle = f"{RUN_TAG}={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if "State:\tZ" in (entry / "status").read_text():
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        found[int(entry.name)] = command.strip()
    return found


def wait_for_no_processes(tag: str, seconds: float) -> dict[int, str]:
    """Poll until no process of the run is left; what is still there after `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def marked_entries(*folders: Path) -> list[Path]:
    """Everything under `folders` that carries a temporary's owner mark (`~host.pid~`)."""
    from packaging_plugin.temporaries import is_temporary

    found = []
    for folder in folders:
        for directory, subdirs, files in os.walk(folder):
            for name in [*subdirs, *files]:
                if is_temporary(name):
                    found.append(Path(directory) / name)
    return found
