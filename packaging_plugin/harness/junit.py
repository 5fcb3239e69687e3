"""The run's figures in the JUnit file, as suite properties (`<model_id>.<figure>`).

The JUnit schema CI tools validate against has no properties on test cases, so per-model figures,
step outcomes and package-step facts are properties of the suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from packaging_plugin.assemble.package_steps import StepResult
from packaging_plugin.config.names import PACKAGE_NODE_NAME
from packaging_plugin.harness.steps import JUNIT_FIGURES
from packaging_plugin.redaction import redact_value


def junit_writer(config: pytest.Config) -> Any:
    """pytest's JUnit writer of this run (`--junitxml`), or None.

    It is the registered plugin with `add_global_property`, the method behind pytest's own
    `record_testsuite_property`; found by that, so no private pytest module is imported.
    """
    for plugin in config.pluginmanager.get_plugins():
        if callable(getattr(plugin, "add_global_property", None)):
            return plugin
    return None


def add_figures(xml: Any, report: dict[str, Any], package_results: list[StepResult]) -> None:
    """Per-model figures and step outcomes, and the package steps' facts, redacted."""
    for model in report["models"]:
        for name in JUNIT_FIGURES:
            if model.get(name) is not None:
                value = redact_value(model[name])
                xml.add_global_property(f"{model['model_id']}.{name}", value)
        for step, result in model["steps"].items():
            xml.add_global_property(f"{model['model_id']}.{step}", result["outcome"])
    for result in package_results:
        for name, value in result.properties:
            xml.add_global_property(f"{PACKAGE_NODE_NAME}.{name}", redact_value(value))
