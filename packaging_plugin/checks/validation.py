"""Checks of model libraries and of the combined archive, with messages a user can act on.

A model library (the tar `export_library` writes) must hold objects of the device's format and
architecture, define `<model_lib>___tvm_ffi__library_bin` (the runtime finds the model through it,
`system://<model_lib>`), and leave undefined only what the app's runtime provides. The combined
archive must have a symbol index listing every model, and no strong symbol defined by two members:
such an archive does not link (two models with the same system-lib prefix, for instance).

A model library must also meet the MLC runtime's contract (runtime_contract.py), read from what the
objects hold (library_contents.py), not from our model code.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from packaging_plugin.checks.library_contents import (
    LibraryContents,
    LibraryContentsError,
    read_library_contents,
)
from packaging_plugin.checks.objects import (
    ArchiveMember,
    ObjectFile,
    ObjectFormatError,
    archive_index_kind,
    read_archive,
    read_archive_index,
    read_library_tar,
    read_object,
)
from packaging_plugin.checks.runtime_contract import contract_problems, runtime_provides
from packaging_plugin.config.devices import DeviceSpec
from packaging_plugin.errors import PackagingError

# Suffixes of the library-bin symbol after `<model_lib>_` (the system-lib prefix), newest first.
# TVM's prefix is model_lib + "_", so the symbol reads `<model_lib>___tvm_ffi__library_bin`.
LIBRARY_BIN_SUFFIXES: tuple[str, ...] = (
    "___tvm_ffi__library_bin",  # TVM with tvm-ffi (0.21+, this package's 0.27)
    "___tvm_ffi_library_bin",  # early tvm-ffi builds
    "___tvm_dev_mblob",  # TVM before tvm-ffi (what older MLC-LLM releases ship)
)

_FORMAT_NAMES = {"elf": "ELF", "macho": "Mach-O"}
_MAX_LISTED = 12  # symbols listed per problem; the rest are counted


class ValidationError(PackagingError):
    """A library or archive is not fit for the app; the message says what and why, in full."""


@dataclass(frozen=True)
class LibraryFacts:
    """What validation found in one model library (for the report)."""

    model_lib: str
    members: tuple[str, ...]
    object_format: str  # "elf" | "macho"
    machine: str
    suffix: str  # the library-bin suffix found, one of LIBRARY_BIN_SUFFIXES
    symbol: str  # the library-bin symbol as it is in the object ("_" first on Mach-O)
    defined_symbols: tuple[str, ...]  # strong (global, non-weak) definitions, sorted
    undefined_symbols: tuple[str, ...]  # left to the runtime, sorted
    size_bytes: int  # of the library tar
    # What the library offers the runtime; None for an older-suffix library (a pre-tvm-ffi
    # blob, whose format is not read here).
    contents: LibraryContents | None = None

    @property
    def legacy_suffix(self) -> bool:
        return self.suffix != LIBRARY_BIN_SUFFIXES[0]


@dataclass(frozen=True)
class ArchiveFacts:
    """What validation found in the combined archive (for the report)."""

    members: tuple[str, ...]
    member_owner: Mapping[str, str]  # member -> model_id
    symbols: Mapping[str, str]  # model_id -> library-bin symbol found
    index_symbols: int  # entries in the archive's symbol index
    size_bytes: int


def archive_member_name(model_lib: str, member_name: str) -> str:
    """The combined archive's name for a library's member: every model's tar holds a `lib0.o`,
    and `ar` replaces a member of the same name, so members carry their model_lib first."""
    if "/" in model_lib:
        raise ValueError(f"model_lib {model_lib!r} contains '/', which ar member names cannot")
    return f"{model_lib}_{PurePosixPath(member_name).name}"


def library_bin_symbol(model_lib: str, device: DeviceSpec, suffix: str) -> str:
    """The symbol through which the runtime finds `model_lib` in a system library."""
    return device.symbol_prefix + model_lib.replace("-", "_") + suffix


# --------------------------------------------------------------------------------------------
# One model library


def validate_model_library(
    tar_path: str | os.PathLike[str],
    model_lib: str,
    device: DeviceSpec,
    request: Mapping[str, Any] | None = None,
) -> LibraryFacts:
    """Check one model library tar for `device`; raises ValidationError listing every problem.

    request: the compile request the library is meant to be (`chat_config.build_compile_request`
    of the model's mlc-chat-config.json, overrides and device); when given, `_metadata` must agree
    with it. Without it only the runtime contract itself is checked.
    """
    where = f"model library {tar_path} (model_lib {model_lib!r}, device {device.name})"
    try:
        members = read_library_tar(tar_path)
    except FileNotFoundError:
        raise ValidationError(f"{where}: the file does not exist") from None
    except ObjectFormatError as error:
        raise ValidationError(f"{where}: {error}") from None
    if not members:
        raise ValidationError(f"{where}: the tar holds no object (.o) files")

    problems: list[str] = []
    objects = _read_objects(members, problems)
    problems += _format_problems(objects, {o.name: model_lib for o in objects}, device)

    strong = {s.name for o in objects for s in o.symbols if _is_strong(s.defined, s.binding)}
    found = _find_library_bin(model_lib, strong, device)
    if found is None and objects:
        problems.append(_missing_library_bin(model_lib, objects, device))

    defined = {s.name for o in objects for s in o.defined_external()}
    referenced: dict[str, list[str]] = defaultdict(list)
    for obj in objects:
        for sym in obj.symbols:
            if not sym.defined and sym.name not in defined:
                referenced[sym.name].append(obj.name)
    unexpected = sorted(n for n in referenced if not runtime_provides(n, device))
    if unexpected:
        listed = [f"{n} (in {', '.join(sorted(set(referenced[n])))})" for n in unexpected]
        problems.append("undefined symbols that the runtime does not provide: " + _shorten(listed))

    contents = None
    if found is not None and found[0] == LIBRARY_BIN_SUFFIXES[0] and len(objects) == len(members):
        try:
            contents = read_library_contents(members, model_lib, device)
        except LibraryContentsError as error:
            problems.append(f"the library blob is unreadable: {error}")
        else:
            problems += contract_problems(contents, device, request)

    if problems:
        raise ValidationError(_report(where, problems))
    assert found is not None
    return LibraryFacts(
        model_lib=model_lib,
        members=tuple(o.name for o in objects),
        object_format=device.object_format,
        machine=device.machine,
        suffix=found[0],
        symbol=found[1],
        defined_symbols=tuple(sorted(strong)),
        undefined_symbols=tuple(sorted(referenced)),
        size_bytes=Path(tar_path).stat().st_size,
        contents=contents,
    )


# --------------------------------------------------------------------------------------------
# The combined archive


def validate_combined_archive(
    archive_path: str | os.PathLike[str],
    expected: Mapping[str, str],
    device: DeviceSpec,
    member_owner: Mapping[str, str] | None = None,
) -> ArchiveFacts:
    """Check `lib/libmodel_<device>.a` for the app config's models; raises one ValidationError
    listing every problem.

    expected: model_id -> model_lib. member_owner: member name -> model_id, when the caller
    knows it; by default a member belongs to the model whose `archive_member_name` prefix it
    carries (the longest one, should one model_lib be a prefix of another).
    """
    where = f"archive {archive_path} (device {device.name})"
    try:
        members = read_archive(archive_path)
        index = read_archive_index(archive_path)
        index_kind = archive_index_kind(archive_path)
    except FileNotFoundError:
        raise ValidationError(f"{where}: the file does not exist") from None
    except ObjectFormatError as error:
        raise ValidationError(f"{where}: {error}") from None

    problems: list[str] = []
    names = [m.name for m in members]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"member names repeat ({', '.join(repeated)}): name members per model")
    owner = dict(member_owner) if member_owner is not None else _derive_owners(names, expected)
    objects = _read_objects(members, problems)
    problems += _format_problems(objects, owner, device)

    if not index:
        problems.append(
            "the archive has no symbol index: ld64 refuses it and GNU ld cannot search it "
            "(write it with objects.write_archive, or run ranlib)"
        )
    elif index_kind != device.archive_index:
        problems.append(
            f"the symbol index is {index_kind} format, device {device.name} needs "
            f"{device.archive_index}"
        )

    strong_by_member = {
        o.name: {s.name for s in o.symbols if _is_strong(s.defined, s.binding)} for o in objects
    }
    all_strong = set().union(*strong_by_member.values())
    found_symbols: dict[str, str] = {}
    for model_id, model_lib in expected.items():
        found = _find_library_bin(model_lib, all_strong, device)
        if found is None:
            available = _available_model_libs(all_strong, device)
            problems.append(
                f"model {model_id!r} (model_lib {model_lib!r}) is missing: no "
                f"{library_bin_symbol(model_lib, device, LIBRARY_BIN_SUFFIXES[0])} "
                f"(nor an older suffix); the archive holds {_describe_available(available)}"
            )
            continue
        found_symbols[model_id] = found[1]
        if index and found[1] not in index:
            problems.append(f"the symbol index does not list {found[1]} (model {model_id!r})")

    if index:
        problems += _index_problems(objects, index)
    problems += _duplicate_problems(objects, strong_by_member, owner)

    if problems:
        raise ValidationError(_report(where, problems))
    return ArchiveFacts(
        members=tuple(names),
        member_owner=owner,
        symbols=found_symbols,
        index_symbols=len(index),
        size_bytes=Path(archive_path).stat().st_size,
    )


def _derive_owners(names: Iterable[str], expected: Mapping[str, str]) -> dict[str, str]:
    ids_by_lib: dict[str, list[str]] = defaultdict(list)
    for model_id, model_lib in expected.items():
        ids_by_lib[model_lib].append(model_id)
    owners = {}
    for name in names:
        libs = [lib for lib in ids_by_lib if name.startswith(archive_member_name(lib, ""))]
        if libs:
            owners[name] = ", ".join(ids_by_lib[max(libs, key=len)])
    return owners


def _index_problems(objects: Sequence[ObjectFile], index: Mapping[str, str]) -> list[str]:
    """The index must list every defined global/weak symbol, and point at a member defining it."""
    defined_in: dict[str, set[str]] = defaultdict(set)
    for obj in objects:
        for sym in obj.defined_external():
            defined_in[sym.name].add(obj.name)
    problems = []
    if missing := sorted(set(defined_in) - set(index)):
        problems.append("the symbol index is incomplete, it lacks " + _shorten(missing))
    if stale := sorted(s for s, m in index.items() if m not in defined_in.get(s, ())):
        problems.append("the symbol index is stale, wrong entries for " + _shorten(stale))
    return problems


def _duplicate_problems(
    objects: Sequence[ObjectFile],
    strong_by_member: Mapping[str, set[str]],
    owner: Mapping[str, str],
) -> list[str]:
    """Strong symbols defined by two members: the link fails (weak ones repeat by design)."""
    definers: dict[str, list[str]] = defaultdict(list)
    for obj in objects:
        for name in sorted(strong_by_member[obj.name]):
            definers[name].append(obj.name)
    # Group by who clashes, so 20 symbols of one prefix clash make one line, not 20.
    by_clash: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, where in definers.items():
        if len(where) > 1:
            by_clash[tuple(where)].append(name)
    problems = []
    for where, names in by_clash.items():
        parties = " and ".join(
            f"model {owner[m]!r} (member {m})" if m in owner else f"member {m} (no model)"
            for m in where
        )
        problems.append(
            f"strong symbols defined twice, by {parties}: {_shorten(names)}; these cannot be "
            "linked into one app (two models with the same model_lib / system-lib prefix?)"
        )
    return problems


# --------------------------------------------------------------------------------------------
# Shared pieces


def _read_objects(members: Sequence[ArchiveMember], problems: list[str]) -> list[ObjectFile]:
    objects = []
    for member in members:
        try:
            objects.append(read_object(member.data, member.name))
        except ObjectFormatError as error:
            problems.append(str(error))
    return objects


def _format_problems(
    objects: Sequence[ObjectFile], owner: Mapping[str, str], device: DeviceSpec
) -> list[str]:
    needed = f"{_FORMAT_NAMES[device.object_format]} {device.machine}"
    wrong: dict[tuple[str, str], list[str]] = defaultdict(list)  # (whose, built for) -> members
    for obj in objects:
        if (obj.format, obj.machine) != (device.object_format, device.machine):
            built = f"{_FORMAT_NAMES.get(obj.format, obj.format)} {obj.machine}"
            whose = f"model {owner[obj.name]!r}" if obj.name in owner else "an object of no model"
            wrong[(whose, built)].append(obj.name)
    return [
        f"{whose} was built for {built} ({', '.join(names)}), device {device.name} needs {needed}"
        for (whose, built), names in wrong.items()
    ]


def _is_strong(defined: bool, binding: str) -> bool:
    return defined and binding == "global"


def _find_library_bin(
    model_lib: str, strong: set[str], device: DeviceSpec
) -> tuple[str, str] | None:
    for suffix in LIBRARY_BIN_SUFFIXES:
        symbol = library_bin_symbol(model_lib, device, suffix)
        if symbol in strong:
            return suffix, symbol
    return None


def _available_model_libs(strong: Iterable[str], device: DeviceSpec) -> dict[str, str]:
    """model_lib (as spelled in symbols: '-' became '_') -> suffix, from library-bin symbols."""
    found = {}
    for name in strong:
        if not name.startswith(device.symbol_prefix):
            continue
        bare = name[len(device.symbol_prefix) :]
        for suffix in LIBRARY_BIN_SUFFIXES:
            if bare.endswith(suffix) and len(bare) > len(suffix):
                found.setdefault(bare[: -len(suffix)], suffix)
                break
    return found


def _describe_available(available: Mapping[str, str]) -> str:
    if not available:
        return "no model library at all (no *___tvm_ffi__library_bin symbol)"
    listed = [
        lib if suffix == LIBRARY_BIN_SUFFIXES[0] else f"{lib} (older {suffix})"
        for lib, suffix in sorted(available.items())
    ]
    return "model_libs " + ", ".join(listed) + " ('-' in a model_lib appears as '_' in symbols)"


def _missing_library_bin(model_lib: str, objects: Sequence[ObjectFile], device: DeviceSpec) -> str:
    wanted = library_bin_symbol(model_lib, device, LIBRARY_BIN_SUFFIXES[0])
    strong = {s.name for o in objects for s in o.symbols if _is_strong(s.defined, s.binding)}
    message = (
        f"no defined global symbol {wanted} (nor an older suffix: "
        f"{', '.join(LIBRARY_BIN_SUFFIXES[1:])}); the library holds "
        + _describe_available(_available_model_libs(strong, device))
    )
    # The right name with the wrong binding is a different mistake: say so.
    near = sorted(
        {f"{s.binding} {'definition' if s.defined else 'reference'}"
         for o in objects for s in o.symbols if s.name == wanted}
    )  # fmt: skip
    if near:
        message += f"; {wanted} is there only as a {' and '.join(near)}"
    return message


def _shorten(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _report(where: str, problems: Sequence[str]) -> str:
    return f"{where} failed validation:\n" + "\n".join(f"  - {p}" for p in problems)
