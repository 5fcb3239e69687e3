"""What a run checks of the machine before it starts: the output folder, the cache, the temp dir.

A folder that cannot be written is known at start; finding it out in every model's compile would
print one failure per model (or a traceback) for one cause. Each check names the path, the cause
and what to do, and is a usage error (exit 4).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from packaging_plugin.assemble.output_folder import (
    check_location,
    check_replaceable,
    failed_report_dir,
)
from packaging_plugin.assemble.staging import StagedOutput
from packaging_plugin.compile.cache import JitPolicy
from packaging_plugin.errors import PackagingError, describe_os_error
from packaging_plugin.temporaries import SweepPlace, owned_name, sweep


class MachineError(PackagingError):
    """A folder the run needs cannot be used; the message names it and the cause."""


def _write_problem(folder: Path) -> str | None:
    """Why a file cannot be made in `folder` (created if missing), or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=owned_name(".write-check."))
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        return describe_os_error(error)
    return None


def check_temp_dir() -> None:
    try:
        folder = Path(tempfile.gettempdir())
    except OSError as error:  # no usable candidate at all
        raise MachineError(f"no usable temporary folder (TMPDIR): {error}") from None
    if problem := _write_problem(folder):
        raise MachineError(
            f"the temporary folder {folder} cannot be written ({problem}); set TMPDIR to a "
            "writable folder"
        )


def check_cache_root(cache_root: Path, policy: JitPolicy) -> None:
    """The cache must take new entries, unless the policy only reads it."""
    if policy in (JitPolicy.READONLY, JitPolicy.OFF):
        return
    if problem := _write_problem(cache_root / "model_lib"):
        raise MachineError(
            f"the cache {cache_root} (MLC_LLM_HOME) cannot be written ({problem}); set "
            "MLC_LLM_HOME to a writable folder, or MLC_JIT_POLICY=READONLY to only read it"
        )


def prepare_output(staged: StagedOutput, config_file: Path, cache_root: Path) -> None:
    """Check the output folder may be replaced, and make the staging folder beside it."""
    output = staged.output
    check_replaceable(output)  # first: its message names the user's files
    check_location(output, config_file, cache_root)
    try:
        staged.create()
    except OSError as error:
        raise MachineError(
            f"--package-output {output}: its staging folder cannot be made beside it "
            f"({describe_os_error(error)}); choose a writable place"
        ) from None


def sweep_dead_runs(staged: StagedOutput, cache_root: Path) -> list[Path]:
    """Remove what runs that died (SIGKILL, power loss) left in this run's folders."""
    places = [SweepPlace(cache_root)]
    with contextlib.suppress(OSError):  # no cache yet
        places += [SweepPlace(sub) for sub in cache_root.iterdir() if sub.is_dir()]
    places += [
        SweepPlace(Path(tempfile.gettempdir()), "mlc-"),
        SweepPlace(failed_report_dir(staged.output)),
    ]
    return staged.sweep_dead_runs() + sweep(places)
