"""The outcome counts a packaging run reports, worked out from its config.

Written out here from what the plugin promises its users (README, "Reading the output"), not
taken from the plugin's own step lists, so that a step added, dropped or renamed by mistake makes
a test disagree with the run:

- each model has the steps fetch, compile, validate; kernels on android (its OpenCL kernels are
  compiled as the phone will); bundle when its entry has `"bundle_weight": true`. compile needs
  fetch, validate needs compile, kernels needs validate, bundle needs fetch: a step whose
  prerequisite failed, or was skipped for that reason, is skipped;
- the package steps library, link, app-config and bindings run once after the model steps, for
  the whole config. library fails when a model step failed; link and app-config are skipped
  then. bindings on linux is the shared library that link made; on the other devices it is
  skipped unless MLC's build can run (an MLC-LLM source dir and the platform's toolchain);
- on linux each model then has a smoke run from the packaged library, skipped when link or
  app-config did not pass.

The linkers the test extra installs are assumed: link is never skipped for want of one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_NEEDS = {"compile": "fetch", "validate": "compile", "kernels": "validate", "bundle": "fetch"}


def _model_steps(device: str, entry: Mapping[str, Any]) -> list[str]:
    steps = ["fetch", "compile", "validate"]
    if device == "android":
        steps.append("kernels")
    if entry.get("bundle_weight", False):  # MLC's default: the app downloads the weights
        steps.append("bundle")
    return steps


def expected_outcomes(
    config: Path | Mapping[str, Any],
    *,
    selected: Iterable[str] | None = None,
    failing: Mapping[str, str] | None = None,
    kernels_checked: bool = True,
    bindings_built: bool = False,
) -> dict[str, int]:
    """`{"passed": ..., "failed": ..., "skipped": ...}` of a packaging run of `config` (the path
    of an mlc-package-config.json, or its content), for `RunResult.assert_outcomes(**...)`.

    selected: the model steps the run was asked for, as `model_id` (all its steps) or
        `model_id::step`; None: all of them. The package steps (and smoke runs) always run for
        the whole config, taking models not run from the compile cache.
    failing: model_id -> the one step of that model that fails (a model step, or "smoke").
    kernels_checked: False when no OpenCL C compiler is at hand: every kernels step is skipped.
    bindings_built: True when the android or iOS binding has what MLC's build needs.
    """
    data = json.loads(Path(config).read_text()) if isinstance(config, str | Path) else config
    device: str = data["device"]
    entries: list[Mapping[str, Any]] = data["model_list"]
    failing = dict(failing or {})
    chosen = None if selected is None else set(selected)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    known = {entry["model_id"] for entry in entries}
    if unknown := (set(failing) | {name.split("::")[0] for name in chosen or ()}) - known:
        raise ValueError(f"not a model_id of the config: {sorted(unknown)}")

    a_model_failed = False
    for entry in entries:
        model_id = entry["model_id"]
        steps = _model_steps(device, entry)
        bad = failing.get(model_id)
        if bad is not None and bad not in steps and not (bad == "smoke" and device == "linux"):
            raise ValueError(f"{model_id} has no step {bad!r} on {device}")
        runs = [s for s in steps if chosen is None or {model_id, f"{model_id}::{s}"} & chosen]
        if bad in steps and bad not in runs:
            raise ValueError(f"{model_id}::{bad} fails but is not selected: not worked out here")
        broken: set[str] = set()  # failed, or skipped because a prerequisite failed
        for step in steps:
            if step == bad:
                outcome = "failed"
                broken.add(step)
            elif _NEEDS.get(step) in broken:
                outcome = "skipped"
                broken.add(step)
            elif step == "kernels" and not kernels_checked:
                outcome = "skipped"
            else:
                outcome = "passed"
            if step in runs:
                counts[outcome] += 1
                a_model_failed |= outcome == "failed"

    library = "failed" if a_model_failed else "passed"
    link = app_config = "passed" if library == "passed" else "skipped"
    if device == "linux":
        bindings = "passed" if link == "passed" else "skipped"
    else:
        bindings = "passed" if library == "passed" and bindings_built else "skipped"
    for outcome in (library, link, app_config, bindings):
        counts[outcome] += 1
    if device == "linux":
        for entry in entries:
            if link != "passed" or app_config != "passed":
                counts["skipped"] += 1
            else:
                counts["failed" if failing.get(entry["model_id"]) == "smoke" else "passed"] += 1
    return counts
