"""SIGKILL through a packaging run: at each point, nothing lost, nobody left, nothing left behind.

Each point kills the controller of a real `-n 2` run over a config of two linux models (one
converted from a Hugging Face checkpoint on the fly) whose previous output, from a one-model
config, is in place. After the kill:
- the output folder is byte-identical to the previous output (or, once the swap is done, to the
  new one: never half of each);
- no process of the run is alive a few seconds later (workers, compile and smoke children);
and the next run succeeds, removes every temporary the killed one left, and publishes exactly
the reference package.

Delays are drawn from a seeded generator (MLC_FAULT_SEED, default 2026), so a failure can be
replayed. With FAULT_TABLE_FILE set, each point appends its row (bench/fault_table.py prints
the table of docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.kill_points import (
    RUN_TAG,
    SITECUSTOMIZE,
    KillPoint,
    kill_environment,
    marked_entries,
    wait_for_no_processes,
)
from tests.helpers.packaging import SMALL
from tests.helpers.paths import DEMO_MODELS

pytestmark = pytest.mark.slow  # packaging runs

CHECKPOINT = "tiny-qwen2-hf"
MODELS = {
    "tiny": {"model": f"./models/{SMALL}", "model_lib": "kill_tiny"},
    "qwen": {
        "model": f"./models/{CHECKPOINT}",
        "quantization": "q4f32_1",
        "model_lib": "kill_qwen",
    },
}
GRACE_SECONDS = 3.0  # how long a process may outlive the killed controller
SEED = int(os.environ.get("MLC_FAULT_SEED", "2026"))

POINTS = [
    KillPoint("fetch: checkpoint converted, not yet cached",
              "packaging_plugin.sources.convert:convert_checkpoint", "return",
              cold=("converted",)),
    KillPoint("fetch: verifying the weights", "packaging_plugin.sources.fetch:verify_weights"),
    KillPoint("fetch: verifying the weights, one process",
              "packaging_plugin.sources.fetch:verify_weights", workers=0),
    KillPoint("compile: the child at work", "packaging_plugin.harness.model_work:run_compile",
              "during", 2.0, cold=("model_lib",)),
    KillPoint("compile: the child at work, one process",
              "packaging_plugin.harness.model_work:run_compile", "during", 2.0,
              cold=("model_lib",), workers=0),
    KillPoint("compile: library written, not yet cached",
              "packaging_plugin.harness.model_work:run_compile", "return", cold=("model_lib",)),
    KillPoint("validate", "packaging_plugin.checks.validation:validate_model_library"),
    KillPoint("bundle: the first file placed", "packaging_plugin.assemble.bundle:place_file",
              "return"),
    KillPoint("package: archive written", "packaging_plugin.checks.objects:write_archive",
              "return"),
    KillPoint("package: linking", "packaging_plugin.assemble.linking:link_shared_linux",
              "during", 0.4),
    KillPoint("package: app config written",
              "packaging_plugin.assemble.package_steps:write_app_config", "return"),
    KillPoint("package: the smoke child at work", "packaging_plugin.run.smoke:run_smokes",
              "during", 5.0),
    KillPoint("publish: report staged", "packaging_plugin.harness.session:write_report",
              "return"),
    KillPoint("publish: before the swap", "packaging_plugin.assemble.staging:exchange_paths"),
    KillPoint("publish: after the swap", "packaging_plugin.assemble.staging:exchange_paths",
              "return", output_after="new"),
]  # fmt: skip


def write_app(folder: Path, model_ids: list[str]) -> Path:
    (folder / "models").mkdir(parents=True)
    for name in (SMALL, CHECKPOINT):
        shutil.copytree(DEMO_MODELS / name, folder / "models" / name)
    entries = [
        {"model_id": model_id, "estimated_vram_bytes": 100_000_000, "bundle_weight": True}
        | MODELS[model_id]
        for model_id in model_ids
    ]
    config = folder / "mlc-package-config.json"
    config.write_text(json.dumps({"device": "linux", "model_list": entries}, indent=1))
    return config


def tree(folder: Path) -> dict[str, bytes]:
    """A package's files, less its report (durations differ from run to run)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.name != "package-report.json"
    }


def package(
    config: Path, env: dict[str, str], tag: str, workers: int = 2
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", f"--package-config={config}", "-n", str(workers)]
    command += [f"--package-output={config.parent / 'dist'}", "-p", "no:randomly"]
    # plain asserts: an installed plugin's modules would be rewritten by pytest's import hook,
    # which comes before the kill point's and would keep it from patching them
    command += ["-p", "no:cacheprovider", "--assert=plain"]
    return subprocess.run(
        command,
        cwd=config.parent,
        env={**env, RUN_TAG: tag},
        capture_output=True,
        text=True,
        timeout=600,
    )


@dataclass(frozen=True)
class Baseline:
    cache: Path  # a warm cache holding this config's libraries and conversion
    previous: Path  # the output of a one-model config: what a kill must leave
    reference: dict[str, bytes]  # the two-model package every finished run must publish


def copy_libraries(report: dict, into: Path) -> None:
    """Copy the libraries a run used, with their records, into the cache `into`."""
    (into / "model_lib").mkdir(parents=True)
    for model in report["models"]:
        library = Path(model["library_path"])
        for entry in library.parent.glob(library.name + "*"):
            if not entry.name.endswith(".lock"):
                shutil.copy2(entry, into / "model_lib" / entry.name)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, shared_compile_cache: Path) -> Baseline:
    """The libraries come from the suite's shared cache (compiled once per test run); the
    conversion is made in this cache by the reference run."""
    root = tmp_path_factory.mktemp("kill-baseline")
    env = {**os.environ, "MLC_LLM_HOME": str(shared_compile_cache)}
    env.pop("MLC_JIT_POLICY", None)
    both = write_app(root / "both", list(MODELS))
    for step in ("shared", "previous", "reference"):
        config = write_app(root / "one", ["tiny"]) if step == "previous" else both
        done = package(config, env, uuid.uuid4().hex)
        assert done.returncode == 0, f"{step}: {done.stdout[-3000:]}"
        if step == "shared":
            report = json.loads((both.parent / "dist" / "package-report.json").read_text())
            copy_libraries(report, root / "cache")
            env["MLC_LLM_HOME"] = str(root / "cache")
    return Baseline(root / "cache", root / "one" / "dist", tree(both.parent / "dist"))


def record_row(point: KillPoint, delay: float, litter: int, swept: int, lost: int) -> None:
    if table := os.environ.get("FAULT_TABLE_FILE"):
        row = {"point": point.name, "delay": round(delay, 2), "litter": litter, "swept": swept}
        with open(table, "a") as rows:
            rows.write(json.dumps({**row, "bytes_lost": lost}) + "\n")


@pytest.mark.parametrize("point", POINTS, ids=[p.name for p in POINTS])
def test_a_run_killed_here_loses_nothing_and_the_next_run_cleans_up(
    point: KillPoint, baseline: Baseline, tmp_path: Path
) -> None:
    config = write_app(tmp_path / "app", list(MODELS))
    dist = config.parent / "dist"
    shutil.copytree(baseline.previous, dist)
    previous = tree(dist)
    cache = tmp_path / "cache"
    shutil.copytree(baseline.cache, cache)
    for folder in point.cold:
        shutil.rmtree(cache / folder, ignore_errors=True)
    temp = tmp_path / "tmp"
    temp.mkdir()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "MLC_LLM_HOME": str(cache), "TMPDIR": str(temp)}
    env.pop("MLC_JIT_POLICY", None)
    rng = random.Random(f"{SEED}:{point.name}")
    delay = rng.uniform(point.max_delay / 4, point.max_delay) if point.when == "during" else 0.0
    reached = tmp_path / "reached"
    killed_env = {**env, **kill_environment(point, delay, reached)}
    killed_env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])

    tag = uuid.uuid4().hex
    killed = package(config, killed_env, tag, point.workers)
    what = f"{point.name} (delay {delay:.2f} s, seed {SEED})"
    assert reached.is_file(), f"{what}: never reached; the run said:\n{killed.stdout[-3000:]}"
    assert killed.returncode == -9, f"{what}: exit {killed.returncode}\n{killed.stdout[-3000:]}"
    left = wait_for_no_processes(tag, GRACE_SECONDS)
    assert not left, f"{what}: processes outlived the killed run: {left}"
    expected = previous if point.output_after == "previous" else baseline.reference
    after_kill = tree(dist)
    lost = sum(len(data) for name, data in expected.items() if after_kill.get(name) != data)
    assert after_kill == expected, f"{what}: the output folder changed"
    litter = marked_entries(cache, temp, config.parent)

    again = package(config, env, uuid.uuid4().hex)
    assert again.returncode == 0, f"{what}: the next run failed:\n{again.stdout[-3000:]}"
    if litter:
        assert "leftovers of runs that died" in again.stdout, f"{what}: no sweep reported"
    left_behind = marked_entries(cache, temp, config.parent)
    assert left_behind == [], f"{what}: litter is left; the next run said:\n{again.stdout[:1500]}"
    assert tree(dist) == baseline.reference, f"{what}: the next run's package differs"
    record_row(point, delay, len(litter), len(litter), lost)
