"""The platform bindings an app links the package with, built from an MLC-LLM source tree the way
MLC's own packaging builds them.

android: `android/mlc4j/prepare_libs.py` builds `libtvm4j_runtime_packed.so` (the MLC runtime with
every model of `libmodel_android.a` linked whole) and `tvm4j_core.jar`; `lib/mlc4j/` is then laid
out as MLC lays it out: `build.gradle`, `src/` (with the app config in `src/main/assets/`) and
`output/`. The script runs in a work folder: it reads `build/lib/libmodel_android.a` there and
writes `build/output/`.

iphone, macabi: `ios/prepare_libs.sh` (macOS with Xcode only) builds the runtime's static
libraries into `build/lib/` (`build-maccatalyst-<arch>/lib/` for Mac Catalyst), copied into
`lib/`. Everywhere, `lib/mlc-package.xcconfig` holds the build settings the Xcode target needs to
link the package, `-force_load` above all: without it the linker silently drops every model.

Each builder first lists what is missing (a source dir, an NDK, a JDK, macOS...) so the step can
be skipped saying exactly that; otherwise it runs the script and checks what it made.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging_plugin.assemble import linking
from packaging_plugin.checks import objects
from packaging_plugin.config.devices import DeviceSpec
from packaging_plugin.errors import PackagingError

ANDROID_SCRIPT = Path("android") / "mlc4j" / "prepare_libs.py"
IOS_SCRIPT = Path("ios") / "prepare_libs.sh"
ANDROID_RUNTIME = Path("output") / "arm64-v8a" / "libtvm4j_runtime_packed.so"
ANDROID_JAR = Path("output") / "tvm4j_core.jar"
XCCONFIG_NAME = "mlc-package.xcconfig"
# The libraries ios/prepare_libs.sh installs, in the order MLC's iOS app links them.
IOS_RUNTIME_LIBRARIES = (
    "mlc_llm",
    "tvm_ffi_static",
    "tvm_runtime",
    "tokenizers_cpp",
    "sentencepiece",
    "tokenizers_c",
)
LOG_LINES_SHOWN = 20


class BindingFailed(PackagingError):
    """The platform build ran and failed, or made something unusable; the message says which."""


@dataclass(frozen=True)
class ScriptRun:
    """One run of an MLC-LLM build script: what it is given, exactly."""

    command: list[str]
    cwd: Path
    env: dict[str, str]
    log: Path


def source_dir_problem(source: Path | None, script: Path) -> str | None:
    """Why `source` cannot build the binding, or None."""
    if source is None:
        return "an MLC-LLM source dir (--mlc-llm-source-dir or MLC_LLM_SOURCE_DIR)"
    if not (source / script).is_file():
        return f"{source / script} (the source dir is not an MLC-LLM checkout with its scripts)"
    return None


def _tool(name: str, why: str, environ: Mapping[str, str]) -> str | None:
    return None if shutil.which(name, path=environ.get("PATH")) else f"{name} on PATH ({why})"


def _jdk_problem(environ: Mapping[str, str]) -> str | None:
    java_home = environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "javac").is_file():
        return None
    if shutil.which("javac", path=environ.get("PATH")):
        return None
    return "a JDK (javac on PATH or in $JAVA_HOME/bin; mlc4j compiles tvm4j's Java sources)"


def _ndk_problem(environ: Mapping[str, str]) -> str | None:
    ndk = environ.get("ANDROID_NDK")
    if not ndk:
        return "ANDROID_NDK (the Android NDK's folder)"
    if not (Path(ndk) / "build" / "cmake" / "android.toolchain.cmake").is_file():
        return f"an NDK at ANDROID_NDK={ndk} (it has no build/cmake/android.toolchain.cmake)"
    return None


def _python_problem(python: str, environ: Mapping[str, str]) -> str | None:
    """prepare_libs.py imports mlc_llm for its logging: the interpreter must find it."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('mlc_llm') is None)"
    done = subprocess.run(
        [python, "-c", probe], env=dict(environ), capture_output=True, check=False
    )
    if done.returncode == 0:
        return None
    return (
        f"the mlc_llm Python package for {python} (prepare_libs.py imports it; install mlc-llm "
        "or put the source dir's python/ on PYTHONPATH)"
    )


def android_missing(source: Path | None, environ: Mapping[str, str]) -> list[str]:
    """Everything the mlc4j build needs that this machine lacks, each named exactly."""
    problems = [
        source_dir_problem(source, ANDROID_SCRIPT),
        _ndk_problem(environ),
        _jdk_problem(environ),
        _tool("cmake", "the native build", environ),
        _tool("rustup", "prepare_libs.py adds Rust's aarch64-linux-android target", environ),
        _python_problem(sys.executable, environ),
    ]
    return [p for p in problems if p]


def ios_missing(
    source: Path | None, environ: Mapping[str, str], platform: str = sys.platform
) -> list[str]:
    """Everything ios/prepare_libs.sh needs that this machine lacks, each named exactly."""
    problems = []
    if platform != "darwin":
        problems.append(f"macOS with Xcode (this machine runs {platform})")
    else:
        problems.append(_tool("xcodebuild", "Xcode builds the iOS libraries", environ))
    problems += [
        source_dir_problem(source, IOS_SCRIPT),
        _tool("cmake", "the native build", environ),
        _tool("rustup", "prepare_libs.sh adds Rust's iOS targets", environ),
    ]
    return [p for p in problems if p]


def work_dir(cache_root: Path, device: str, source: Path) -> Path:
    """A work folder kept between runs, one per device and source dir: the native build is
    incremental there, as in MLC's `build/` folder."""
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return cache_root / "bindings" / f"{device}-{digest}"


def android_script_run(source: Path, work: Path, environ: Mapping[str, str]) -> ScriptRun:
    env = {**environ, "MLC_LLM_SOURCE_DIR": str(source)}
    command = [sys.executable, str(source / ANDROID_SCRIPT), "--mlc-llm-source-dir", str(source)]
    return ScriptRun(command, work, env, work / "prepare_libs.log")


def ios_script_run(
    source: Path, work: Path, device: DeviceSpec, environ: Mapping[str, str]
) -> tuple[ScriptRun, Path]:
    """The run of ios/prepare_libs.sh, and the folder its libraries land in."""
    env = {**environ, "MLC_LLM_SOURCE_DIR": str(source)}
    command = ["bash", str(source / IOS_SCRIPT)]
    built = work / "build" / "lib"
    if device.mac_catalyst:
        # As MLC: the deployment target and arch come from the environment, with its defaults.
        target = environ.get("MLC_MACABI_DEPLOYMENT_TARGET", "18.0")
        arch = environ.get("MLC_MACABI_ARCH", "").strip() or "arm64"
        command += ["--catalyst", "--deployment-target", target, "--arch", arch]
        built = work / f"build-maccatalyst-{arch}" / "lib"
    return ScriptRun(command, work, env, work / "prepare_libs.log"), built


def run_script(run: ScriptRun, what: str) -> None:
    """Run a build script with its output in its log; BindingFailed quotes the log's tail."""
    run.cwd.mkdir(parents=True, exist_ok=True)
    with run.log.open("w") as log:
        done = subprocess.run(
            run.command, cwd=run.cwd, env=run.env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = run.log.read_text(errors="replace").strip().splitlines()[-LOG_LINES_SHOWN:]
        raise BindingFailed(
            f"{what} failed (exit status {done.returncode}); the end of {run.log}:\n    "
            + "\n    ".join(tail)
        )


def build_mlc4j(
    source: Path,
    work: Path,
    archive: Path,
    app_config: Path,
    destination: Path,
    model_libs: Mapping[str, str],
    device: DeviceSpec,
    environ: Mapping[str, str],
) -> Path:
    """Build the mlc4j runtime with the package's models and lay out `destination` (lib/mlc4j)."""
    build = work / "build"
    (build / "lib").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, build / "lib" / archive.name)
    shutil.rmtree(build / "output", ignore_errors=True)  # what a failed build leaves is not used
    run_script(android_script_run(source, work, environ), str(source / ANDROID_SCRIPT))
    for made in (ANDROID_RUNTIME, ANDROID_JAR):
        if not (build / made).is_file():
            raise BindingFailed(f"{ANDROID_SCRIPT} succeeded but made no {build / made}")
    _check_runtime_has_models(build / ANDROID_RUNTIME, model_libs, device)
    mlc4j = source / "android" / "mlc4j"
    shutil.copytree(mlc4j / "src", destination / "src")
    shutil.copyfile(mlc4j / "build.gradle", destination / "build.gradle")
    shutil.copytree(build / "output", destination / "output")
    assets = destination / "src" / "main" / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(app_config, assets / app_config.name)
    return destination


def _check_runtime_has_models(
    runtime: Path, model_libs: Mapping[str, str], device: DeviceSpec
) -> None:
    linked = objects.read_object(runtime.read_bytes(), str(runtime))
    if linked.machine != device.machine:
        raise BindingFailed(f"{runtime.name} is for {linked.machine}, not {device.machine}")
    if missing := linking.models_missing_from(linked, model_libs, device):
        raise BindingFailed(
            f"{runtime.name} lacks the library of {', '.join(missing)}: the mlc4j build did not "
            "link libmodel_android.a whole"
        )


def build_ios_runtime(
    source: Path, work: Path, device: DeviceSpec, lib_dir: Path, environ: Mapping[str, str]
) -> list[str]:
    """Run ios/prepare_libs.sh and copy the libraries it made into `lib_dir`; their names."""
    run, built = ios_script_run(source, work, device, environ)
    run_script(run, str(source / IOS_SCRIPT))
    if not built.is_dir():
        raise BindingFailed(f"{IOS_SCRIPT} succeeded but made no {built}")
    copied = []
    for library in sorted(built.iterdir()):
        if library.is_file() and library.name != f"libmodel_{device.name}.a":
            shutil.copyfile(library, lib_dir / library.name)
            copied.append(library.name)
    missing = [f"lib{name}.a" for name in IOS_RUNTIME_LIBRARIES if f"lib{name}.a" not in copied]
    if missing:
        raise BindingFailed(f"{IOS_SCRIPT} made no {', '.join(missing)} in {built}")
    return copied


def write_xcconfig(lib_dir: Path, device: str, project_relative_lib: str) -> Path:
    """Write `lib_dir/mlc-package.xcconfig`: the Xcode build settings that link the package.

    `project_relative_lib` is the lib folder relative to the package config's folder, where MLC's
    iOS app keeps its Xcode project.
    """
    path = lib_dir / XCCONFIG_NAME
    runtime = " ".join(f"-l{name}" for name in IOS_RUNTIME_LIBRARIES)
    path.write_text(
        "\n".join(
            [
                f"// Build settings that link this package's {device} libraries into an app.",
                f'// Use it from the app target\'s .xcconfig: #include "{XCCONFIG_NAME}" with its',
                "// path, or set it as the target's base configuration.",
                "//",
                "// The model libraries register themselves when the app starts and nothing refers",
                "// to them by name: without -force_load the linker drops every one of them,",
                "// silently, and the app finds no model at run time.",
                "//",
                "// MLC_PACKAGE_LIB_DIR assumes the Xcode project sits beside the package config;",
                "// change it where the project lives elsewhere.",
                f"MLC_PACKAGE_LIB_DIR = $(PROJECT_DIR)/{project_relative_lib}",
                'LIBRARY_SEARCH_PATHS = $(inherited) "$(MLC_PACKAGE_LIB_DIR)"',
                "OTHER_LDFLAGS = $(inherited) "
                f'-force_load "$(MLC_PACKAGE_LIB_DIR)/libmodel_{device}.a" {runtime}',
                "",
            ]
        )
    )
    return path


def describe_missing(what: str, missing: Sequence[str], *, plural: bool = False) -> str:
    return f"{what} {'are' if plural else 'is'} not built: it needs " + "; ".join(missing)
