"""Run a step's TVM work in a child process, so that a crash or hang fails one model, not the run.

TVM can segfault or hang inside a compile or a model run; in a child, the step fails with the
signal and the tail of the child's output, and the worker lives on.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from packaging_plugin.lifetime import child_command, child_environment

STDERR_TAIL_LINES = 25


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (no output)"


def one_line_cause(text: str, prefix: str) -> str:
    """The child's one-line cause (a line starting with `prefix`), which a long traceback would
    push out of the tail; empty when there is none."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return ": " + line[len(prefix) :]
    return ""


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class ChildFailed(Exception):
    """The child crashed, timed out or exited non-zero; the message says which, with its output."""


def run_child(
    module: str, args: list[str], *, cwd: Path, timeout: float, what: str, timeout_hint: str
) -> str:
    """Run `python -m module args...` in `cwd`; return its output, or raise ChildFailed.

    `what` names the work in messages ("compile"); `timeout_hint` says how to allow more time.
    """
    # A session of its own lets a timeout kill the child and anything it started; started
    # through `lifetime`, the child also dies when this process does (even by SIGKILL).
    child = subprocess.Popen(
        child_command(module, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        start_new_session=True,
        env={**child_environment(), "PYTHONUNBUFFERED": "1"},
    )
    try:
        output, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        output, _ = child.communicate()
        raise ChildFailed(
            f"{what} timed out after {timeout:g} s ({timeout_hint}) and was killed; last "
            f"output:\n{tail(output)}"
        ) from None
    except BaseException:
        # Ctrl-C or a worker shutting down: the child has its own session, so it would not get
        # the signal and would go on working with nobody waiting for it.
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    if child.returncode < 0:
        raise ChildFailed(
            f"{what} crashed with {signal_name(-child.returncode)}; last output:\n{tail(output)}"
        )
    if child.returncode != 0:
        raise ChildFailed(
            f"{what} failed (exit status {child.returncode})"
            f"{one_line_cause(output, f'{what} failed: ')}\nlast output:\n{tail(output)}"
        )
    return output
