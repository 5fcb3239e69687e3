"""The per-model pipeline as plain functions: fetch, compile, validate, bundle.

One `ModelWork` holds one config entry's state for the process it runs in. Each step remembers its
result or its failure, so a later step whose prerequisite failed is skipped with the reason
instead of trying again, and a step run alone (`-k model::compile`, `--lf`) does its
prerequisites itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from packaging_plugin.assemble import bundle
from packaging_plugin.checks import opencl_kernels, validation
from packaging_plugin.compile.cache import JitPolicy, LibraryCache, cache_key, model_hash
from packaging_plugin.compile.runner import run_compile
from packaging_plugin.config.chat_config import (
    build_compile_request,
    default_model_lib,
    read_chat_config,
)
from packaging_plugin.config.devices import DEVICES, system_lib_prefix
from packaging_plugin.config.package_config import ModelEntry, PackageConfig
from packaging_plugin.harness.steps import Step
from packaging_plugin.run.smoke import SmokeSettings
from packaging_plugin.sources.fetch import FetchedModel, fetch_model

T = TypeVar("T")
KERNEL_RECORDS = "kernels-checked"  # under the cache root: kernel sources found to compile


class PrerequisiteFailed(Exception):
    """An earlier step of the same model failed; this one is skipped."""


@dataclass(frozen=True)
class RunSettings:
    """What every model's steps share in one run."""

    cache_root: Path
    policy: JitPolicy
    compile_timeout: float
    staging: Path  # the new output directory being assembled
    output: Path | None = None  # where the package is published (staging replaces it)
    mlc_source_dir: Path | None = None  # an MLC-LLM source tree, for the platform bindings
    # Makes the tqdm class of one download's bars, given the model_id (None: huggingface_hub's).
    progress: Callable[[str], type] | None = None
    smoke: SmokeSettings = field(default_factory=SmokeSettings)  # linux smoke runs


@dataclass(frozen=True)
class BuiltLibrary:
    """A model library ready to be packaged, and where it came from."""

    model_lib: str
    path: Path
    source: str  # "compiled", "cache" or "prebuilt"
    cache_key: str | None
    compile_seconds: float
    damage: str | None = None  # why a cached copy was compiled again

    @property
    def hit(self) -> bool:
        return self.source != "compiled"


class ModelWork:
    """One model entry's steps in this process."""

    def __init__(self, entry: ModelEntry, package: PackageConfig, settings: RunSettings) -> None:
        self.entry = entry
        self.package = package
        self.settings = settings
        self.device = DEVICES[package.device]
        self._done: dict[Step, Any] = {}
        self._failed: set[Step] = set()
        self._request: dict[str, Any] | None = None

    def _step(self, name: Step, work: Callable[[], T]) -> T:
        """Run a step once. A step that already failed makes its dependants skip; a step that
        fails while a later one runs it (when it was deselected) fails that later one."""
        if name in self._failed:
            raise PrerequisiteFailed(f"{name} failed")
        if name not in self._done:
            try:
                self._done[name] = work()
            except BaseException:
                self._failed.add(name)
                raise
        return self._done[name]

    @property
    def needs_weights(self) -> bool:
        """Bundled weights travel in the app; on linux the smoke run loads them."""
        return self.entry.bundle_weight or self.device.runs_smoke

    def fetched(self, *, offline: bool = False) -> FetchedModel:
        return self._step(
            Step.FETCH,
            lambda: fetch_model(
                self.entry,
                with_weights=self.needs_weights,
                cache_root=self.settings.cache_root,
                offline=offline,
                progress=self._progress(),
            ),
        )

    def _progress(self) -> Callable[[], type] | None:
        make = self.settings.progress
        return None if make is None else lambda: make(self.entry.model_id)

    def fetch(self, *, offline: bool = False) -> Path:
        """The model's MLC directory (downloaded, converted and verified as needed)."""
        return self.fetched(offline=offline).path

    def compile_request(self) -> dict[str, Any]:
        """The model's compile request, built from its chat config once."""
        if self._request is None:
            chat = read_chat_config(self.fetch())
            self._request = build_compile_request(chat, self.entry.overrides, self.package.device)
        return self._request

    def model_lib(self) -> str:
        if self.entry.model_lib is not None:
            return self.entry.model_lib
        request = self.compile_request()
        return default_model_lib(request, model_hash(request))

    def compile(self, policy: JitPolicy | None = None) -> BuiltLibrary:
        """The model's library: prebuilt, cached, or compiled now in a child process."""
        return self._step(
            Step.COMPILE, lambda: self._obtain_library(policy or self.settings.policy)
        )

    def _obtain_library(self, policy: JitPolicy) -> BuiltLibrary:
        model_lib = self.model_lib()
        prebuilt = self.package.prebuilt_libs.get(model_lib)
        if prebuilt is not None:
            return BuiltLibrary(model_lib, prebuilt, "prebuilt", None, 0.0)
        request = self.compile_request()
        prefix = system_lib_prefix(model_lib)
        key = cache_key(request, prefix)
        full_request = {**request, "system_lib_prefix": prefix}
        cached = LibraryCache(self.settings.cache_root).obtain(
            key,
            policy,
            lambda out: run_compile(full_request, out, self.settings.compile_timeout),
        )
        return BuiltLibrary(
            model_lib,
            cached.path,
            "cache" if cached.hit else "compiled",
            key,
            cached.compile_seconds,
            cached.damage,
        )

    def validate(self) -> validation.LibraryFacts:
        def check() -> validation.LibraryFacts:
            library = self.compile()
            # The request lets validation check the library's _metadata against the chat config.
            return validation.validate_model_library(
                library.path, library.model_lib, self.device, self.compile_request()
            )

        return self._step(Step.VALIDATE, check)

    def kernels(self) -> opencl_kernels.KernelCheck:
        """Compile the library's OpenCL kernels as the phone will (android only)."""

        def check() -> opencl_kernels.KernelCheck:
            contents = self.validate().contents
            if contents is None:
                raise opencl_kernels.KernelsNotChecked(
                    "the library predates the blob layout this version reads: its kernels are "
                    "not checked"
                )
            if contents.kernel_source_kind != "opencl":
                raise opencl_kernels.KernelsNotChecked(
                    f"the library carries no OpenCL kernels (its kernel module: "
                    f"{contents.kernel_source_kind or 'none'})"
                )
            where = f"{self.entry.model_id}'s library"
            found = opencl_kernels.kernels_of(contents.kernel_payload, where)
            return opencl_kernels.check_kernels(found, self.settings.cache_root / KERNEL_RECORDS)

        return self._step(Step.KERNELS, check)

    def bundle(self, *, offline: bool = False) -> bundle.BundleResult:
        """Place the weights into the staged bundle (linked or copied, verified)."""

        def copy() -> bundle.BundleResult:
            fetched = self.fetched(offline=offline)
            destination = self.settings.staging / "bundle" / self.entry.model_id
            try:
                return bundle.bundle_weights(fetched.path, destination, hardlink=fetched.immutable)
            except BaseException:
                shutil.rmtree(destination, ignore_errors=True)
                raise

        return self._step(Step.BUNDLE, copy)
