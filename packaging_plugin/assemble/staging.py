"""Build the new output directory beside the old one and swap it in only when the run succeeded."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from packaging_plugin.temporaries import owned_name


class StagedOutput:
    """A staging directory next to `output`; `publish()` swaps it in, `discard()` drops it.

    Staging on the same filesystem as the output makes the swap two renames, so an interrupted or
    failed run never leaves a half-written `dist/`: the previous one stays as it was.
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
