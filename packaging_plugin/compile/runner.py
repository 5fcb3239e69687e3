"""Run one compile in a child process, so that a TVM crash or hang fails one model, not the run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging_plugin.child_process import ChildFailed, run_child, tail
from packaging_plugin.errors import PackagingError
from packaging_plugin.temporaries import temp_dir


class CompileError(PackagingError):
    """A compile failed; the message says why and ends with the tail of the child's stderr."""


def run_compile(request: Mapping[str, Any], output_tar: Path, timeout: float) -> None:
    """Compile `request` into `output_tar` in a child process, or raise CompileError."""
    with temp_dir("mlc-compile-") as work:
        request_file = Path(work) / "request.json"
        request_file.write_text(json.dumps(dict(request), indent=1, sort_keys=True))
        try:
            output = run_child(
                "packaging_plugin.compile.child",
                [str(request_file), str(output_tar)],
                cwd=Path(work),
                timeout=timeout,
                what="compile",
                timeout_hint="--package-compile-timeout",
            )
        except ChildFailed as failure:
            raise CompileError(str(failure)) from None
    if not output_tar.is_file() or output_tar.stat().st_size == 0:
        raise CompileError(f"compile exited 0 but wrote no library; output:\n{tail(output)}")
