"""Link the combined archive as an app would, and check that every model survived the link.

An app links `libmodel_<device>.a` with whole-archive (Android, Linux) or `-force_load` (iOS);
without it the linker drops every object nothing refers to by name, which is every model library
(the runtime finds them at run time through their registration). Linking here, the same way,
proves the archive links at all (no two models define the same strong symbol) and that each
model's `<model_lib>___tvm_ffi__library_bin` is in the result.

linux: a shared library, `lib/libmodel_linux.so`, that the TVM runtime of the apache-tvm wheel
loads (the smoke runs load it). android: a shared object as the app's native build makes it, with
an ELF linker for aarch64 (ld.lld). iphone, macabi: a dylib with `-force_load`, as Xcode links
the app, with LLVM's Mach-O linker (ld64.lld). Only the MLC runtime's symbols may stay undefined.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from packaging_plugin.checks import objects, validation
from packaging_plugin.checks.runtime_contract import runtime_provides
from packaging_plugin.config.devices import DeviceSpec
from packaging_plugin.errors import PackagingError

# GNU ld, gold and lld word a duplicate definition differently; each names the symbol in quotes.
_DUPLICATE = re.compile(r"(?:multiple definition of|duplicate symbol:?)\s*[`'\"]?([^'`\"\s]+)")


class LinkError(PackagingError):
    """The archive does not link as an app links it; the message names the models at fault."""


class LinkerMissing(Exception):
    """No linker for the device is installed; the message says what to install."""


def c_compiler() -> str | None:
    """The C compiler driver to link with: `$CC`, else the usual names on PATH."""
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    return None


def elf_linker() -> list[str] | None:
    """An ELF linker for aarch64: the system's `ld.lld`, else the one in the ziglang package."""
    if path := shutil.which("ld.lld"):
        return [path]
    if importlib.util.find_spec("ziglang") is not None:
        return [sys.executable, "-m", "ziglang", "ld.lld"]
    return None


def macho_linker() -> list[str] | None:
    """LLVM's Mach-O linker: `ld64.lld`, or a versioned one as Debian installs it."""
    for name in ("ld64.lld", *(f"ld64.lld-{version}" for version in range(30, 10, -1))):
        if path := shutil.which(name):
            return [path]
    return None


# The platform and minimum OS MLC's iOS builds use (ios/prepare_libs.sh).
_MACHO_PLATFORMS = {"iphone": ("ios", "14.0"), "macabi": ("mac-catalyst", "18.0")}
# Left undefined in any dylib by the Mach-O linker itself, for dyld to bind.
_MACHO_LINKER_SYMBOLS = frozenset({"dyld_stub_binder"})


def link_shared_linux(
    archive: Path, output: Path, model_libs: Mapping[str, str], device: DeviceSpec
) -> Path:
    """Link `archive` whole into the shared library `output`; check each model is in it.

    `model_libs` maps model_id -> model_lib. Raises LinkError naming what failed.
    """
    compiler = c_compiler()
    if compiler is None:
        raise LinkError("no C compiler (cc, gcc or clang) on PATH to link the archive with")
    command = [compiler, "-shared", "-o", str(output)]
    command += ["-Wl,--whole-archive", str(archive), "-Wl,--no-whole-archive", "-lm"]
    _link(command, archive, output, model_libs, device)
    return output


def check_static_link(
    archive: Path, work: Path, model_libs: Mapping[str, str], device: DeviceSpec
) -> str:
    """Link `archive` whole as the app's build does (android: a shared object, whole-archive;
    iphone and macabi: a dylib, `-force_load`), leaving the runtime's symbols undefined; returns
    the linker used. Raises LinkError on duplicate strong symbols, a model missing from the
    result, or undefined symbols the runtime does not provide; LinkerMissing without a linker.
    """
    if device.object_format == "elf":
        linker = elf_linker()
        if linker is None:
            raise LinkerMissing(
                "no ELF linker for aarch64: install lld (ld.lld on PATH) or the ziglang package"
            )
        output = work / f"libmodel_{device.name}_check.so"
        command = [*linker, "-shared", "-o", str(output)]
        command += ["--whole-archive", str(archive), "--no-whole-archive"]
    else:
        linker = macho_linker()
        if linker is None:
            raise LinkerMissing(
                "no Mach-O linker: install lld, whose ld64.lld links Mach-O "
                "(Debian and Ubuntu: apt-get install lld)"
            )
        platform, version = _MACHO_PLATFORMS[device.name]
        output = work / f"libmodel_{device.name}_check.dylib"
        command = [*linker, "-arch", device.machine, "-platform_version", platform, version]
        command += [version, "-dylib", "-undefined", "dynamic_lookup"]
        command += ["-force_load", str(archive), "-o", str(output)]
    linked = _link(command, archive, output, model_libs, device)
    unexpected = sorted(
        {
            s.name
            for s in linked.symbols
            if not s.defined
            and s.binding != "local"
            and s.name not in _MACHO_LINKER_SYMBOLS
            and not runtime_provides(s.name, device)
        }
    )
    if unexpected:
        raise LinkError(
            f"{archive.name} links but leaves undefined symbols the MLC runtime does not provide: "
            + ", ".join(unexpected[:12])
            + (f" and {len(unexpected) - 12} more" if len(unexpected) > 12 else "")
        )
    return linker[0] if len(linker) == 1 else "ziglang's ld.lld"


def _link(
    command: list[str],
    archive: Path,
    output: Path,
    model_libs: Mapping[str, str],
    device: DeviceSpec,
) -> objects.ObjectFile:
    """Run the link; check that every model's library symbol is defined in the result."""
    output.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LinkError(_explain_failure(done.stderr, archive, model_libs, device))
    linked = objects.read_object(output.read_bytes(), str(output))
    if missing := models_missing_from(linked, model_libs, device):
        raise LinkError(
            f"the linked {output.name} lacks the library of {', '.join(missing)}: the archive "
            "lost them"
        )
    return linked


def models_missing_from(
    linked: objects.ObjectFile, model_libs: Mapping[str, str], device: DeviceSpec
) -> list[str]:
    """`model_id (model_lib)` of each model whose library symbol `linked` does not define."""
    defined = {s.name for s in linked.symbols if s.defined}
    return [
        f"{model_id} ({model_lib})"
        for model_id, model_lib in model_libs.items()
        if not any(
            validation.library_bin_symbol(model_lib, device, suffix) in defined
            for suffix in validation.LIBRARY_BIN_SUFFIXES
        )
    ]


def _explain_failure(
    stderr: str, archive: Path, model_libs: Mapping[str, str], device: DeviceSpec
) -> str:
    """The linker's complaint, with duplicate symbols traced to the models defining them."""
    tail = "\n".join(stderr.strip().splitlines()[-12:])
    duplicates = sorted(set(_DUPLICATE.findall(stderr)))
    if not duplicates:
        return f"linking {archive.name} failed:\n{tail}"
    owners = _definers(archive, set(duplicates))
    lib_to_ids: dict[str, list[str]] = {}
    for model_id, model_lib in model_libs.items():
        lib_to_ids.setdefault(model_lib, []).append(model_id)
    lines = []
    for symbol in duplicates[:10]:
        libs = owners.get(symbol, [])
        models = [f"{', '.join(lib_to_ids.get(lib, [lib]))} ({lib})" for lib in libs]
        lines.append(f"{symbol}: defined by {' and '.join(models) or 'several members'}")
    return (
        f"{archive.name} does not link: strong symbols defined more than once (two models with "
        "the same system-lib prefix?):\n  " + "\n  ".join(lines)
    )


def _definers(archive: Path, symbols: set[str]) -> dict[str, list[str]]:
    """symbol -> the model_libs (from member names `<model_lib>_<name>.o`) that define it."""
    found: dict[str, list[str]] = {}
    for member in objects.read_archive(archive):
        obj = objects.read_object(member.data, member.name)
        for symbol in obj.defined_external():
            if symbol.name in symbols and symbol.binding == "global":
                owner = member.name.rsplit("_", 1)[0]
                found.setdefault(symbol.name, []).append(owner)
    return found
