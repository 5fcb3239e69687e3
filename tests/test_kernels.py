"""Android libraries' OpenCL kernels are compiled by a real OpenCL C compiler (clang's front end)
before they ship: read out of real TVM-built libraries, and a library with a broken kernel is
refused by model and kernel name."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path

import pytest

from packaging_plugin.checks import library_contents, objects, opencl_kernels
from packaging_plugin.config.devices import DEVICES
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.packaging import SMALL, WriteConfig, run_package


def library_of(config: Path, model_id: str) -> tuple[str, Path]:
    report = json.loads((config.parent / "dist" / "package-report.json").read_text())
    model = next(m for m in report["models"] if m["model_id"] == model_id)
    return model["model_lib"], Path(model["library_path"])


def opencl_payload(library: Path, model_lib: str) -> bytes:
    members = objects.read_library_tar(library)
    contents = library_contents.read_library_contents(members, model_lib, DEVICES["android"])
    return contents.kernel_payload


@pytest.mark.slow
def test_every_kernel_of_an_android_library_compiles_and_a_broken_one_fails_by_name(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path, tmp_path: Path
) -> None:
    config = write_config("android", {"llama": (SMALL, {})})
    first = run_package(pytester, config)
    first.assert_outcomes(**expected_outcomes(config))  # bindings skipped: no MLC source dir
    model_lib, library = library_of(config, "llama")

    # What the runtime will build, read back from the library: one program per kernel.
    payload = opencl_payload(library, model_lib)
    fmt, functions, code = opencl_kernels.read_opencl_module(payload, "llama")
    kernels = opencl_kernels.kernels_of(payload, "llama")
    assert fmt == "cl" and len(kernels) == functions > 0
    assert code.decode().count(opencl_kernels.KERNEL_DELIMITER) == functions
    names = {k.name for k in kernels}
    assert all(f"__kernel void {k.name}(" in k.source for k in kernels)
    assert len(names) == len(kernels)
    report = json.loads((config.parent / "dist" / "package-report.json").read_text())
    (model,) = report["models"]
    assert model["opencl_kernels"] == len(kernels)

    # The same library with one call in one kernel misspelt (same length: the blob stays whole).
    victim = next(k for k in kernels if "get_local_id(" in k.source)
    start = code.index(f"{opencl_kernels.KERNEL_DELIMITER}{victim.name}\n".encode())
    at = code.index(b"get_local_id(", start)
    broken_code = code[:at] + b"get_lokal_id(" + code[at + len(b"get_local_id(") :]
    broken = tmp_path / "broken.tar"
    with tarfile.open(broken, "w") as tar:
        for member in objects.read_library_tar(library):
            data = member.data.replace(code, broken_code)
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    app = json.loads(config.read_text())
    app["model_list"][0]["model_lib"] = model_lib  # a prebuilt library is named by its entry
    app["model_lib_path_for_prepare_libs"] = {model_lib: str(broken)}
    config.write_text(json.dumps(app))
    published = (config.parent / "dist" / "package-report.json").read_bytes()

    second = run_package(pytester, config)
    assert second.ret == pytest.ExitCode.TESTS_FAILED
    second.stdout.fnmatch_lines(
        [
            f"*llama kernels: 1 of {len(kernels)} OpenCL kernels do not compile:*",
            f"*{victim.name}: line *: implicit declaration of function 'get_lokal_id'*",
        ]
    )
    # fetch, compile (the prebuilt tar), validate and bundle passed; library failed, so the
    # package steps after it were skipped
    second.assert_outcomes(**expected_outcomes(config, failing={"llama": "kernels"}))
    assert "Traceback" not in second.stdout.str()
    # Nothing was published: the package of the first run is still there.
    assert (config.parent / "dist" / "package-report.json").read_bytes() == published


@pytest.mark.slow
def test_the_kernel_check_is_skipped_naming_the_compiler_it_needs(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    package_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLC_OPENCL_CLANG", "/nonexistent/clang")
    config = write_config("android", {"llama": (SMALL, {})})
    result = run_package(pytester, config, "-rs")
    result.assert_outcomes(**expected_outcomes(config, kernels_checked=False))  # and bindings
    result.stdout.fnmatch_lines(
        ["*llama kernels: MLC_OPENCL_CLANG=/nonexistent/clang does not compile OpenCL C*"]
    )


def test_kernel_sources_the_runtime_would_refuse_are_reported(tmp_path: Path) -> None:
    source = "// Function: a_kernel\n__kernel void a_kernel(__global float* x) { x[0] = 1.0f; }\n"
    code = source.encode()

    def payload(functions: int, code: bytes) -> bytes:
        fmt = b"cl"
        function_map = struct.pack("<Q", functions) + b"\x00" * 24  # entries are not read
        return (
            struct.pack("<Q", len(fmt)) + fmt + function_map + struct.pack("<Q", len(code)) + code
        )

    assert [k.name for k in opencl_kernels.kernels_of(payload(1, code), "m")] == ["a_kernel"]
    with pytest.raises(opencl_kernels.KernelSourceError, match="1 kernel sources for 2 kernel"):
        opencl_kernels.kernels_of(payload(2, code), "m")
    with pytest.raises(opencl_kernels.KernelSourceError, match="no kernel source delimited"):
        opencl_kernels.kernels_of(payload(1, b"__kernel void a() {}"), "m")
    # A kernel using doubles does not build on a phone GPU without cl_khr_fp64: nor here.
    double = opencl_kernels.Kernel(
        "uses_double", "__kernel void uses_double(__global double* x) { x[0] = 1.0; }\n"
    )
    with pytest.raises(opencl_kernels.KernelBuildError, match="uses_double: line 1: use of type"):
        opencl_kernels.check_kernels([double], tmp_path / "records")
    # A pass is recorded: the same source is not compiled again.
    fine = opencl_kernels.kernels_of(payload(1, code), "m")
    assert not opencl_kernels.check_kernels(fine, tmp_path / "records").cached
    assert opencl_kernels.check_kernels(fine, tmp_path / "records").cached
