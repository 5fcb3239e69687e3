"""The plugin object of one packaging run: collection, per-model results, package steps, summary.

Registered by `plugin.pytest_configure` only when `--package-config` is given. Under xdist every
worker and the controller have one; only the controller (or the single process) runs the package
steps, after all model items are done.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from xdist import is_xdist_worker

from packaging_plugin.assemble.package_steps import ModelOutcome, PackageAssembly, StepResult
from packaging_plugin.assemble.staging import StagedOutput
from packaging_plugin.compile.cache import cache_root, jit_policy
from packaging_plugin.config.devices import DEVICES
from packaging_plugin.config.names import PACKAGE_NODE_NAME
from packaging_plugin.config.package_config import PackageConfig, load_package_config
from packaging_plugin.config.problems import ConfigError
from packaging_plugin.errors import PackagingError, describe_os_error
from packaging_plugin.harness.items import PackageConfigFile
from packaging_plugin.harness.junit import add_figures, junit_writer
from packaging_plugin.harness.model_work import RunSettings
from packaging_plugin.harness.progress import progress_factory
from packaging_plugin.harness.report import (
    REPORT_NAME,
    build_report,
    clear_failed_report,
    keep_failed_report,
    smoke_lines,
    summary_table,
    write_report,
)
from packaging_plugin.harness.startup import (
    check_cache_root,
    check_temp_dir,
    prepare_output,
    sweep_dead_runs,
)
from packaging_plugin.harness.steps import PACKAGE_STEPS, Step
from packaging_plugin.redaction import redact, redact_report, redact_value
from packaging_plugin.run.smoke import SmokeSettings

WORKER_STAGING_KEY = "mlc_package_staging"
# Whether the user chose an xdist distribution mode, read before xdist turns "no" into "load".
DIST_CHOSEN = pytest.StashKey[bool]()
_NOT_PACKAGED = (
    pytest.ExitCode.INTERRUPTED,
    pytest.ExitCode.INTERNAL_ERROR,
    pytest.ExitCode.USAGE_ERROR,
)


def smoke_settings(config: pytest.Config) -> SmokeSettings:
    given = {
        "prompt": config.getoption("package_smoke_prompt"),
        "tokens": config.getoption("package_smoke_tokens"),
        "timeout": config.getoption("package_smoke_timeout"),
    }
    if given["tokens"] is not None and given["tokens"] < 1:
        raise pytest.UsageError("--package-smoke-tokens: expected a whole number of 1 or more")
    return SmokeSettings(**{name: value for name, value in given.items() if value is not None})


def _source_dir(config: pytest.Config) -> Path | None:
    given = config.getoption("mlc_llm_source_dir")
    return Path(given).expanduser().absolute() if given else None


def start_package_session(config: pytest.Config) -> PackageSession:
    """Read the config and set up the run; a user's mistake becomes a usage error (exit 4)."""
    config_path = Path(config.getoption("package_config")).expanduser().absolute()
    try:
        package = load_package_config(config_path)
        policy = jit_policy()
    except (ConfigError, ValueError) as error:
        raise pytest.UsageError(str(error)) from None
    output = Path(config.getoption("package_output")).expanduser().absolute()
    cache = cache_root().absolute()
    worker_input = getattr(config, "workerinput", None)
    swept: list[Path] = []
    if worker_input is not None:
        staged = StagedOutput(output, Path(worker_input[WORKER_STAGING_KEY]))
    else:
        staged = StagedOutput(output)
        try:
            check_temp_dir()
            check_cache_root(cache, policy)
            swept = sweep_dead_runs(staged, cache)
            if not config.getoption("collectonly"):
                prepare_output(staged, config_path, cache)
        except PackagingError as error:
            raise pytest.UsageError(str(error)) from None
    settings = RunSettings(
        cache_root=cache,
        policy=policy,
        compile_timeout=config.getoption("package_compile_timeout"),
        staging=staged.staging,
        output=output,
        mlc_source_dir=_source_dir(config),
        progress=progress_factory(config),
        smoke=smoke_settings(config),
    )
    session = PackageSession(config, package, settings, staged, is_worker=worker_input is not None)
    session.swept = swept
    return session


class PackageSession:
    def __init__(
        self,
        config: pytest.Config,
        package: PackageConfig,
        settings: RunSettings,
        staged: StagedOutput,
        *,
        is_worker: bool,
    ) -> None:
        self.config = config
        self.package = package
        self.settings = settings
        self.staged = staged
        self.is_worker = is_worker
        self.outcomes: dict[str, ModelOutcome] = defaultdict(ModelOutcome)
        self.durations: dict[str, dict[str, float]] = defaultdict(dict)
        self.report: dict[str, Any] | None = None
        self.package_results: list[StepResult] = []
        self.publish_error: str | None = None  # why a passing package was not published
        self.swept: list[Path] = []  # what dead runs had left, removed at start
        self.failed_report: Path | None = None  # where this failed run's report went

    def header_lines(self) -> list[str]:
        lines = [
            f"package config: {self.package.path} (device {self.package.device}, "
            f"{len(self.package.models)} models)",
            f"output: {self.staged.output}; cache: {self.settings.cache_root}; "
            f"MLC_JIT_POLICY={self.settings.policy.value}",
        ]
        if self.swept:
            shown = ", ".join(str(path) for path in self.swept[:5])
            more = f" and {len(self.swept) - 5} more" if len(self.swept) > 5 else ""
            lines.append(f"removed {len(self.swept)} leftovers of runs that died: {shown}{more}")
        return [redact(line) for line in lines]

    # -- collection ---------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        """Make the config file the collection argument (node ids of it given by the user stay)."""
        config = session.config
        own = [arg for arg in config.args if self._names_config(arg)]
        config.args = own or [str(self.package.path)]

    def _names_config(self, arg: str) -> bool:
        file_part = arg.split("::", 1)[0]
        return Path(file_part).expanduser().absolute() == self.package.path

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
        if file_path.absolute() != self.package.path:
            return None
        node = PackageConfigFile.from_parent(
            parent, path=file_path, nodeid=self._config_file_nodeid()
        )
        node.package = self.package
        node.settings = self.settings
        return node

    def _config_file_nodeid(self) -> str:
        """The config's node id: relative to the rootdir, or its absolute path when outside.

        pytest names a file outside the rootdir by its path relative to the argument, which for a
        config given as the argument is the empty string: node ids like `::model::step` that
        cannot be re-run. The absolute path is both readable and re-runnable from anywhere.
        """
        try:
            return self.package.path.relative_to(self.config.rootpath).as_posix()
        except ValueError:
            return self.package.path.as_posix()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.config.getoption("collectonly") and not self.is_worker:
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line("")
                reporter.write_line("package steps, run after the model steps:")
                for step in PACKAGE_STEPS:
                    reporter.write_line(f"  {self._package_nodeid(step)}")
                if DEVICES[self.package.device].runs_smoke:
                    for entry in self.package.models:
                        reporter.write_line(f"  {self._model_nodeid(entry.model_id, Step.SMOKE)}")

    # -- results ------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        report = yield
        facts = getattr(item, "facts", None)
        if facts:
            report.package_facts = redact_value(dict(facts))
        if getattr(item, "prerequisite_failed", False):
            report.package_prerequisite_failed = True
        redact_report(report)  # here, before the terminal, JUnit or xdist sees it
        return report

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if getattr(report, "package_prerequisite_failed", False):
            self._keep_for_last_failed(report.nodeid)
        parts = report.nodeid.rsplit("::", 2)
        if len(parts) != 3 or parts[1] == PACKAGE_NODE_NAME:
            return
        _, model_id, step = parts
        if model_id not in {m.model_id for m in self.package.models}:
            return
        outcome = self.outcomes[model_id]
        if report.failed or (report.skipped and report.when != "teardown"):
            outcome.steps[step] = report.outcome
        elif report.when == "call":
            outcome.steps.setdefault(step, report.outcome)
        if report.when == "call":
            self.durations[model_id][step] = report.duration
            outcome.figures.update(getattr(report, "package_facts", {}))

    def _keep_for_last_failed(self, nodeid: str) -> None:
        """Make `--lf` redo a step skipped because an earlier one failed.

        pytest forgets skipped items in its last-failed list, so after a failed fetch `--lf`
        would redo the fetch alone and the model would still have no library. Running trylast,
        after the cache plugin has dropped the item, puts it back.
        """
        last_failed = getattr(self.config.pluginmanager.get_plugin("lfplugin"), "lastfailed", None)
        if isinstance(last_failed, dict):
            last_failed[nodeid] = True

    # -- package steps ------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if is_xdist_worker(session):
            return
        published = False
        try:
            if self.config.getoption("collectonly") or exitstatus in _NOT_PACKAGED:
                return
            published = self._package()
            if not published:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        finally:
            # Whatever went wrong (a step, the report, the publish, an interrupt), the staging
            # directory goes and the previous output stays as it was.
            if not published:
                self.staged.discard()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """A run that ends before the session does (`--help`, `--markers`) made a staging
        directory too; it goes here (after a publish it is gone already)."""
        if not self.is_worker:
            self.staged.discard()

    def _package(self) -> bool:
        """Run the package steps, report them and publish; whether the new output is in place."""
        assembly = PackageAssembly(self.package, self.settings, dict(self.outcomes))
        self.package_results = assembly.run()
        self._log_package_reports(self.package_results)
        self.report = build_report(
            self.package,
            self.outcomes,
            self.durations,
            assembly.model_libs,
            assembly.libraries,
            self.package_results,
        )
        self.report["swept"] = [str(path) for path in self.swept]
        self._add_junit_properties()
        if not assembly.succeeded:
            self._keep_failed_report()
            return False
        try:
            write_report(self.settings.staging / REPORT_NAME, self.report)
            self.staged.publish()
        except (OSError, PackagingError) as error:
            self.publish_error = (
                f"{describe_os_error(error)}" if isinstance(error, OSError) else str(error)
            )
            self.report["publish_error"] = self.publish_error
            self.report["outcome"] = "failed"
            # Every test case passed: JUnit readers learn why the run failed from this property.
            if (xml := junit_writer(self.config)) is not None:
                xml.add_global_property(
                    f"{PACKAGE_NODE_NAME}.publish_error", redact(self.publish_error)
                )
            self._keep_failed_report()
            return False
        clear_failed_report(self.staged.output)
        return True

    def _keep_failed_report(self) -> None:
        """The report of a run that did not publish goes beside the output (never into it)."""
        assert self.report is not None
        self.failed_report = keep_failed_report(self.staged.output, self.report)

    def _add_junit_properties(self) -> None:
        if (xml := junit_writer(self.config)) is not None and self.report is not None:
            add_figures(xml, self.report, self.package_results)

    def _package_nodeid(self, step: str) -> str:
        return self._model_nodeid(PACKAGE_NODE_NAME, step)

    def _model_nodeid(self, model_id: str, step: str) -> str:
        return f"{self._config_file_nodeid()}::{model_id}::{step}"

    def _log_package_reports(self, results: list[StepResult]) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            # Under xdist the progress line is left open; start the section on a line of its own.
            if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                reporter.write_line("")
            reporter.section("package steps", sep="-")
            # The progress counter covers the collected items only; these steps would read >100%.
            reporter._show_progress_info = False
        location_file = self._package_nodeid("x").split("::", 1)[0]
        for result in results:
            # A model's own step (smoke) is reported under that model's node id.
            owner = result.model_id or PACKAGE_NODE_NAME
            nodeid = self._model_nodeid(owner, result.name)
            longrepr: Any = None
            what = f"{owner} {result.name}" if result.model_id else f"package {result.name}"
            message = redact(result.message)
            if result.outcome == "skipped":
                longrepr = (location_file, None, f"Skipped: {what}: {message}")
            elif result.outcome == "failed":
                longrepr = f"{what}: {message}"
            report = pytest.TestReport(
                nodeid=nodeid,
                location=(location_file, None, f"{owner}::{result.name}"),
                keywords={result.name: 1, owner: 1},
                outcome=result.outcome,  # type: ignore[arg-type]
                longrepr=longrepr,
                when="call",
                duration=result.duration,
            )
            if result.model_id:
                report.package_facts = redact_value(dict(result.figures))  # the model's figures
            self.config.hook.pytest_runtest_logreport(report=report)
        if reporter is not None:
            reporter.ensure_newline()

    # -- summary ------------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or self.report is None:
            return
        terminalreporter.section("package summary")
        for line in summary_table(self.report):
            terminalreporter.write_line(redact(line))
        if generated := smoke_lines(self.report):
            terminalreporter.write_line("generated by the packaged library:")
            for line in generated:
                terminalreporter.write_line(redact(f"  {line}"))
        if self.publish_error:
            why = f" (not updated: it could not be written: {redact(self.publish_error)})"
        elif self.report["outcome"] != "passed":
            why = " (not updated: the package steps failed)"
        else:
            why = ""
        terminalreporter.write_line(f"output: {self.staged.output}{why}")
        if self.failed_report is not None:
            terminalreporter.write_line(f"report of this run: {self.failed_report}")


class XdistHooks:
    """Hooks that exist only when pytest-xdist is installed."""

    def __init__(self, session: PackageSession) -> None:
        self.session = session

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_STAGING_KEY] = str(self.session.settings.staging)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Keep one model's steps on one worker, in order: schedule by scope (the model node).

        Only when the user chose no distribution mode; a `--dist` given anywhere (the command
        line, `addopts`, `PYTEST_ADDOPTS`) is respected.
        """
        if config.stash.get(DIST_CHOSEN, False):
            return None
        from xdist.scheduler import LoadScopeScheduling

        return LoadScopeScheduling(config, log)
