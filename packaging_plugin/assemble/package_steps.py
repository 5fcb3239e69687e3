"""Package-level steps, run once after every model step: library, link, app-config, bindings,
and on linux each model's smoke run (reported under the model's own node id).

They always cover the whole config. A model that this run did not work on (deselected with `-k`,
not re-run by `--lf`, or cut off by `-x`) is taken from the cache; if it is not there, the step
fails naming it, and nothing is published.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging_plugin.assemble import bindings, linking
from packaging_plugin.assemble.app_config import APP_CONFIG_NAME, app_config_entry, write_app_config
from packaging_plugin.checks import objects, opencl_kernels, validation
from packaging_plugin.compile.cache import JitPolicy
from packaging_plugin.config.devices import DEVICES, DeviceSpec, system_lib_prefix
from packaging_plugin.config.package_config import ModelEntry, PackageConfig
from packaging_plugin.errors import PackagingError, describe_os_error
from packaging_plugin.harness.model_work import BuiltLibrary, ModelWork, RunSettings
from packaging_plugin.harness.steps import PACKAGE_STEPS, ModelFigures, Step
from packaging_plugin.redaction import redact
from packaging_plugin.run import smoke
from packaging_plugin.sources.fetch import FetchError
from packaging_plugin.temporaries import temp_dir


@dataclass
class ModelOutcome:
    """What this run's reports said about one model."""

    steps: dict[str, str] = field(default_factory=dict)  # step -> passed | failed | skipped
    figures: ModelFigures = field(default_factory=ModelFigures)

    def failed_steps(self) -> list[str]:
        return [step for step, outcome in self.steps.items() if outcome == "failed"]


@dataclass
class StepResult:
    """The outcome of one package step, turned into a test report by the plugin."""

    name: Step
    outcome: str  # passed | failed | skipped
    message: str = ""
    duration: float = 0.0
    properties: list[tuple[str, Any]] = field(default_factory=list)
    model_id: str | None = None  # a step of one model (smoke), reported under its node id
    figures: dict[str, Any] = field(default_factory=dict)  # into that model's ModelFigures

    def __post_init__(self) -> None:
        # Every step's message is made here, from errors (with their tracebacks) that may quote
        # a URL with credentials; it goes to the terminal, JUnit and the report.
        self.message = redact(self.message)


class StepFailed(PackagingError):
    pass


class StepSkipped(Exception):
    pass


@dataclass
class PackageAssembly:
    """The package steps of one run, sharing what earlier steps found."""

    package: PackageConfig
    settings: RunSettings
    outcomes: dict[str, ModelOutcome]
    model_libs: dict[str, str] = field(default_factory=dict)  # model_id -> model_lib
    libraries: dict[str, Path] = field(default_factory=dict)  # model_id -> library tar
    results: list[StepResult] = field(default_factory=list)

    @property
    def device(self) -> DeviceSpec:
        return DEVICES[self.package.device]

    def run(self) -> list[StepResult]:
        work = {
            Step.LIBRARY: self.build_library,
            Step.LINK: self.link_archive,
            Step.APP_CONFIG: self.write_app_config,
            Step.BINDINGS: self.build_bindings,
        }
        for step in PACKAGE_STEPS:
            self._run_step(step, work[step])
        if self.device.runs_smoke:
            try:
                self._run_smokes()
            except OSError as fault:
                self._fail_remaining_smokes(describe_os_error(fault))
            except Exception as error:
                self._fail_remaining_smokes(f"{error!r}\n{traceback.format_exc()}")
        return self.results

    def _fail_remaining_smokes(self, message: str) -> None:
        """Every model whose smoke run has no result yet fails with `message`."""
        done = {r.model_id for r in self.results if r.name == Step.SMOKE}
        for entry in self.package.models:
            if entry.model_id not in done:
                failed = StepResult(Step.SMOKE, "failed", message, model_id=entry.model_id)
                self.results.append(failed)

    def _passed(self, name: Step) -> bool:
        return any(r.name == name and r.outcome == "passed" for r in self.results)

    @property
    def succeeded(self) -> bool:
        return all(result.outcome != "failed" for result in self.results)

    def _run_step(self, name: Step, work: Callable[[], list[tuple[str, Any]] | None]) -> None:
        started = time.perf_counter()
        try:
            properties = work() or []
            result = StepResult(name, "passed", properties=properties)
        except StepSkipped as skipped:
            result = StepResult(name, "skipped", str(skipped))
        except PackagingError as failure:
            result = StepResult(name, "failed", str(failure))
        except OSError as fault:  # a machine's condition: the path and the cause say it all
            result = StepResult(name, "failed", describe_os_error(fault))
        except Exception as error:  # a defect: the traceback says where
            result = StepResult(name, "failed", f"{error!r}\n{traceback.format_exc()}")
        result.duration = time.perf_counter() - started
        self.results.append(result)

    def _outcome(self, entry: ModelEntry) -> ModelOutcome:
        return self.outcomes.get(entry.model_id, ModelOutcome())

    def _library_for(self, entry: ModelEntry) -> tuple[str, Path]:
        """The model's library from this run, else from the cache; StepFailed names the model."""
        outcome = self._outcome(entry)
        if failed := outcome.failed_steps():
            raise StepFailed(f"{entry.model_id}: {', '.join(failed)} failed in this run")
        figures = outcome.figures
        if outcome.steps.get(Step.VALIDATE) == "passed" and figures.library_path is not None:
            assert figures.model_lib is not None  # the compile step found both
            return figures.model_lib, Path(figures.library_path)
        work = ModelWork(entry, self.package, self.settings)
        try:
            library: BuiltLibrary = work.compile(policy=JitPolicy.READONLY)
            work.validate()
            if self.device.checks_opencl_kernels:
                # Kernels that cannot be checked here are reported by the model's own step.
                with contextlib.suppress(opencl_kernels.KernelsNotChecked):
                    work.kernels()
        except Exception as error:
            raise StepFailed(
                f"{entry.model_id}: not built in this run and not usable from the cache ({error})"
            ) from None
        return library.model_lib, library.path

    def build_library(self) -> list[tuple[str, Any]]:
        device = self.device
        problems = []
        for entry in self.package.models:
            try:
                model_lib, path = self._library_for(entry)
            except StepFailed as problem:
                problems.append(str(problem))
                continue
            self.model_libs[entry.model_id] = model_lib
            self.libraries[entry.model_id] = path
        if problems:
            raise StepFailed(
                "the package needs every model of the config:\n  " + "\n  ".join(problems)
            )
        # Entries may share a model_lib (one library under two ids): it goes in once.
        library_of = {lib: self.libraries[mid] for mid, lib in self.model_libs.items()}
        members = [
            objects.ArchiveMember(
                validation.archive_member_name(model_lib, member.name), member.data
            )
            for model_lib, library in library_of.items()
            for member in objects.read_library_tar(library)
        ]
        archive = self._archive
        archive.parent.mkdir(parents=True, exist_ok=True)
        objects.write_archive(archive, members, index=device.archive_index)
        validation.validate_combined_archive(archive, dict(self.model_libs), device)
        return [("archive", str(archive.name)), ("archive_bytes", archive.stat().st_size)]

    @property
    def _archive(self) -> Path:
        return self.settings.staging / "lib" / f"libmodel_{self.package.device}.a"

    @property
    def _shared_library(self) -> Path:
        """The archive linked whole (devices whose link kind is "shared")."""
        return self.settings.staging / "lib" / f"libmodel_{self.package.device}.so"

    def link_archive(self) -> list[tuple[str, Any]]:
        if not self._passed(Step.LIBRARY):
            raise StepSkipped("library failed: there is no archive to link")
        if self.device.link_kind != "shared":
            return self._check_static_link()
        try:
            so = linking.link_shared_linux(
                self._archive, self._shared_library, self.model_libs, self.device
            )
        except linking.LinkError as error:
            raise StepFailed(str(error)) from None
        return [("shared_library", so.name), ("shared_library_bytes", so.stat().st_size)]

    def _check_static_link(self) -> list[tuple[str, Any]]:
        with temp_dir("mlc-link-") as work:
            try:
                linker = linking.check_static_link(
                    self._archive, Path(work), self.model_libs, self.device
                )
            except linking.LinkerMissing as missing:
                raise StepSkipped(str(missing)) from None
            except linking.LinkError as error:
                raise StepFailed(str(error)) from None
        return [("linker", linker)]

    def _run_smokes(self) -> None:
        """Each model generates from the packaged shared library, in child processes."""
        if not self._passed(Step.LINK) or not self._passed(Step.APP_CONFIG):
            for entry in self.package.models:
                self.results.append(
                    StepResult(
                        Step.SMOKE,
                        "skipped",
                        "the package did not link or its app config is missing",
                        model_id=entry.model_id,
                    )
                )
            return
        jobs, results = [], {}
        for entry in self.package.models:
            try:
                jobs.append(self._smoke_job(entry))
            except StepFailed as problem:
                results[entry.model_id] = smoke.SmokeError(str(problem))
        started = time.perf_counter()
        results.update(smoke.run_smokes(self._shared_library, jobs, self.settings.smoke))
        seconds = (time.perf_counter() - started) / max(1, len(jobs))  # one child ran them all
        for entry in self.package.models:
            found = results[entry.model_id]
            if isinstance(found, smoke.SmokeError):
                result = StepResult(Step.SMOKE, "failed", str(found), model_id=entry.model_id)
            else:
                properties = [(f"smoke_{name}", value) for name, value in found.items()]
                result = StepResult(
                    Step.SMOKE,
                    "passed",
                    properties=properties,
                    model_id=entry.model_id,
                    figures={"smoke": found},
                )
            result.duration = seconds
            self.results.append(result)

    def _smoke_job(self, entry: ModelEntry) -> smoke.SmokeJob:
        if entry.bundle_weight:
            weights = self.settings.staging / "bundle" / entry.model_id
        else:
            try:
                weights = ModelWork(entry, self.package, self.settings).fetch(offline=True)
            except FetchError as error:
                raise StepFailed(f"the weights are not at hand: {error}") from None
        prefix = system_lib_prefix(self.model_libs[entry.model_id])
        return smoke.SmokeJob(entry.model_id, prefix, weights)

    def build_bindings(self) -> list[tuple[str, Any]] | None:
        kind = self.device.binding_kind
        if kind == "shared-library":
            if not self._passed(Step.LINK):
                raise StepSkipped(
                    f"lib/{self._shared_library.name} was not made: the link step did not pass"
                )
            # The binding is the shared library the link step made, which the TVM runtime of
            # the apache-tvm wheel loads as it is.
            return [("binding", self._shared_library.name)]
        if not self._passed(Step.LIBRARY):
            raise StepSkipped("library failed: there is no archive to build a binding with")
        if kind == "mlc4j":
            return self._build_mlc4j()
        return self._build_ios_runtime()

    def _build_mlc4j(self) -> list[tuple[str, Any]]:
        source = self.settings.mlc_source_dir
        missing = bindings.android_missing(source, os.environ)
        if not self._passed(Step.APP_CONFIG):
            missing.append("the app config (app-config did not pass), which mlc4j's assets carry")
        if missing:
            raise StepSkipped(
                bindings.describe_missing("the mlc4j Android binding", missing)
                + "; lib/libmodel_android.a is complete"
            )
        assert source is not None  # android_missing names a missing source dir
        work = bindings.work_dir(self.settings.cache_root, "android", source)
        try:
            bindings.build_mlc4j(
                source,
                work,
                self._archive,
                self.settings.staging / "bundle" / APP_CONFIG_NAME,
                self.settings.staging / "lib" / "mlc4j",
                self.model_libs,
                self.device,
                os.environ,
            )
        except bindings.BindingFailed as error:
            raise StepFailed(str(error)) from None
        return [("binding", "lib/mlc4j"), ("build_log", str(work / "prepare_libs.log"))]

    def _build_ios_runtime(self) -> list[tuple[str, Any]]:
        device = self.package.device
        lib_dir = self.settings.staging / "lib"
        output = self.settings.output or self.package.path.parent / "dist"
        relative_lib = Path(os.path.relpath(output / "lib", self.package.path.parent)).as_posix()
        xcconfig = bindings.write_xcconfig(lib_dir, device, relative_lib)
        source = self.settings.mlc_source_dir
        missing = bindings.ios_missing(source, os.environ)
        if missing:
            names = ", ".join(f"lib{name}.a" for name in bindings.IOS_RUNTIME_LIBRARIES)
            raise StepSkipped(
                f"wrote lib/{xcconfig.name}; "
                + bindings.describe_missing(
                    f"the iOS runtime libraries ({names})", missing, plural=True
                )
            )
        assert source is not None  # ios_missing names a missing source dir
        work = bindings.work_dir(self.settings.cache_root, device, source)
        try:
            copied = bindings.build_ios_runtime(source, work, self.device, lib_dir, os.environ)
        except bindings.BindingFailed as error:
            raise StepFailed(str(error)) from None
        return [("xcconfig", xcconfig.name), ("runtime_libraries", ", ".join(copied))]

    def write_app_config(self) -> list[tuple[str, Any]]:
        if len(self.model_libs) != len(self.package.models):
            raise StepSkipped("library failed: the model_lib of every model is not known")
        self._complete_bundles()
        records = [
            app_config_entry(entry, self.model_libs[entry.model_id])
            for entry in self.package.models
        ]
        path = self.settings.staging / "bundle" / APP_CONFIG_NAME
        write_app_config(path, records)
        return [("models", len(records))]

    def _complete_bundles(self) -> None:
        """Bundle the weights of models whose bundle step did not run in this run."""
        problems = []
        for entry in self.package.models:
            if not entry.bundle_weight or self._outcome(entry).steps.get(Step.BUNDLE) == "passed":
                continue
            try:
                ModelWork(entry, self.package, self.settings).bundle(offline=True)
            except Exception as error:
                problems.append(f"{entry.model_id}: weights could not be bundled ({error})")
        if problems:
            raise StepFailed("\n".join(problems))
