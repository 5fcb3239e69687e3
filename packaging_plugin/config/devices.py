"""What each device means for the compiler and for the objects it produces."""

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
    ),
    "iphone": DeviceSpec(
        name="iphone",
        target={**_METAL, "host": {"kind": "llvm", "mtriple": "arm64-apple-darwin"}},
        object_format="macho",
        machine="arm64",
        archive_index="darwin",
        symbol_prefix="_",
    ),
    "macabi": DeviceSpec(
        name="macabi",
        target={**_METAL, "host": {"kind": "llvm", "mtriple": "arm64-apple-ios18.0-macabi"}},
        object_format="macho",
        machine="arm64",
        archive_index="darwin",
        symbol_prefix="_",
    ),
    "linux": DeviceSpec(
        name="linux",
        target={"kind": "llvm", "mtriple": "x86_64-pc-linux-gnu"},
        object_format="elf",
        machine="x86_64",
        archive_index="gnu",
        symbol_prefix="",
    ),
}


def system_lib_prefix(model_lib: str) -> str:
    """The prefix the runtime opens for `system://<model_lib>`: `-` -> `_`, plus a final `_`."""
    return model_lib.replace("-", "_") + "_"
