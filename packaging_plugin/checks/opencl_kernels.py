"""Compile the OpenCL C an Android model library carries, as the phone's driver will at run time.

A library for Android holds its GPU kernels as OpenCL C source, in the "opencl" module of its
library blob. The phone compiles them only when the app first runs the model, so a kernel that
does not build (a code generator bug, a type the GPU lacks) shows up as a crash on the device.
This module takes the source out of the library and compiles every kernel with clang's OpenCL
front end, kernel by kernel as the runtime does, so such a kernel fails packaging by name.

The "opencl" payload (apache/tvm `OpenCLModuleNode::SaveToBytes`; little-endian): string fmt
("cl" for source), the function map (u64 count, then per kernel its name and launch info), and
last the code as u64 length + bytes. The runtime splits the code at every `// Function: <name>`
line and builds each part as its own program (`clBuildProgram`, no options: OpenCL C 1.2), so
each part must compile alone, and there must be as many parts as functions in the map.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging_plugin.cache_records import read_sealed, write_sealed
from packaging_plugin.errors import PackagingError
from packaging_plugin.temporaries import temp_dir

KERNEL_DELIMITER = "// Function: "
SOURCE_FORMAT = "cl"  # the other formats (xclbin, aocx) hold binaries for FPGAs, not phones

# What a phone GPU's compiler accepts (Adreno and Mali): OpenCL C 1.2 with half precision and no
# double precision. Clang's SPIR target enables every extension by default, so doubles are
# switched off: a kernel using them would stop at TVM's `#error` on such a phone.
COMPILE_FLAGS = (
    "-x",
    "cl",
    "-cl-std=CL1.2",
    "-target",
    "spir64",
    "-Xclang",
    "-cl-ext=-cl_khr_fp64",
    "-Xclang",
    "-finclude-default-header",
    "-Xclang",
    "-fdeclare-opencl-builtins",
    "-c",
    "-emit-llvm",
)

INSTALL_HINT = "install clang with its OpenCL headers (Debian and Ubuntu: apt-get install clang)"

_PROBE_KERNEL = """#pragma OPENCL EXTENSION cl_khr_fp16 : enable
kernel void probe(global half* a) { a[0] = a[0] + (half)1; }
"""
_DIAGNOSTIC = re.compile(r"^(?P<file>[^\s:]+\.cl):(?P<line>\d+):(?P<col>\d+): error: (?P<text>.*)$")
MAX_KERNELS_SHOWN = 10


class KernelSourceError(PackagingError):
    """The library's OpenCL module is not laid out as the runtime reads it."""


class KernelsNotChecked(Exception):
    """The kernels cannot be checked here; the message says why (the step is skipped)."""


class NoOpenCLCompiler(KernelsNotChecked):
    """No clang that compiles OpenCL C is installed; the message says what to install."""


class KernelBuildError(PackagingError):
    """Kernels that do not compile; the message names each with its first error."""


@dataclass(frozen=True)
class Kernel:
    name: str
    source: str


@dataclass(frozen=True)
class KernelCheck:
    """What one library's kernel check found (for the report)."""

    kernels: int
    source_bytes: int
    compiler: str
    cached: bool  # this exact source passed with this compiler before: not compiled again


def read_opencl_module(payload: bytes, where: str) -> tuple[str, int, bytes]:
    """(fmt, number of functions in the map, code) of an "opencl" module payload."""
    if len(payload) < 16:
        raise KernelSourceError(f"{where}: the opencl module is {len(payload)} bytes")
    (fmt_length,) = struct.unpack_from("<Q", payload, 0)
    if 8 + fmt_length + 8 > len(payload):
        raise KernelSourceError(f"{where}: the opencl module's format string overruns it")
    fmt = payload[8 : 8 + fmt_length].decode("utf-8", errors="replace")
    (functions,) = struct.unpack_from("<Q", payload, 8 + fmt_length)
    # The function map's entries vary between TVM versions, the code is always the last field:
    # find the length-prefixed tail that reaches the payload's end.
    if fmt != SOURCE_FORMAT:
        return fmt, functions, b""
    start = payload.find(KERNEL_DELIMITER.encode(), 16 + fmt_length)
    while start != -1:
        (length,) = struct.unpack_from("<Q", payload, start - 8)
        if length == len(payload) - start:
            return fmt, functions, payload[start:]
        start = payload.find(KERNEL_DELIMITER.encode(), start + 1)
    raise KernelSourceError(
        f"{where}: the opencl module has no kernel source delimited by '{KERNEL_DELIMITER}<name>'"
    )


def split_kernels(code: str) -> list[Kernel]:
    """The kernels as the runtime splits them: each from its delimiter line to the next."""
    kernels = []
    for part in code.split(KERNEL_DELIMITER)[1:]:
        name, _, source = part.partition("\n")
        kernels.append(Kernel(name.strip(), source))
    return kernels


def kernels_of(payload: bytes, where: str) -> list[Kernel]:
    """Every kernel of an "opencl" module payload; raises KernelSourceError where the runtime
    would refuse the module."""
    fmt, functions, code = read_opencl_module(payload, where)
    if fmt != SOURCE_FORMAT:
        return []
    kernels = split_kernels(code.decode("utf-8", errors="replace"))
    if len(kernels) != functions:
        raise KernelSourceError(
            f"{where}: {len(kernels)} kernel sources for {functions} kernel functions: the "
            "runtime refuses such a module when it loads it"
        )
    return kernels


@functools.lru_cache(maxsize=1)
def opencl_compiler() -> tuple[str, str] | str:
    """(path, version line) of a clang that compiles OpenCL C with its headers, else why not.

    `$MLC_OPENCL_CLANG` names the one to use; otherwise `clang`, then versioned names, newest
    first.
    """
    chosen = os.environ.get("MLC_OPENCL_CLANG")
    if chosen:
        path = shutil.which(chosen)
        version = _probe(path) if path else None
        if path is None or version is None:
            return f"MLC_OPENCL_CLANG={chosen} does not compile OpenCL C: {INSTALL_HINT}"
        return path, version
    for name in ["clang", *(f"clang-{version}" for version in range(30, 10, -1))]:
        if (path := shutil.which(name)) and (version := _probe(path)):
            return path, version
    return f"no clang that compiles OpenCL C: {INSTALL_HINT}"


def _probe(clang: str) -> str | None:
    with temp_dir("mlc-opencl-probe-") as work:
        (Path(work) / "probe.cl").write_text(_PROBE_KERNEL)
        try:
            done = subprocess.run(
                [clang, *COMPILE_FLAGS, "probe.cl"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            version = subprocess.run(
                [clang, "--version"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
    if done.returncode != 0:
        return None
    return version.stdout.splitlines()[0].strip() if version.stdout else clang


def check_kernels(kernels: list[Kernel], record_dir: Path | None) -> KernelCheck:
    """Compile every kernel on its own; raise KernelBuildError naming those that fail.

    A pass is recorded in `record_dir` under a digest of the compiler, its flags and the source,
    so an unchanged library is not compiled again.
    """
    found = opencl_compiler()
    if isinstance(found, str):
        raise NoOpenCLCompiler(found)
    clang, version = found
    source_bytes = sum(len(k.source) for k in kernels)
    digest = _digest(version, kernels)
    record = record_dir / f"{digest}.json" if record_dir is not None else None
    passed = {"digest": digest, "compiler": version, "kernels": len(kernels)}
    if record is not None and read_sealed(record) == passed:  # a damaged record is not a pass
        return KernelCheck(len(kernels), source_bytes, version, cached=True)
    # One translation unit of every kernel compiles in a third of the time of one per kernel (the
    # headers are read once). Only where it fails are the kernels compiled one by one, as the
    # runtime builds them, to find which fail: a part that compiled only beside another (it
    # used a definition the other holds) would be missed, but TVM gives every part its own
    # declarations of everything it calls.
    failures = {} if compiles_together(clang, kernels) else compile_one_by_one(clang, kernels)
    if failures:
        raise KernelBuildError(_describe(failures, kernels))
    if record is not None:
        write_sealed(record, passed)
    return KernelCheck(len(kernels), source_bytes, version, cached=False)


def _digest(version: str, kernels: list[Kernel]) -> str:
    hasher = hashlib.sha256()
    hasher.update(json.dumps([version, COMPILE_FLAGS]).encode())
    for kernel in kernels:
        hasher.update(kernel.name.encode() + b"\0" + kernel.source.encode() + b"\0")
    return hasher.hexdigest()


def compiles_together(clang: str, kernels: list[Kernel]) -> bool:
    """Whether every kernel compiles in one translation unit (one read of the headers)."""
    with temp_dir("mlc-opencl-") as work:
        (Path(work) / "all.cl").write_text("\n".join(k.source for k in kernels))
        done = subprocess.run(
            [clang, *COMPILE_FLAGS, "all.cl"], cwd=work, capture_output=True, check=False
        )
    return done.returncode == 0


def compile_one_by_one(clang: str, kernels: list[Kernel]) -> dict[str, list[str]]:
    """kernel name -> its error lines; one clang run compiles every kernel as its own program."""
    with temp_dir("mlc-opencl-") as work:
        files = []
        file_to_kernel = {}
        for i, kernel in enumerate(kernels):
            # Short file names keep the diagnostics readable; the map restores the kernel's name.
            name = f"k{i}.cl"
            (Path(work) / name).write_text(kernel.source)
            files.append(name)
            file_to_kernel[name] = kernel.name
        done = subprocess.run(
            [clang, *COMPILE_FLAGS, *files], cwd=work, capture_output=True, text=True, check=False
        )
    failures: dict[str, list[str]] = {}
    for line in done.stderr.splitlines():
        if (match := _DIAGNOSTIC.match(line)) and match["file"] in file_to_kernel:
            failures.setdefault(file_to_kernel[match["file"]], []).append(
                f"line {match['line']}: {match['text']}"
            )
    if done.returncode != 0 and not failures:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        failures["(every kernel)"] = [f"clang failed without naming a kernel: {tail}"]
    return failures


def _describe(failures: dict[str, list[str]], kernels: list[Kernel]) -> str:
    sources = {k.name: k.source.splitlines() for k in kernels}
    lines = [f"{len(failures)} of {len(kernels)} OpenCL kernels do not compile:"]
    for name, errors in list(failures.items())[:MAX_KERNELS_SHOWN]:
        first = errors[0]
        lines.append(f"  {name}: {first}")
        if (number := re.match(r"line (\d+):", first)) and name in sources:
            text = sources[name][int(number[1]) - 1].strip()
            lines.append(f"      {text[:160]}")
    if len(failures) > MAX_KERNELS_SHOWN:
        lines.append(f"  and {len(failures) - MAX_KERNELS_SHOWN} more")
    return "\n".join(lines)
