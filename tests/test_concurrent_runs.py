"""Three runs started together on one cold cache: each library is compiled once, by one of
them, and all three publish the same bytes, with nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.kill_points import marked_entries
from tests.helpers.packaging import SMALL, WriteConfig

pytestmark = pytest.mark.slow  # packaging runs

RUNS = 3


def test_three_concurrent_runs_on_one_cold_cache_compile_each_key_once(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    cache = tmp_path / "cold-cache"
    env = {**os.environ, "MLC_LLM_HOME": str(cache)}
    env.pop("MLC_JIT_POLICY", None)
    model = {"tiny": (SMALL, {"model_lib": "concurrent_tiny"})}
    configs = [write_config("linux", model, tmp_path / f"app{i}") for i in range(RUNS)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", f"--package-config={config}", "-p", "no:randomly",
             "-p", "no:xdist", f"--package-output={config.parent / 'dist'}"],
            cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for config in configs
    ]  # fmt: skip
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]

    reports = [json.loads((c.parent / "dist" / "package-report.json").read_text()) for c in configs]
    caches = sorted(report["models"][0]["cache"] for report in reports)
    assert caches == ["hit"] * (RUNS - 1) + ["miss"]  # one compiled, the others waited
    assert len(list((cache / "model_lib").glob("*.tar"))) == 1
    archives = {(c.parent / "dist" / "lib" / "libmodel_linux.a").read_bytes() for c in configs}
    assert len(archives) == 1
    assert marked_entries(cache, *(c.parent for c in configs)) == []
