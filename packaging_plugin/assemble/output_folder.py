"""Whose is the output folder: a run replaces only a folder that is new, empty, or its own.

Publishing swaps the whole staged folder in for the output and removes the old one, so an output
folder holding a user's files (the current directory, an app folder) would lose them. A published
output therefore carries a manifest of every file the run wrote; a folder may be replaced when
each file in it is in its manifest. A folder without one counts as ours when its top level holds
only what a packager writes there (`lib/`, `bundle/`, `package-report.json`): the output of an
older version, or of `mlc_llm package`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from packaging_plugin.atomic_files import write_atomically
from packaging_plugin.errors import PackagingError

MANIFEST = ".mlc-package-files.json"
PACKAGER_LAYOUT = frozenset({"lib", "bundle", "package-report.json"})
_SHOWN = 5  # foreign entries named in the message


class OutputFolderError(PackagingError):
    """The output folder cannot be (re)placed; the message names it and says why."""


def write_manifest(staging: Path) -> None:
    """Record every file of the staged output, so that a later run knows the folder is ours."""
    files = sorted(relative_files(staging))
    payload = {"written_by": "pytest-mlc-package", "files": files}
    write_atomically(staging / MANIFEST, json.dumps(payload, indent=1) + "\n")


def relative_files(folder: Path) -> list[str]:
    """Every file (and symlink) under `folder`, as POSIX paths relative to it; symlinked folders
    are entries, never followed."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        base = Path(directory)
        links = [name for name in subdirs if (base / name).is_symlink()]
        for name in [*files, *links]:
            found.append((base / name).relative_to(folder).as_posix())
    return found


def _manifest_files(output: Path) -> set[str] | None:
    try:
        payload = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
        return {str(name) for name in payload["files"]} | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def foreign_entries(output: Path) -> list[str]:
    """The entries of an existing output folder that this tool did not write, sorted."""
    ours = _manifest_files(output)
    if ours is None:
        return sorted(entry.name for entry in output.iterdir() if entry.name not in PACKAGER_LAYOUT)
    return sorted(name for name in relative_files(output) if name not in ours)


def check_replaceable(output: Path) -> None:
    """Raise OutputFolderError unless `output` is missing, empty, or holds only our files."""
    if not output.exists() and not output.is_symlink():
        return
    if output.is_symlink() or not output.is_dir():
        raise OutputFolderError(
            f"--package-output {output}: expected a folder, found "
            f"{'a symlink' if output.is_symlink() else 'a file'}; choose an empty or new folder"
        )
    try:
        foreign = foreign_entries(output)
    except OSError as error:
        raise OutputFolderError(
            f"--package-output {output}: cannot be read ({error.strerror or error})"
        ) from None
    if foreign:
        shown = ", ".join(foreign[:_SHOWN])
        more = f" and {len(foreign) - _SHOWN} more" if len(foreign) > _SHOWN else ""
        raise OutputFolderError(
            f"--package-output {output}: holds files this tool did not write ({shown}{more}); "
            "a run replaces its whole output folder, so choose an empty or new folder"
        )


def check_location(output: Path, config_file: Path, cache_root: Path) -> None:
    """Refuse an output folder that holds the working directory, the config or the cache."""
    for inside, what in (
        (Path.cwd(), "the current directory"),
        (config_file, f"the package config {config_file}"),
        (cache_root, f"the cache {cache_root}"),
    ):
        if Path(os.path.realpath(inside)).is_relative_to(os.path.realpath(output)):
            raise OutputFolderError(
                f"--package-output {output}: holds {what}, which a run's swap would take away; "
                "choose an empty or new folder"
            )


def failed_report_dir(output: Path) -> Path:
    """Where the report of a run that could not publish goes: beside the output, never in it."""
    return output.parent / f"{output.name}.failed"
