"""Run one compile in a child process, so that a TVM crash or hang fails one model, not the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STDERR_TAIL_LINES = 25


class CompileError(Exception):
    """A compile failed; the message says why and ends with the tail of the child's stderr."""


CAUSE_PREFIX = "compile failed: "  # the child's one-line summary of a Python exception


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (no output)"


def _cause(text: str) -> str:
    """The child's one-line cause, which a long traceback would push out of the tail."""
    for line in text.splitlines():
        if line.startswith(CAUSE_PREFIX):
            return ": " + line[len(CAUSE_PREFIX) :]
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_compile(request: Mapping[str, Any], output_tar: Path, timeout: float) -> None:
    """Compile `request` into `output_tar` in a child process, or raise CompileError."""
    with tempfile.TemporaryDirectory(prefix="mlc-compile-") as work:
        request_file = Path(work) / "request.json"
        request_file.write_text(json.dumps(dict(request), indent=1, sort_keys=True))
        command = [
            sys.executable,
            "-m",
            "packaging_plugin.compile_child",
            str(request_file),
            str(output_tar),
        ]
        # A session of its own lets a timeout kill the child and anything it started.
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=work,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            output, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
            raise CompileError(
                f"compile timed out after {timeout:g} s (--package-compile-timeout) and was "
                f"killed; last output:\n{_tail(output)}"
            ) from None
        except BaseException:
            # Ctrl-C or a worker shutting down: the child has its own session, so it would not
            # get the signal and would go on compiling with nobody waiting for it.
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
    if child.returncode < 0:
        raise CompileError(
            f"compile crashed with {_signal_name(-child.returncode)}; last output:\n{_tail(output)}"
        )
    if child.returncode != 0:
        raise CompileError(
            f"compile failed (exit status {child.returncode}){_cause(output)}\n"
            f"last output:\n{_tail(output)}"
        )
    if not output_tar.is_file() or output_tar.stat().st_size == 0:
        raise CompileError(f"compile exited 0 but wrote no library; output:\n{_tail(output)}")
