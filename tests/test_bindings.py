"""The platform bindings: MLC-LLM's build scripts are driven as MLC drives them, tested up to the
process boundary. The scripts here stand in for MLC's own with the same interface (command line,
working folder, environment, files read and written); the native builds behind them (CMake with
the NDK, Xcode) are what this machine cannot run."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from packaging_plugin.assemble import bindings, linking
from packaging_plugin.checks import objects
from packaging_plugin.config.devices import DEVICES
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.packaging import SMALL, WriteConfig, run_package

# android/mlc4j/prepare_libs.py's interface: `--mlc-llm-source-dir` (default $MLC_LLM_SOURCE_DIR),
# run in a work folder whose build/lib/libmodel_android.a it links whole into
# build/output/arm64-v8a/libtvm4j_runtime_packed.so, beside build/output/tvm4j_core.jar. It
# imports mlc_llm and needs ANDROID_NDK. This one links with ld.lld where CMake would build.
PREPARE_LIBS_PY = """
import argparse, json, os, subprocess, sys, zipfile
from pathlib import Path

from mlc_llm.support import logging  # as MLC's script: the interpreter must find mlc_llm

parser = argparse.ArgumentParser("MLC LLM Android Lib Preparation")
parser.add_argument("--mlc-llm-source-dir", type=Path, default=os.environ.get("MLC_LLM_SOURCE_DIR"))
parsed = parser.parse_args()
if "ANDROID_NDK" not in os.environ:
    raise ValueError('Environment variable "ANDROID_NDK" is required but not found.')
Path("record.json").write_text(json.dumps({
    "argv": sys.argv, "executable": sys.executable, "cwd": os.getcwd(),
    "source_dir": str(parsed.mlc_llm_source_dir),
    "env": {k: os.environ.get(k) for k in ("ANDROID_NDK", "MLC_LLM_SOURCE_DIR", "JAVA_HOME")},
}))
if os.environ.get("PREPARE_LIBS_FAILS"):
    print("CMake Error at CMakeLists.txt:1: the native build broke", file=sys.stderr)
    sys.exit(1)
os.makedirs("build/lib", exist_ok=True)
os.chdir("build")
os.makedirs("output/arm64-v8a", exist_ok=True)
linker = json.loads(os.environ["TEST_ELF_LINKER"])
subprocess.run([*linker, "-shared", "-o", "output/arm64-v8a/libtvm4j_runtime_packed.so",
                "--whole-archive", "lib/libmodel_android.a", "--no-whole-archive"], check=True)
with zipfile.ZipFile("output/tvm4j_core.jar", "w") as jar:
    jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\\n")
"""

# ios/prepare_libs.sh's interface: options --catalyst, --deployment-target, --arch; builds in
# ./build (./build-maccatalyst-<arch> for Catalyst) and installs the static libraries in lib/.
PREPARE_LIBS_SH = """#!/usr/bin/env bash
set -euo pipefail
build_dir=build
printf '%s\\n' "$0" "$@" > invoked.txt
while [ "$#" -gt 0 ]; do
  case "$1" in
    --catalyst) catalyst=1 ;;
    --deployment-target) shift ;;
    --arch) shift; arch="$1" ;;
  esac
  shift
done
if [ -n "${catalyst:-}" ]; then build_dir="build-maccatalyst-${arch:-arm64}"; fi
pwd > cwd.txt
echo "$MLC_LLM_SOURCE_DIR" > source.txt
mkdir -p "$build_dir/lib"
for name in mlc_llm tvm_ffi_static tvm_runtime tokenizers_cpp sentencepiece tokenizers_c; do
  printf '!<arch>\\n' > "$build_dir/lib/lib$name.a"
done
"""


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def mlc_source_tree(root: Path) -> Path:
    """A source dir with MLC-LLM's layout where the bindings read it."""
    mlc4j = root / "android" / "mlc4j"
    (mlc4j / "src" / "main").mkdir(parents=True)
    (mlc4j / "prepare_libs.py").write_text(PREPARE_LIBS_PY)
    (mlc4j / "build.gradle").write_text("plugins { id 'com.android.library' }\n")
    (mlc4j / "src" / "main" / "AndroidManifest.xml").write_text("<manifest/>\n")
    executable(root / "ios" / "prepare_libs.sh", PREPARE_LIBS_SH)
    support = root / "python" / "mlc_llm" / "support"
    support.mkdir(parents=True)
    (root / "python" / "mlc_llm" / "__init__.py").write_text("")
    (support / "__init__.py").write_text("")
    (support / "logging.py").write_text("")
    return root


@pytest.fixture
def android_toolchain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An NDK folder, a JDK, cmake and rustup where the mlc4j build looks for them."""
    ndk = tmp_path / "ndk"
    (ndk / "build" / "cmake").mkdir(parents=True)
    (ndk / "build" / "cmake" / "android.toolchain.cmake").write_text("# toolchain\n")
    jdk = tmp_path / "jdk"
    executable(jdk / "bin" / "javac")
    tools = tmp_path / "tools"
    for tool in ("cmake", "rustup"):
        executable(tools / tool)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("JAVA_HOME", str(jdk))
    monkeypatch.setenv("TEST_ELF_LINKER", json.dumps(linking.elf_linker()))
    monkeypatch.delenv("ANDROID_NDK", raising=False)
    monkeypatch.delenv("MLC_LLM_SOURCE_DIR", raising=False)
    return {"ndk": ndk, "jdk": jdk}


@pytest.mark.slow
def test_mlc4j_is_built_by_the_source_dirs_prepare_libs_as_mlc_runs_it(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    package_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    android_toolchain: dict[str, Path],
) -> None:
    source = mlc_source_tree(tmp_path / "mlc-llm")
    config = write_config("android", {"llama": (SMALL, {})})
    dist = config.parent / "dist"
    monkeypatch.setenv("PYTHONPATH", str(source / "python"))  # where prepare_libs finds mlc_llm

    # Without a source dir or an NDK the step says exactly those two are missing.
    missing = run_package(pytester, config, "-rs")
    missing.assert_outcomes(**expected_outcomes(config))
    missing.stdout.fnmatch_lines(
        [
            "*bindings: the mlc4j Android binding is not built: it needs an MLC-LLM source dir "
            "(--mlc-llm-source-dir or MLC_LLM_SOURCE_DIR); ANDROID_NDK (the Android NDK's "
            "folder); lib/libmodel_android.a is complete*"
        ]
    )
    assert not (dist / "lib" / "mlc4j").exists()

    monkeypatch.setenv("ANDROID_NDK", str(android_toolchain["ndk"]))
    built = run_package(pytester, config, f"--mlc-llm-source-dir={source}")
    built.assert_outcomes(**expected_outcomes(config, bindings_built=True))
    mlc4j = dist / "lib" / "mlc4j"
    assert (mlc4j / "build.gradle").read_text() == (
        source / "android" / "mlc4j" / "build.gradle"
    ).read_text()
    assert (mlc4j / "src" / "main" / "AndroidManifest.xml").is_file()
    assert (mlc4j / "output" / "tvm4j_core.jar").is_file()
    # The app config goes into mlc4j's assets and stays in the bundle.
    assets_config = mlc4j / "src" / "main" / "assets" / "mlc-app-config.json"
    assert assets_config.read_text() == (dist / "bundle" / "mlc-app-config.json").read_text()
    # The runtime the script linked holds the model, and the archive stays in lib/.
    runtime = objects.read_object(
        (mlc4j / "output" / "arm64-v8a" / "libtvm4j_runtime_packed.so").read_bytes(), "so"
    )
    report = json.loads((dist / "package-report.json").read_text())
    model_lib = report["models"][0]["model_lib"]
    assert f"{model_lib}___tvm_ffi__library_bin" in {s.name for s in runtime.symbols if s.defined}
    assert (dist / "lib" / "libmodel_android.a").is_file()

    # The process boundary: the interpreter, command line, folder and environment MLC uses.
    work = bindings.work_dir(package_env, "android", source)
    record = json.loads((work / "record.json").read_text())
    assert record["executable"] == sys.executable
    assert record["argv"] == [
        str(source / "android" / "mlc4j" / "prepare_libs.py"),
        "--mlc-llm-source-dir",
        str(source),
    ]
    assert record["cwd"] == str(work)
    assert record["source_dir"] == str(source)
    assert record["env"] == {
        "ANDROID_NDK": str(android_toolchain["ndk"]),
        "MLC_LLM_SOURCE_DIR": str(source),
        "JAVA_HOME": str(android_toolchain["jdk"]),
    }

    # A failing build fails the step with the script's own words, and keeps the last package.
    published = (dist / "package-report.json").read_bytes()
    monkeypatch.setenv("PREPARE_LIBS_FAILS", "1")
    failed = run_package(pytester, config, f"--mlc-llm-source-dir={source}")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    failed.stdout.fnmatch_lines(
        ["*prepare_libs.py failed (exit status 1)*", "*CMake Error at CMakeLists.txt:1*"]
    )
    assert (dist / "package-report.json").read_bytes() == published
    assert "Traceback" not in failed.stdout.str()


@pytest.mark.parametrize(
    ("device", "expected_args", "build_dir"),
    [
        ("iphone", [], "build"),
        ("macabi", ["--catalyst", "--deployment-target", "17.2", "--arch", "arm64"], None),
    ],
)
def test_ios_prepare_libs_is_run_as_mlc_runs_it_and_its_libraries_copied(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    device: str,
    expected_args: list[str],
    build_dir: str | None,
) -> None:
    source = mlc_source_tree(tmp_path / "mlc-llm")
    monkeypatch.setenv("MLC_MACABI_DEPLOYMENT_TARGET", "17.2")
    work, lib = tmp_path / "work", tmp_path / "dist" / "lib"
    lib.mkdir(parents=True)
    (lib / f"libmodel_{device}.a").write_bytes(b"!<arch>\nthe package's own\n")
    copied = bindings.build_ios_runtime(source, work, DEVICES[device], lib, dict(os.environ))
    assert copied == sorted(f"lib{name}.a" for name in bindings.IOS_RUNTIME_LIBRARIES)
    assert (work / "invoked.txt").read_text().split() == [
        str(source / "ios" / "prepare_libs.sh"),
        *expected_args,
    ]
    assert (work / "cwd.txt").read_text().strip() == str(work)
    assert (work / "source.txt").read_text().strip() == str(source)
    assert (work / (build_dir or "build-maccatalyst-arm64") / "lib").is_dir()
    assert (lib / f"libmodel_{device}.a").read_bytes().endswith(b"the package's own\n")


def test_ios_bindings_off_macos_name_what_is_missing() -> None:
    missing = bindings.ios_missing(None, {"PATH": ""}, platform="linux")
    assert missing == [
        "macOS with Xcode (this machine runs linux)",
        "an MLC-LLM source dir (--mlc-llm-source-dir or MLC_LLM_SOURCE_DIR)",
        "cmake on PATH (the native build)",
        "rustup on PATH (prepare_libs.sh adds Rust's iOS targets)",
    ]


@pytest.mark.slow
def test_an_iphone_package_links_with_force_load_and_gets_its_xcconfig(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path, tmp_path: Path
) -> None:
    config = write_config("iphone", {"llama": (SMALL, {})})
    result = run_package(pytester, config, "-rs")
    # The model's steps; library, link (Mach-O, ld64.lld) and app-config; bindings skipped.
    result.assert_outcomes(**expected_outcomes(config))
    result.stdout.fnmatch_lines(
        [f"*bindings: wrote lib/mlc-package.xcconfig; the iOS runtime libraries * are not built: "
         f"it needs macOS with Xcode (this machine runs {sys.platform})*"]
    )  # fmt: skip
    lib = config.parent / "dist" / "lib"
    xcconfig = (lib / "mlc-package.xcconfig").read_text()
    settings = dict(
        line.split(" = ", 1) for line in xcconfig.splitlines() if " = " in line and "//" not in line
    )
    assert settings["MLC_PACKAGE_LIB_DIR"] == "$(PROJECT_DIR)/dist/lib"
    # Its flags, as Xcode expands them with the project beside the config, link every model.
    flags = shlex.split(
        settings["OTHER_LDFLAGS"]
        .replace("$(inherited)", "")
        .replace("$(MLC_PACKAGE_LIB_DIR)", settings["MLC_PACKAGE_LIB_DIR"])
        .replace("$(PROJECT_DIR)", str(config.parent))
    )
    assert flags[:2] == ["-force_load", str(lib / "libmodel_iphone.a")]
    assert flags[2:] == [f"-l{name}" for name in bindings.IOS_RUNTIME_LIBRARIES]
    linker = linking.macho_linker()
    assert linker is not None
    dylib = tmp_path / "app.dylib"
    link = [*linker, "-arch", "arm64", "-platform_version", "ios", "14.0", "14.0", "-dylib"]
    link += ["-undefined", "dynamic_lookup", *flags[:2], "-o", str(dylib)]
    subprocess.run(link, check=True, capture_output=True)
    symbols = {s.name for s in objects.read_object(dylib.read_bytes(), "app").symbols if s.defined}
    (model,) = json.loads((config.parent / "dist" / "package-report.json").read_text())["models"]
    assert f"_{model['model_lib']}___tvm_ffi__library_bin" in symbols

    # The Mach-O check itself: two models sharing a prefix are named, as on the other devices.
    members = objects.read_library_tar(Path(model["library_path"]))
    device = DEVICES["iphone"]
    twice = tmp_path / "twice.a"
    objects.write_archive(
        twice,
        [objects.ArchiveMember(f"{lib_name}_{m.name}", m.data)
         for lib_name in ("first_model", "second_model") for m in members],
        index=device.archive_index,
    )  # fmt: skip
    with pytest.raises(linking.LinkError, match=r"a \(first_model\) and b \(second_model\)"):
        linking.check_static_link(
            twice, tmp_path, {"a": "first_model", "b": "second_model"}, device
        )
