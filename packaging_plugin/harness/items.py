"""The collection tree: a config file, one node per model, one item per step."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from packaging_plugin.checks.opencl_kernels import KernelsNotChecked
from packaging_plugin.checks.vram import VramEstimateError, estimate_vram
from packaging_plugin.compile.cache import toolchain_versions
from packaging_plugin.config.chat_config import read_chat_config
from packaging_plugin.config.devices import DEVICES
from packaging_plugin.config.package_config import ModelEntry, PackageConfig
from packaging_plugin.errors import PackagingError, describe_os_error
from packaging_plugin.harness.model_work import ModelWork, PrerequisiteFailed, RunSettings
from packaging_plugin.harness.steps import FIGURE_NAMES, model_steps
from packaging_plugin.redaction import redact


class PackagingWarning(pytest.PytestWarning):
    """Something a user should know that does not fail a step."""

    def __init__(self, message: str) -> None:
        # Its message may quote a file or an error that carries a URL with credentials.
        super().__init__(redact(message))


class VramUnderestimateWarning(PackagingWarning):
    """The config declares less device memory than the library needs."""


class PackageConfigFile(pytest.File):
    """`mlc-package-config.json` as a collector of its models."""

    package: PackageConfig
    settings: RunSettings

    def collect(self) -> Iterator[ModelNode]:
        for entry in self.package.models:
            yield ModelNode.from_parent(self, name=entry.model_id, entry=entry)


class ModelNode(pytest.Collector):
    """One model entry; its steps share a ModelWork so they run once, in order, on one worker."""

    def __init__(self, *, entry: ModelEntry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        parent: PackageConfigFile = self.parent  # type: ignore[assignment]
        self.work = ModelWork(entry, parent.package, parent.settings)

    def collect(self) -> Iterator[StepItem]:
        parent: PackageConfigFile = self.parent  # type: ignore[assignment]
        for step in model_steps(self.entry, DEVICES[parent.package.device]):
            yield StepItem.from_parent(self, name=step.value)


class StepItem(pytest.Item):
    """One step of one model; its work is the ModelWork method of the same name.

    Figures a step finds (model_lib, cache hit, seconds, bytes) go into `facts`, which ride on the
    step's report (so they reach the xdist controller) as the attribute `package_facts`. They are
    not testcase user_properties: the JUnit schema CI tools validate against has no properties on
    test cases, so the controller writes them as suite properties instead.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.facts: dict[str, Any] = {}
        self.prerequisite_failed = False  # skipped because an earlier step of the model failed

    @property
    def model(self) -> ModelNode:
        return self.parent  # type: ignore[return-value]

    def runtest(self) -> None:
        run: Callable[[], Any] = getattr(self, f"_run_{self.name}")
        try:
            run()
        except PrerequisiteFailed as skipped:
            self.prerequisite_failed = True
            pytest.skip(str(skipped))

    def _property(self, name: str, value: object) -> None:
        assert name in FIGURE_NAMES, f"{name} is not a field of ModelFigures"
        self.facts[name] = value

    def _run_fetch(self) -> None:
        self.facts.update(self.model.work.fetched().facts())

    def _run_compile(self) -> None:
        library = self.model.work.compile()
        self._property("model_lib", library.model_lib)
        self._property("library_source", library.source)
        self._property("cache", "hit" if library.hit else "rebuilt" if library.damage else "miss")
        if library.damage:
            message = f"{self.model.entry.model_id}: {library.damage}; compiled it again"
            warnings.warn(PackagingWarning(message), stacklevel=1)
        self._property("compile_seconds", round(library.compile_seconds, 3))
        self._property("library_bytes", library.path.stat().st_size)
        self._property("library_path", str(library.path))
        if library.cache_key:
            self._property("cache_key", library.cache_key)
            # The key covers the compiler's versions, so a cached library was built by these too.
            self._property("compiled_with", toolchain_versions())

    def _run_validate(self) -> None:
        facts = self.model.work.validate()
        self._property("library_symbol", facts.symbol)
        if facts.contents is not None and facts.contents.metadata is not None:
            self._check_vram(facts.contents.metadata)

    def _check_vram(self, metadata: dict[str, Any]) -> None:
        """Warn (not fail) when the config declares less memory than the library needs."""
        entry = self.model.entry
        try:
            estimate = estimate_vram(metadata, read_chat_config(self.model.work.fetch()))
        except VramEstimateError as error:
            message = f"{entry.model_id}: memory not estimated: {error}"
            warnings.warn(PackagingWarning(message), stacklevel=1)
            return
        self._property("required_vram_bytes", estimate.total)
        if entry.estimated_vram_bytes < estimate.total:
            warnings.warn(
                VramUnderestimateWarning(
                    f"{entry.model_id}: estimated_vram_bytes is {entry.estimated_vram_bytes:,} "
                    f"but the library needs about {estimate.total:,} (weights "
                    f"{estimate.params_bytes:,}, workspace {estimate.workspace_bytes:,}, KV cache "
                    f"{estimate.kv_cache_bytes:,} for one full context window)"
                ),
                stacklevel=1,
            )

    def _run_kernels(self) -> None:
        try:
            check = self.model.work.kernels()
        except KernelsNotChecked as reason:
            pytest.skip(f"{self.model.entry.model_id} kernels: {reason}")
        self._property("opencl_kernels", check.kernels)
        self._property("opencl_source_bytes", check.source_bytes)
        self._property("opencl_compiler", check.compiler)
        self._property("kernels_cached", check.cached)

    def _run_bundle(self) -> None:
        result = self.model.work.bundle()
        self._property("bundle_bytes", result.bytes)
        self._property("bundle_method", result.method)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, PackagingError):
            return f"{self.model.entry.model_id} {self.name}: {excinfo.value}"
        if isinstance(excinfo.value, OSError):  # a machine's condition: a full disk, a permission
            return f"{self.model.entry.model_id} {self.name}: {describe_os_error(excinfo.value)}"
        return super().repr_failure(excinfo, style=style)  # type: ignore[return-value]

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.model.entry.model_id}::{self.name}"
