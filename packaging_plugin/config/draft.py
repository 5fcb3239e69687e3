"""The record that the checks of one model_list entry fill in: those of the entry, of its model's
source and of the top level, each in its own module, share it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class _Draft:
    """What the checks learnt about one entry; becomes a ModelEntry when the file has no problem."""

    index: int
    where: str
    model: str | None = None
    model_id: str | None = None
    estimated_vram_bytes: int | None = None
    bundle_weight: bool = False
    overrides: dict[str, int | str] | None = field(default_factory=dict)  # None: invalid
    model_lib: str | None = None
    quantization: str | None = None
    hf_repo: str | None = None
    hf_revision: str | None = None
    local_dir: Path | None = None
    compile_request: dict[str, Any] | None = None  # local MLC models only
