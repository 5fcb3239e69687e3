"""pytest hooks of pytest-mlc-package. They stay thin: the work lives in plain modules.

Loading this module must stay cheap (every pytest run on the machine loads it through the entry
point): nothing heavy is imported until `--package-config` turns the plugin on.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from packaging_plugin.harness.session import PackageSession

DEFAULT_COMPILE_TIMEOUT = 1800.0
PLUGIN_NAME = "mlc_package_session"
_SIGTERM_BEFORE = pytest.StashKey[Any]()  # the SIGTERM handler a run replaced

HELP_CONFIG = "mlc-package-config.json to package (turns the plugin on)."
HELP_OUTPUT = "Output directory (default: ./dist in the current directory)."
HELP_SOURCE = "MLC-LLM source tree for the platform runtime builds (default: $MLC_LLM_SOURCE_DIR)."
HELP_SMOKE_PROMPT = "Prompt of the linux smoke runs (default: a fixed question)."
HELP_SMOKE_TOKENS = "Tokens each linux smoke run generates (default: 16)."
HELP_SMOKE_TIMEOUT = "Seconds one model's smoke run may take (default: 600)."
HELP_TIMEOUT = (
    "Seconds one model's compile may run before it is killed "
    f"(default: {DEFAULT_COMPILE_TIMEOUT:g})."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlc-package", "packaging LLMs for on-device apps (MLC-LLM)")
    group.addoption("--package-config", metavar="PATH", help=HELP_CONFIG)
    group.addoption("--package-output", metavar="DIR", default="dist", help=HELP_OUTPUT)
    group.addoption(
        "--mlc-llm-source-dir",
        metavar="DIR",
        default=os.environ.get("MLC_LLM_SOURCE_DIR"),
        help=HELP_SOURCE,
    )
    group.addoption(
        "--package-compile-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_COMPILE_TIMEOUT,
        help=HELP_TIMEOUT,
    )
    # Defaults live in run/smoke.py; None here means "the default" so that module is not imported.
    group.addoption("--package-smoke-prompt", metavar="TEXT", help=HELP_SMOKE_PROMPT)
    group.addoption("--package-smoke-tokens", metavar="N", type=int, help=HELP_SMOKE_TOKENS)
    group.addoption(
        "--package-smoke-timeout", metavar="SECONDS", type=float, help=HELP_SMOKE_TIMEOUT
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("package_config"):
        return
    from packaging_plugin import lifetime
    from packaging_plugin.harness.session import start_package_session

    if hasattr(config, "workerinput"):  # an xdist worker: it ends when its controller does
        lifetime.tie_to_parent(os.getppid())
    config.stash[_SIGTERM_BEFORE] = lifetime.interrupt_on_sigterm()
    session = start_package_session(config)
    config.pluginmanager.register(session, PLUGIN_NAME)
    if config.pluginmanager.hasplugin("xdist"):
        from packaging_plugin.harness.session import XdistHooks

        config.pluginmanager.register(XdistHooks(session), PLUGIN_NAME + "_xdist")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SIGTERM_BEFORE in config.stash:
        from packaging_plugin import lifetime

        lifetime.restore_sigterm(config.stash[_SIGTERM_BEFORE])


def package_session(config: pytest.Config) -> PackageSession | None:
    return config.pluginmanager.get_plugin(PLUGIN_NAME)  # type: ignore[return-value]


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Any:
    """Note whether the user chose an xdist `--dist` mode, from the options as parsed (command
    line, `addopts` and `PYTEST_ADDOPTS` alike), before xdist turns the default "no" into "load"
    for `-n`. A wrapper runs before every plain implementation, xdist's tryfirst one included."""
    if config.getoption("package_config"):
        from packaging_plugin.harness.session import DIST_CHOSEN

        chosen = config.getoption("dist", "no") != "no" or config.getoption("distload", False)
        config.stash[DIST_CHOSEN] = bool(chosen)
    return (yield)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    session = package_session(config)
    return session.header_lines() if session else None
