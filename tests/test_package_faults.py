"""A machine's fault inside a package step or the publish fails the run cleanly: exit 1, the
step's report says what happened, the previous output is untouched and no staging is left."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers.junit import read_junit
from tests.helpers.packaging import WriteConfig, install_sitecustomize

MODEL = "tiny-llama-q0f32"
pytestmark = pytest.mark.slow  # packaging runs

# The disk fills while the combined archive is written.
FULL_DISK_IN_ARCHIVE = """
import errno
import packaging_plugin.checks.objects as objects

def write_archive(path, members, index):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))

objects.write_archive = write_archive
"""

# Swapping the staged output into place fails (an I/O error on the output's filesystem).
FAILED_RENAME_IN_PUBLISH = """
import errno, os
import packaging_plugin.assemble.staging as staging

def exchange_paths(first, second):
    raise OSError(errno.EIO, "Input/output error", os.fspath(first))

staging.exchange_paths = exchange_paths
"""

# The disk fills while a model's weights are copied into the bundle.
FULL_DISK_IN_BUNDLE = """
import errno
import packaging_plugin.assemble.bundle as bundle

def place_file(source, target, *, hardlink=False):
    raise OSError(errno.ENOSPC, "No space left on device", str(target))

bundle.place_file = place_file
"""


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def package(pytester: pytest.Pytester, config: Path) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        f"--package-config={config}",
        f"--package-output={config.parent / 'dist'}",
        f"--junitxml={config.parent / 'package.xml'}",
        "-p",
        "no:randomly",
    )


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            FULL_DISK_IN_ARCHIVE,
            [
                "package library: */libmodel_android.a: No space left on device",
                "FAILED *::package::library*",
            ],
        ),
        (
            FULL_DISK_IN_BUNDLE,
            [
                "tiny bundle: */bundle/tiny/*: No space left on device",
                "FAILED *::tiny::bundle*",
            ],
        ),
        (
            FAILED_RENAME_IN_PUBLISH,
            ["output: * (not updated: it could not be written: *.staging~*: Input/output error)"],
        ),
    ],
    ids=["archive-write", "publish", "bundle-copy"],
)
def test_a_fault_in_the_package_steps_or_the_publish_keeps_the_old_output(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    package_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fault: str,
    expected: list[str],
) -> None:
    config = write_config("android", {"tiny": (MODEL, {"model_lib": "tiny_faults"})})
    assert package(pytester, config).ret == 0
    dist = config.parent / "dist"
    before = tree_digest(dist)
    assert "lib/libmodel_android.a" in before

    install_sitecustomize(tmp_path / "faults", monkeypatch, fault)
    result = package(pytester, config)

    assert result.ret == 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(expected)
    everything = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in everything
    assert "Traceback" not in everything  # a machine's condition is a message
    failed_report = json.loads((config.parent / "dist.failed" / "package-report.json").read_text())
    assert failed_report["outcome"] == "failed"
    assert tree_digest(dist) == before
    leftovers = [p.name for p in config.parent.iterdir() if p.name.startswith(".dist.")]
    assert leftovers == []
    junit = read_junit(config.parent / "package.xml")
    if fault is FAILED_RENAME_IN_PUBLISH:  # every case passed: the property says why
        assert junit.outcomes()["failed"] == 0
        assert "Input/output error" in junit.properties["package.publish_error"]
    elif fault is FULL_DISK_IN_BUNDLE:
        # The package needs every model: its archive step fails too, naming the model.
        assert [c.name for c in junit.cases if c.outcome == "failure"] == ["bundle", "library"]
    else:
        assert [c.name for c in junit.cases if c.outcome == "failure"] == ["library"]


# The disk fills while the compile child writes the library (a fresh cache: it must compile).
FULL_DISK_IN_COMPILE = """
import errno, sys
if any(arg.endswith("request.json") for arg in sys.argv):
    import packaging_plugin.compile.pipeline as pipeline

    def write_tar(path, objects):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    pipeline._write_tar_atomically = write_tar
"""


def test_a_full_disk_in_a_compile_fails_that_model_with_one_line(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = write_config("linux", {"tiny": (MODEL, {"model_lib": "tiny_full_disk"})})
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "cold-cache"))
    monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
    install_sitecustomize(tmp_path / "faults", monkeypatch, FULL_DISK_IN_COMPILE)
    result = package(pytester, config)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["tiny compile: compile failed (exit status 1): *model_lib/*: No space left on device*"]
    )
    everything = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in everything and "INTERNALERROR" not in everything
    assert list((tmp_path / "cold-cache" / "model_lib").glob("*.tar")) == []
