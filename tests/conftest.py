"""Shared fixtures: demo models, package configs written per test, and a compile cache per run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lief  # noqa: F401  (see below)
import pytest
from filelock import FileLock

from tests.helpers.packaging import WriteConfig
from tests.helpers.paths import DEMO_MODELS

# LIEF (the Mach-O reader) is imported here, first thing in every test process: a CI worker once
# aborted inside LIEF's first import, made late, after torch and dozens of model libraries had
# been loaded into it. Its initialisation now runs in a clean process.


@pytest.fixture(scope="session")
def shared_compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for the whole test run, shared by xdist workers.

    Most tests only need some library for a tiny model: sharing the cache means each distinct
    library is compiled once per run. Tests about cold and warm behaviour use their own cache.
    """
    root = tmp_path_factory.getbasetemp().parent / "mlc-compile-cache"
    with FileLock(str(root) + ".lock"):
        root.mkdir(exist_ok=True)
    return root


@pytest.fixture
def package_env(monkeypatch: pytest.MonkeyPatch, shared_compile_cache: Path) -> Path:
    """Environment of a packaging run under test: the shared cache, default JIT policy."""
    monkeypatch.setenv("MLC_LLM_HOME", str(shared_compile_cache))
    monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
    return shared_compile_cache


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write an mlc-package-config.json in a fresh app folder with copies of demo models.

    `models` maps model_id -> (demo model name, extra entry fields).
    """

    def write(
        device: str,
        models: dict[str, tuple[str, dict[str, Any]]],
        folder: Path | None = None,
        name: str = "mlc-package-config.json",
    ) -> Path:
        app = folder or tmp_path / "app"
        (app / "models").mkdir(parents=True, exist_ok=True)
        entries = []
        for model_id, (demo_name, extra) in models.items():
            target = app / "models" / demo_name
            if not target.exists():
                shutil.copytree(DEMO_MODELS / demo_name, target)
            entries.append(
                {
                    "model": f"./models/{demo_name}",
                    "model_id": model_id,
                    "estimated_vram_bytes": 100_000_000,
                    "bundle_weight": True,
                    **extra,
                }
            )
        path = app / name
        path.write_text(json.dumps({"device": device, "model_list": entries}, indent=2))
        return path

    return write
