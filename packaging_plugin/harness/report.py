"""What a run did, per model and per package step: package-report.json and the summary table."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging_plugin.assemble.output_folder import failed_report_dir
from packaging_plugin.assemble.package_steps import ModelOutcome, StepResult
from packaging_plugin.atomic_files import write_atomically
from packaging_plugin.compile.cache import toolchain_versions
from packaging_plugin.config.devices import DEVICES
from packaging_plugin.config.package_config import PackageConfig
from packaging_plugin.harness.steps import Step, report_steps
from packaging_plugin.redaction import redact_value
from packaging_plugin.temporaries import is_temporary

REPORT_NAME = "package-report.json"
_MARK = {"passed": "ok", "failed": "FAILED", "skipped": "skipped"}
# A model's steps as the summary's columns (kernels only when some model has them).
SUMMARY_STEPS = (Step.FETCH, Step.COMPILE, Step.VALIDATE, Step.KERNELS, Step.BUNDLE, Step.SMOKE)


def build_report(
    package: PackageConfig,
    outcomes: dict[str, ModelOutcome],
    durations: dict[str, dict[str, float]],
    model_libs: dict[str, str],
    libraries: dict[str, Path],
    package_results: Sequence[StepResult],
) -> dict[str, Any]:
    device = DEVICES[package.device]
    models = []
    for entry in package.models:
        outcome = outcomes.get(entry.model_id, ModelOutcome())
        figures = outcome.figures.reported()
        if entry.model_id in libraries:  # the package steps took it (from the cache, maybe)
            figures["library_path"] = str(libraries[entry.model_id])
        durations_of = durations.get(entry.model_id, {})
        model_lib = model_libs.get(entry.model_id, figures.pop("model_lib"))
        models.append(
            {
                "model_id": entry.model_id,
                "model": entry.model,
                "model_lib": model_lib,
                "steps": {
                    str(step): {
                        "outcome": outcome.steps.get(step, "not run"),
                        "seconds": round(durations_of.get(step, 0.0), 3),
                    }
                    for step in report_steps(entry, device)
                },
                **figures,
            }
        )
    return {
        "config": str(package.path),
        "device": package.device,
        "versions": toolchain_versions(),
        "outcome": "failed" if any(r.outcome == "failed" for r in package_results) else "passed",
        "models": models,
        "package": {
            str(r.name): {
                "outcome": r.outcome,
                "message": r.message,
                "seconds": round(r.duration, 3),
            }
            for r in package_results
            if r.model_id is None  # a model's own steps (smoke) are in its entry
        },
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_json(report))


def report_json(report: dict[str, Any]) -> str:
    """The report as written: JSON, with every credential removed."""
    return json.dumps(redact_value(report), indent=2) + "\n"


def keep_failed_report(output: Path, report: dict[str, Any]) -> Path | None:
    """Write the report of a run that did not publish to `<output>.failed/`, replacing the last
    failed run's; None when that folder holds other files (it is not ours) or cannot be written.
    """
    folder = failed_report_dir(output)
    try:
        if folder.is_dir() and any(
            entry.name != REPORT_NAME and not is_temporary(entry.name) for entry in folder.iterdir()
        ):
            return None
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / REPORT_NAME, report_json(report))
    except OSError:
        return None
    return folder / REPORT_NAME


def clear_failed_report(output: Path) -> None:
    """After a run that published, the report of an earlier failed run is out of date."""
    folder = failed_report_dir(output)
    with contextlib.suppress(OSError):
        (folder / REPORT_NAME).unlink(missing_ok=True)
        folder.rmdir()  # only when nothing else is in it


def summary_table(report: dict[str, Any]) -> list[str]:
    """One row per model: id, model_lib, each step's outcome, compile seconds, cache, bytes."""
    steps_shown = [str(step) for step in SUMMARY_STEPS]
    if not any(Step.KERNELS in model["steps"] for model in report["models"]):
        steps_shown.remove(Step.KERNELS)
    header = [
        "model_id",
        "model_lib",
        *steps_shown,
        "compile s",
        "cache",
        "library bytes",
        "download",
        "tok/s",
    ]
    rows = [header]
    for model in report["models"]:
        steps = model["steps"]
        rows.append(
            [
                model["model_id"],
                model["model_lib"] or "-",
                *(_MARK.get(steps[s]["outcome"], "-") if s in steps else "-" for s in steps_shown),
                f"{model['compile_seconds']:.1f}" if model["compile_seconds"] is not None else "-",
                model["cache"] or "-",
                str(model["library_bytes"]) if model["library_bytes"] is not None else "-",
                _download_cell(model),
                _speed_cell(model),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _speed_cell(model: dict[str, Any]) -> str:
    speed = (model.get("smoke") or {}).get("decode_tokens_per_s")
    return f"{speed:.0f}" if speed else "-"


def smoke_lines(report: dict[str, Any]) -> list[str]:
    """What each model generated in its smoke run: ids, and the text where a tokenizer was."""
    lines = []
    for model in report["models"]:
        found = model.get("smoke")
        if not found:
            continue
        text = found.get("text")
        shown = repr(text) if text is not None else "(no tokenizer.json: ids only)"
        lines.append(f"{model['model_id']}: {found.get('generated_ids')} {shown}")
    return lines


def _download_cell(model: dict[str, Any]) -> str:
    """What the fetch transferred: `3 files, 12.5 MiB, 1.2 s`, or `-` when nothing was."""
    files = model.get("downloaded_files")
    if not files:
        return "-"
    mib = (model.get("downloaded_bytes") or 0) / 2**20
    return f"{files} files, {mib:.1f} MiB, {model.get('download_seconds') or 0:.1f} s"
