"""The output folder is replaced only when it is ours, and an unusable folder is one message.

Each probe is one a user meets: `--package-output=.` from an app folder, an output under a file
or on a read-only filesystem, an unusable cache. Each must exit 4 with a line naming the path,
leave every file as it was, and print no traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.machine import read_only_folder
from tests.helpers.packaging import SMALL, WriteConfig, run_package

pytestmark = pytest.mark.slow  # packaging runs


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def assert_usage_error(result: pytest.RunResult, *expected: str) -> str:
    everything = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, everything[-3000:]
    for text in expected:
        assert text in everything, (text, everything[-3000:])
    assert "Traceback" not in everything and "INTERNALERROR" not in everything
    return everything


def test_the_current_app_folder_as_output_is_refused_and_nothing_is_lost(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path
) -> None:
    config = write_config("linux", {"tiny": (SMALL, {})})
    app = config.parent
    (app / "app.py").write_text("print('my app')\n")
    before = tree(app)
    os.chdir(app)
    result = pytester.runpytest_subprocess(f"--package-config={config}", "--package-output=.")
    assert_usage_error(
        result, f"--package-output {app}", "app.py, mlc-package-config.json, models", "empty"
    )
    assert tree(app) == before
    assert sorted(p.name for p in app.iterdir()) == ["app.py", "mlc-package-config.json", "models"]


def test_an_output_folder_with_a_users_file_is_refused_and_ours_is_replaced(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path
) -> None:
    config = write_config("linux", {"tiny": (SMALL, {})})
    dist = config.parent / "dist"
    assert run_package(pytester, config).ret == 0
    assert run_package(pytester, config).ret == 0  # a run's own output is replaced
    (dist / "lib" / "my-notes.txt").write_text("keep me")
    before = tree(dist)
    result = run_package(pytester, config)
    assert_usage_error(result, f"--package-output {dist}", "lib/my-notes.txt")
    assert tree(dist) == before


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_an_unusable_output_path_is_one_message(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path, where: str
) -> None:
    config = write_config("linux", {"tiny": (SMALL, {})})
    if where == "under-a-file":
        (config.parent / "a-file").write_text("x")
        output = config.parent / "a-file" / "dist"
        result = pytester.runpytest_subprocess(
            f"--package-config={config}", f"--package-output={output}"
        )
        assert_usage_error(result, f"--package-output {output}", "Not a directory")
        return
    with read_only_folder(config.parent / "ro") as folder:
        output = folder / "dist"
        result = pytester.runpytest_subprocess(
            f"--package-config={config}", f"--package-output={output}"
        )
        assert_usage_error(result, f"--package-output {output}", "Read-only file system")


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_an_unusable_cache_root_is_one_message(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    config = write_config("linux", {"tiny": (SMALL, {})})
    monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
    if where == "under-a-file":
        (tmp_path / "a-file").write_text("x")
        cache = tmp_path / "a-file" / "mlc"
        monkeypatch.setenv("MLC_LLM_HOME", str(cache))
        result = run_package(pytester, config)
        assert_usage_error(result, f"the cache {cache} (MLC_LLM_HOME)", "Not a directory")
        return
    with read_only_folder(tmp_path / "ro-cache") as cache:
        monkeypatch.setenv("MLC_LLM_HOME", str(cache))
        result = run_package(pytester, config)
        assert_usage_error(result, f"the cache {cache} (MLC_LLM_HOME)", "Read-only file system")
    assert not (config.parent / "dist").exists()
    assert [p.name for p in config.parent.iterdir() if p.name.startswith(".dist")] == []


def test_a_failed_run_keeps_its_report_beside_the_output_until_a_run_publishes(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    package_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = write_config("linux", {"tiny": (SMALL, {})})
    dist = config.parent / "dist"
    assert run_package(pytester, config).ret == 0
    before = tree(dist)
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MLC_JIT_POLICY", "READONLY")
    failed = run_package(pytester, config)
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    kept = config.parent / "dist.failed" / "package-report.json"
    failed.stdout.fnmatch_lines([f"report of this run: {kept}"])
    report = json.loads(kept.read_text())
    assert report["outcome"] == "failed"
    assert report["models"][0]["steps"]["compile"]["outcome"] == "failed"
    assert tree(dist) == before  # the published output is untouched

    monkeypatch.setenv("MLC_LLM_HOME", str(package_env))
    monkeypatch.delenv("MLC_JIT_POLICY")
    assert run_package(pytester, config).ret == 0
    assert not kept.parent.exists()  # out of date once a run has published
