"""What each device means for the compiler, for the objects it produces and for the steps it gets.

Every difference between devices is a field here: the steps ask the device spec, never its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceSpec:
    """A device of the config: how to compile for it and what its objects must look like."""

    name: str
    target: dict[str, Any]  # a TVM Target description (0.27 refuses target strings)
    object_format: str  # "elf" or "macho"
    machine: str  # architecture as objects.read_object reports it
    archive_index: str  # "gnu" or "darwin": the symbol index the platform's linker expects
    symbol_prefix: str  # Mach-O prepends "_" to C symbol names
    # How `package::link` links the archive: "shared" (into lib/libmodel_<device>.so, which is
    # shipped and loaded by the smoke runs), "elf-check" or "macho-check" (into a throwaway
    # shared object or dylib, as the app's native build or Xcode would).
    link_kind: str
    # What `package::bindings` builds: "shared-library" (the linked .so is the binding), "mlc4j"
    # (MLC's Android library) or "ios-runtime" (MLC's iOS runtime libraries and an .xcconfig).
    binding_kind: str
    runs_smoke: bool = False  # the package runs here: each model generates from it
    # Kernels ship as OpenCL C that the phone compiles at run time: the `kernels` step compiles
    # them here first.
    checks_opencl_kernels: bool = False
    # The runtime samples on the GPU (Metal) and calls the sampler functions of the library.
    samples_on_gpu: bool = False
    mac_catalyst: bool = False  # the iOS runtime is built for Mac Catalyst


_METAL = {
    "kind": "metal",
    "max_threads_per_block": 256,
    "max_shared_memory_per_block": 32768,
    "thread_warp_size": 32,
}

DEVICES: dict[str, DeviceSpec] = {
    "android": DeviceSpec(
        name="android",
        target={
            "kind": "opencl",
            "max_threads_per_block": 256,
            "host": {"kind": "llvm", "mtriple": "aarch64-linux-android"},
        },
        object_format="elf",
        machine="aarch64",
        archive_index="gnu",
        symbol_prefix="",
        link_kind="elf-check",
        binding_kind="mlc4j",
        checks_opencl_kernels=True,
    ),
    "iphone": DeviceSpec(
        name="iphone",
        target={**_METAL, "host": {"kind": "llvm", "mtriple": "arm64-apple-darwin"}},
        object_format="macho",
        machine="arm64",
        archive_index="darwin",
        symbol_prefix="_",
        link_kind="macho-check",
        binding_kind="ios-runtime",
        samples_on_gpu=True,
    ),
    "macabi": DeviceSpec(
        name="macabi",
        target={**_METAL, "host": {"kind": "llvm", "mtriple": "arm64-apple-ios18.0-macabi"}},
        object_format="macho",
        machine="arm64",
        archive_index="darwin",
        symbol_prefix="_",
        link_kind="macho-check",
        binding_kind="ios-runtime",
        samples_on_gpu=True,
        mac_catalyst=True,
    ),
    "linux": DeviceSpec(
        name="linux",
        target={"kind": "llvm", "mtriple": "x86_64-pc-linux-gnu"},
        object_format="elf",
        machine="x86_64",
        archive_index="gnu",
        symbol_prefix="",
        link_kind="shared",
        binding_kind="shared-library",
        runs_smoke=True,
    ),
}


def system_lib_prefix(model_lib: str) -> str:
    """The prefix the runtime opens for `system://<model_lib>`: `-` -> `_`, plus a final `_`."""
    return model_lib.replace("-", "_") + "_"
