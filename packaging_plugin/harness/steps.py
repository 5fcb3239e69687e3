"""The steps of a run and the figures they find, defined once.

Items, the package steps, the report, the summary and JUnit all name steps by `Step` and figures by
the fields of `ModelFigures`, so a step or a figure is added in one place. Node ids are
`<config>::<model_id>::<step>` and `<config>::package::<step>`, with the step's value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from packaging_plugin.config.devices import DeviceSpec
from packaging_plugin.config.package_config import ModelEntry


class Step(str, enum.Enum):
    """A step's name, as node ids, the report and the summary spell it."""

    # One model's steps, in the order they run.
    FETCH = "fetch"
    COMPILE = "compile"
    VALIDATE = "validate"
    KERNELS = "kernels"
    BUNDLE = "bundle"
    SMOKE = "smoke"  # run at session end, after the package links
    # The package steps, after every model step.
    LIBRARY = "library"
    LINK = "link"
    APP_CONFIG = "app-config"
    BINDINGS = "bindings"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    # Equal to its value (a str), so it must hash like it: dicts keyed by step names from node
    # ids find it.
    def __hash__(self) -> int:
        return str.__hash__(self)


# The app config comes before the bindings: Android's mlc4j carries a copy in its assets.
PACKAGE_STEPS: tuple[Step, ...] = (Step.LIBRARY, Step.LINK, Step.APP_CONFIG, Step.BINDINGS)


def model_steps(entry: ModelEntry, device: DeviceSpec) -> list[Step]:
    """The collected steps of one model, in the order they run."""
    steps = [Step.FETCH, Step.COMPILE, Step.VALIDATE]
    if device.checks_opencl_kernels:
        steps.append(Step.KERNELS)
    if entry.bundle_weight:
        steps.append(Step.BUNDLE)
    return steps


def report_steps(entry: ModelEntry, device: DeviceSpec) -> list[Step]:
    """A model's steps in the report: its items, and the smoke run at session end."""
    return [*model_steps(entry, device), *([Step.SMOKE] if device.runs_smoke else [])]


# Where a figure goes: the report's model entry, and JUnit suite properties.
_REPORTED = {"report": True, "junit": False}
_IN_JUNIT = {"report": True, "junit": True}
_UNREPORTED = {"report": False, "junit": False}


@dataclass
class ModelFigures:
    """What one model's steps found. Reported fields are `package-report.json`'s per-model
    fields, in its order; JUnit ones are also suite properties `<model_id>.<field>`."""

    model_lib: str | None = field(default=None, metadata=_IN_JUNIT)
    cache: str | None = field(
        default=None, metadata=_IN_JUNIT
    )  # "hit", "miss" or "rebuilt" (damaged)
    cache_key: str | None = field(default=None, metadata=_REPORTED)
    library_source: str | None = field(
        default=None, metadata=_REPORTED
    )  # "compiled", "cache" or "prebuilt"
    # null for a prebuilt library (model_lib_path_for_prepare_libs): origin unknown
    compiled_with: dict[str, str] | None = field(default=None, metadata=_REPORTED)
    compile_seconds: float | None = field(default=None, metadata=_IN_JUNIT)
    library_bytes: int | None = field(default=None, metadata=_IN_JUNIT)
    library_path: str | None = field(default=None, metadata=_REPORTED)
    opencl_kernels: int | None = field(default=None, metadata=_REPORTED)
    opencl_compiler: str | None = field(default=None, metadata=_REPORTED)
    bundle_bytes: int | None = field(default=None, metadata=_IN_JUNIT)
    bundle_method: str | None = field(default=None, metadata=_REPORTED)
    downloaded_files: int | None = field(default=None, metadata=_IN_JUNIT)
    downloaded_bytes: int | None = field(default=None, metadata=_IN_JUNIT)
    download_seconds: float | None = field(default=None, metadata=_IN_JUNIT)
    weight_bytes: int | None = field(default=None, metadata=_REPORTED)
    hashed_bytes: int | None = field(default=None, metadata=_REPORTED)
    conversion: str | None = field(default=None, metadata=_REPORTED)  # "converted" or "cache"
    smoke: dict[str, Any] | None = field(
        default=None, metadata=_REPORTED
    )  # what the smoke run generated, and how fast
    required_vram_bytes: int | None = field(default=None, metadata=_REPORTED)
    # Found, but not reported.
    model_dir: str | None = field(default=None, metadata=_UNREPORTED)
    library_symbol: str | None = field(default=None, metadata=_UNREPORTED)
    opencl_source_bytes: int | None = field(default=None, metadata=_UNREPORTED)
    kernels_cached: bool | None = field(default=None, metadata=_UNREPORTED)

    def update(self, facts: dict[str, Any]) -> None:
        """Take the figures a step's report carried (their names are this class's fields)."""
        for name, value in facts.items():
            if name not in FIGURE_NAMES:
                raise KeyError(f"{name!r} is not a field of ModelFigures")
            setattr(self, name, value)

    def reported(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["report"]}


FIGURE_NAMES: frozenset[str] = frozenset(f.name for f in fields(ModelFigures))
JUNIT_FIGURES: tuple[str, ...] = tuple(f.name for f in fields(ModelFigures) if f.metadata["junit"])
