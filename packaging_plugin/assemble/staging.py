"""Build the new output directory beside the old one and swap it in only when the run succeeded."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from packaging_plugin.assemble.output_folder import check_replaceable, write_manifest
from packaging_plugin.atomic_files import exchange_paths
from packaging_plugin.temporaries import SweepPlace, dead_owner, owned_name, sweep


class StagedOutput:
    """A staging directory next to `output`; `publish()` swaps it in, `discard()` drops it.

    Staging on the same filesystem as the output makes the swap one atomic exchange (two renames
    where the system has none), so an interrupted or failed run never leaves a half-written
    `dist/`: the previous one stays as it was. Only a folder that is ours is ever replaced.
    """

    def __init__(self, output: Path, staging: Path | None = None) -> None:
        self.output = output
        self.staging = staging or self._sibling("staging")

    def _sibling(self, kind: str) -> Path:
        """A new name beside the output, marked with this process as its owner."""
        name = owned_name(f".{self.output.name}.{kind}") + uuid.uuid4().hex[:12]
        return self.output.parent / name

    def create(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)

    def publish(self) -> None:
        """Put the staged folder in the output's place; the replaced output is removed after.

        A kill before the swap leaves the old output, after it the new one: never neither. The
        replaced folder then sits under the staging name until it is removed, and a later run
        sweeps it if this one dies first.
        """
        write_manifest(self.staging)
        check_replaceable(self.output)  # checked again: the folder may have changed since start
        if self.output.is_dir() and exchange_paths(self.staging, self.output):
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        self._publish_by_renames()

    def _publish_by_renames(self) -> None:
        retired = self._sibling("old")
        had_output = self.output.exists()
        if had_output:
            os.replace(self.output, retired)
        try:
            os.replace(self.staging, self.output)
        except BaseException as error:
            if had_output:
                self._restore(retired, error)
            raise
        shutil.rmtree(retired, ignore_errors=True)

    def _restore(self, retired: Path, error: BaseException) -> None:
        """Put the previous output back after a failed swap; if even that fails, say where it is."""
        try:
            os.replace(retired, self.output)
        except OSError as lost:
            why = getattr(error, "strerror", None) or error
            raise OSError(
                lost.errno,
                f"could not be replaced ({why}), and the previous output could not be put back "
                f"({lost.strerror}): it is in {retired}",
                str(self.output),
            ) from error

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def sweep_dead_runs(self) -> list[Path]:
        """Remove staging folders of runs that died beside this output; return what went.

        Where the swap is two renames, a run killed between them left no output and the old one
        under its `.old` name: that one is put back, not removed.
        """
        if not self.output.exists():
            retired = sorted(self.output.parent.glob(f".{self.output.name}.old~*"))
            for candidate in retired:
                if dead_owner(candidate.name):
                    with contextlib.suppress(OSError):  # tidying: never stops a run
                        os.replace(candidate, self.output)
                    break
        return sweep([SweepPlace(self.output.parent, f".{self.output.name}.")])
