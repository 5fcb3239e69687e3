"""What a model library offers the MLC runtime, read from its objects (never from our model code).

The runtime sees a system library through two doors, and so does this module:

- the library blob, the data of `<prefix>__tvm_ffi__library_bin` in `<prefix>devc.o`: tvm-ffi
  deserializes it into the root module (the Relax VM executable), whose function table holds the
  Relax functions (`embed`, `prefill`, `_metadata`, ...) and whose constant pool holds the
  `_metadata` JSON; the blob also carries the OpenCL / Metal kernel sources as a module of its own;
- object symbols `__tvm_ffi_<prefix><name>`: TIR PrimFuncs with a global symbol (the
  `apply_*_inplace` logit processors), found by the VM through its imports.

Blob layout (tvm-ffi `src/ffi/extra/library_module.cc`, `ProcessLibraryBin`; every integer
little-endian, a "string"/"bytes" is a u64 length then the bytes, a "vec" a u64 count then items):

    u64 nbytes                        size of what follows
    vec<u64> import_tree_indptr       CSR of the module import tree: module i imports
    vec<u64> import_tree_child_indices  child_indices[indptr[i]:indptr[i+1]]
    per module (len(indptr) - 1 of them, module 0 is the root):
        string kind                   "_lib" (the host code itself: no bytes follow), or a
        bytes  payload                module kind ("relax.VMExecutable", "opencl", "metal")

VM executable payload (apache/tvm `src/runtime/vm/executable.cc`, `VMExecutable::SaveToBytes`;
`include/tvm/runtime/vm/bytecode.h` for instructions):

    u64 magic                         0xD225DE2F4214151D (v1) or ...1E (v2, TVM 0.27 writes it)
    string version                    "0.14" (VM_VERSION)
    vec<VMFuncInfo> func_table        i32 kind (0 packed callee, 1 VM function, 2 VM TIR
                                      function), string name, i64 start_instr, i64 end_instr,
                                      i64 num_args, i64 register_file_size, vec<string> params
    (v2 only) memory scopes           u64 count, then per entry i64 constant index + string
    constants                         u64 count, then per constant an i32 tvm-ffi type index and
                                      its value: Str (65) u64 len + bytes, Int (1) i64,
                                      Float (3) f64, DataType (5) 4 bytes, Shape (69) u64 n + n i64,
                                      Tensor (70) as SaveDLTensor writes it
    code                              vec<i64> instr_offset, vec<i64> instr_data

`_metadata` is a VM function whose body copies a string constant into a register and returns it;
the constant it references is the metadata JSON.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging_plugin.checks.objects import (
    ArchiveMember,
    ObjectFormatError,
    _import_lief,
    read_object,
)
from packaging_plugin.config.devices import DeviceSpec, system_lib_prefix

VM_EXECUTABLE_KIND = "relax.VMExecutable"
LIBRARY_MODULE_KIND = "_lib"  # placeholder for the host code in the import tree: no payload
# Kernel-source modules the runtime must be built with a loader for.
KERNEL_SOURCE_KINDS = frozenset({"opencl", "metal", "vulkan", "cuda", "webgpu"})

VM_MAGICS = (0xD225DE2F4214151D, 0xD225DE2F4214151E)  # v1, v2 (memory-scope section)
_VM_MAGIC_V2 = VM_MAGICS[1]
_TENSOR_MAGIC = 0xDD5E40F096B4A13F  # SaveDLTensor's header

# VMFuncInfo::FuncKind: 0 is a callee resolved from imports (builtins, kernels), not a function
# the executable defines.
_FUNC_KIND_PACKED, _FUNC_KIND_VM, _FUNC_KIND_VM_TIR = 0, 1, 2

# tvm-ffi type indices used as constant-pool tags (tvm_ffi/c_api.h).
_TYPE_INT, _TYPE_FLOAT, _TYPE_DTYPE = 1, 3, 5
_TYPE_STR, _TYPE_SHAPE, _TYPE_TENSOR = 65, 69, 70

# Instruction encoding (bytecode.h): args carry their kind in the top 8 bits of an i64.
_OP_CALL, _OP_RET = 1, 2
_ARG_KIND_BITS = 8
_ARG_VALUE_BITS = 64 - _ARG_KIND_BITS
_ARG_CONST_IDX = 2

LIBRARY_BIN_SUFFIX = "___tvm_ffi__library_bin"  # after model_lib (the prefix's final "_" + ...)
EXPORTED_FUNCTION_PREFIX = "__tvm_ffi_"  # then the system-lib prefix, then the PrimFunc name


class LibraryContentsError(ObjectFormatError):
    """The library blob cannot be found or does not have TVM's structure; the message says why."""


@dataclass(frozen=True)
class LibraryContents:
    """What one model library offers the runtime, as found in its objects."""

    model_lib: str
    blob_symbol: str  # as in the object (with "_" on Mach-O)
    blob_member: str  # the member defining it
    blob_size: int  # bytes of the blob, its 8-byte length included
    module_kinds: tuple[str, ...]  # blob modules in order; module 0 is the root
    vm_version: str
    vm_functions: frozenset[str]  # Relax functions the VM executable defines
    exported_functions: frozenset[str]  # PrimFuncs exported as `__tvm_ffi_<prefix><name>`
    metadata: dict[str, Any] | None  # the `_metadata` JSON, None when absent or unreadable
    metadata_error: str | None  # why metadata is None (when `_metadata` exists)
    kernel_source_kind: str | None  # "opencl" | "metal" | None (CPU code only)
    string_constants: tuple[str, ...] = field(repr=False, default=())
    # The kernel-source module's payload (the OpenCL C or Metal source with its function map).
    kernel_payload: bytes = field(repr=False, default=b"")

    @property
    def functions(self) -> frozenset[str]:
        """Every name the runtime can look up in the VM with imports."""
        return self.vm_functions | self.exported_functions


def read_library_contents(
    members: Sequence[ArchiveMember], model_lib: str, device: DeviceSpec
) -> LibraryContents:
    """Read the blob and exported functions of a model library (the members of its tar).

    Raises LibraryContentsError when the blob is missing or malformed.
    """
    prefix = system_lib_prefix(model_lib)
    symbol = device.symbol_prefix + prefix.removesuffix("_") + LIBRARY_BIN_SUFFIX
    exported_start = device.symbol_prefix + EXPORTED_FUNCTION_PREFIX + prefix
    exported: set[str] = set()
    blob: bytes | None = None
    blob_member = ""
    for member in members:
        obj = read_object(member.data, member.name)
        for sym in obj.symbols:
            if sym.defined and sym.binding == "global" and sym.name.startswith(exported_start):
                exported.add(sym.name[len(exported_start) :])
        if blob is None and any(
            s.name == symbol and s.defined and s.binding == "global" for s in obj.symbols
        ):
            blob = symbol_data(member.data, member.name, symbol, obj.format)
            blob_member = member.name
    if blob is None:
        raise LibraryContentsError(f"no object defines the library blob {symbol}")

    kinds, payloads = parse_library_bin(blob, where=f"{blob_member}: {symbol}")
    if VM_EXECUTABLE_KIND not in kinds:
        raise LibraryContentsError(
            f"{blob_member}: {symbol} holds no {VM_EXECUTABLE_KIND} (modules: {', '.join(kinds)})"
        )
    vm = parse_vm_executable(payloads[kinds.index(VM_EXECUTABLE_KIND)], where=blob_member)
    metadata, metadata_error = _metadata_of(vm)
    kernel_kinds = [k for k in kinds if k in KERNEL_SOURCE_KINDS]
    return LibraryContents(
        model_lib=model_lib,
        blob_symbol=symbol,
        blob_member=blob_member,
        blob_size=len(blob),
        module_kinds=tuple(kinds),
        vm_version=vm.version,
        vm_functions=frozenset(
            f.name for f in vm.functions if f.kind in (_FUNC_KIND_VM, _FUNC_KIND_VM_TIR)
        ),
        exported_functions=frozenset(exported),
        metadata=metadata,
        metadata_error=metadata_error,
        kernel_source_kind=kernel_kinds[0] if kernel_kinds else None,
        string_constants=tuple(c for c in vm.constants if isinstance(c, str)),
        kernel_payload=payloads[kinds.index(kernel_kinds[0])] if kernel_kinds else b"",
    )


# --------------------------------------------------------------------------------------------
# The symbol's bytes


def symbol_data(data: bytes, name: str, symbol: str, object_format: str) -> bytes:
    """The bytes a defined data symbol covers in an ELF or Mach-O object.

    The blob starts with its own length, so where the object records no size (Mach-O never
    does) the symbol's extent is bounded by the next symbol in its section, else the section end,
    and the blob is cut to its declared length.
    """
    if object_format == "elf":
        region = _elf_symbol_region(data, name, symbol)
    else:
        region = _macho_symbol_region(data, name, symbol)
    if len(region) < 8:
        raise LibraryContentsError(f"{name}: {symbol} covers {len(region)} bytes, too few")
    (nbytes,) = struct.unpack_from("<Q", region)
    if 8 + nbytes > len(region):
        raise LibraryContentsError(
            f"{name}: {symbol} declares {nbytes} bytes but only {len(region) - 8} follow it"
        )
    return bytes(region[: 8 + nbytes])


def _elf_symbol_region(data: bytes, name: str, symbol: str) -> bytes:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        elf = ELFFile(io.BytesIO(data))
        for table in elf.iter_sections():
            if not isinstance(table, SymbolTableSection):
                continue
            for sym in table.iter_symbols():
                if sym.name != symbol or not isinstance(sym["st_shndx"], int):
                    continue
                section = elf.get_section(sym["st_shndx"])
                if section["sh_type"] == "SHT_NOBITS":
                    raise LibraryContentsError(f"{name}: {symbol} is in {section.name}, no data")
                # Relocatable objects give section offsets; linked ones give addresses.
                start = sym["st_value"] - (0 if elf["e_type"] == "ET_REL" else section["sh_addr"])
                content = section.data()
                size = sym["st_size"] or len(content) - start
                if start < 0 or start + size > len(content):
                    raise LibraryContentsError(f"{name}: {symbol} lies outside {section.name}")
                return content[start : start + size]
    except ELFError as error:
        raise LibraryContentsError(f"{name}: unreadable ELF object ({error})") from None
    raise LibraryContentsError(f"{name}: {symbol} not found in the symbol table")


_N_TYPE, _N_SECT, _N_STAB = 0x0E, 0x0E, 0xE0


def _macho_symbol_region(data: bytes, name: str, symbol: str) -> bytes:
    lief = _import_lief()
    fat = lief.MachO.parse(bytes(data))
    binary = fat.at(0) if fat is not None and fat.size else None
    if binary is None:
        raise LibraryContentsError(f"{name}: unreadable Mach-O object")
    sections = list(binary.sections)
    in_section: dict[int, list[int]] = {}  # n_sect -> symbol addresses, to bound the extent
    found = None
    for sym in binary.symbols:
        if sym.raw_type & _N_STAB or sym.raw_type & _N_TYPE != _N_SECT:
            continue
        in_section.setdefault(sym.numberof_sections, []).append(sym.value)
        if sym.name == symbol:
            found = sym
    if found is None:
        raise LibraryContentsError(f"{name}: {symbol} not found in the symbol table")
    n_sect = found.numberof_sections
    if not 1 <= n_sect <= len(sections):
        raise LibraryContentsError(f"{name}: {symbol} names section {n_sect}, which is not there")
    section = sections[n_sect - 1]
    content = bytes(section.content)
    if not content:
        raise LibraryContentsError(f"{name}: {symbol} is in {section.name}, which holds no data")
    start = found.value - section.virtual_address
    later = [a for a in in_section[n_sect] if a > found.value]
    end = (min(later) - section.virtual_address) if later else len(content)
    if start < 0 or end > len(content):
        raise LibraryContentsError(f"{name}: {symbol} lies outside {section.name}")
    return content[start:end]


# --------------------------------------------------------------------------------------------
# Parsing


class _Reader:
    """Little-endian reads that fail with the place and the part being read."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def fail(self, what: str) -> LibraryContentsError:
        return LibraryContentsError(f"{self.where}: malformed at byte {self.pos} ({what})")

    def unpack_all(self, fmt: str, what: str) -> tuple[Any, ...]:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise self.fail(f"{what}: truncated")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def unpack(self, fmt: str, what: str) -> Any:
        """One value."""
        return self.unpack_all(fmt, what)[0]

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", what))

    def i64(self, what: str) -> int:
        return int(self.unpack("q", what))

    def count(self, what: str, item_size: int = 1) -> int:
        """A u64 count that the remaining bytes can hold (a garbage count fails here, cheaply)."""
        n = self.u64(what)
        if n * item_size > len(self.data) - self.pos:
            raise self.fail(f"{what}: count {n} exceeds the remaining bytes")
        return n

    def raw(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"{what}: truncated")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value

    def bytes_(self, what: str) -> bytes:
        return self.raw(self.count(what), what)

    def string(self, what: str) -> str:
        try:
            return self.bytes_(what).decode()
        except UnicodeDecodeError:
            raise self.fail(f"{what}: not UTF-8") from None

    def u64_vector(self, what: str) -> list[int]:
        return list(self.unpack_all(f"{self.count(what, 8)}Q", what))


def parse_library_bin(blob: bytes, where: str = "library blob") -> tuple[list[str], list[bytes]]:
    """The blob's modules: their kinds, and payloads (b"" for "_lib"), in import-tree order."""
    reader = _Reader(blob, where)
    nbytes = reader.u64("length")
    if nbytes != len(blob) - 8:
        raise reader.fail(f"length {nbytes}, but {len(blob) - 8} bytes follow")
    indptr = reader.u64_vector("import tree")
    children = reader.u64_vector("import tree children")
    if not indptr or indptr[0] != 0 or indptr[-1] != len(children):
        raise reader.fail(f"import tree {indptr} does not index {len(children)} children")
    if any(a > b for a, b in itertools.pairwise(indptr)):
        raise reader.fail(f"import tree {indptr} is not ascending")
    if any(c >= len(indptr) - 1 for c in children):
        raise reader.fail(f"import tree children {children} name modules that are not there")
    kinds: list[str] = []
    payloads: list[bytes] = []
    for i in range(len(indptr) - 1):
        kind = reader.string(f"kind of module {i}")
        kinds.append(kind)
        payloads.append(b"" if kind == LIBRARY_MODULE_KIND else reader.bytes_(f"module {kind}"))
    if reader.pos != len(blob):
        raise reader.fail(f"{len(blob) - reader.pos} bytes after the last module")
    return kinds, payloads


@dataclass(frozen=True)
class VMFunction:
    kind: int  # 0 packed callee, 1 VM function, 2 VM TIR function
    name: str
    start_instr: int
    end_instr: int
    num_args: int


@dataclass(frozen=True)
class VMExecutable:
    version: str
    functions: tuple[VMFunction, ...]
    constants: tuple[Any, ...]  # str, int, float, or a placeholder for tensors/shapes/dtypes
    instr_offset: tuple[int, ...]
    instr_data: tuple[int, ...]


class _Opaque:
    """A constant this module does not need the value of (tensor, shape, dtype)."""

    def __init__(self, type_index: int) -> None:
        self.type_index = type_index


def parse_vm_executable(payload: bytes, where: str = "VM executable") -> VMExecutable:
    reader = _Reader(payload, f"{where}: {VM_EXECUTABLE_KIND}")
    magic = reader.u64("magic")
    if magic not in VM_MAGICS:
        raise reader.fail(f"magic {magic:#x}, expected one of {', '.join(map(hex, VM_MAGICS))}")
    version = reader.string("version")
    functions = []
    for i in range(reader.count("function table", 4 + 8 * 6)):
        what = f"function {i}"
        kind = int(reader.unpack("i", what))
        name = reader.string(what)
        start, end, num_args, _registers = (reader.i64(what) for _ in range(4))
        for _ in range(reader.count(f"{what} parameter names", 8)):
            reader.string(f"{what} parameter name")
        functions.append(VMFunction(kind, name, start, end, num_args))
    if magic == _VM_MAGIC_V2:
        for _ in range(reader.count("memory scopes", 16)):
            reader.i64("memory scope")
            reader.string("memory scope")
    constants: list[Any] = []
    for i in range(reader.count("constants", 4)):
        constants.append(_read_constant(reader, i))
    instr_offset = reader.u64_vector("instruction offsets")
    instr_data = reader.u64_vector("instructions")
    return VMExecutable(
        version,
        tuple(functions),
        tuple(constants),
        tuple(_signed(v) for v in instr_offset),
        tuple(_signed(v) for v in instr_data),
    )


def _read_constant(reader: _Reader, i: int) -> Any:
    what = f"constant {i}"
    type_index = int(reader.unpack("i", what))
    if type_index == _TYPE_STR:
        return reader.raw(reader.count(what), what).decode("utf-8", "replace")
    if type_index == _TYPE_INT:
        return reader.i64(what)
    if type_index == _TYPE_FLOAT:
        return float(reader.unpack("d", what))
    if type_index == _TYPE_DTYPE:
        reader.raw(4, what)  # DLDataType: u8 code, u8 bits, u16 lanes
    elif type_index == _TYPE_SHAPE:
        reader.raw(8 * reader.count(what, 8), what)
    elif type_index == _TYPE_TENSOR:
        if reader.u64(what) != _TENSOR_MAGIC:
            raise reader.fail(f"{what}: not a serialized tensor")
        reader.raw(8 + 8, what)  # reserved, DLDevice
        ndim = int(reader.unpack("i", what))
        reader.raw(4 + 8 * ndim, what)  # DLDataType, shape
        reader.raw(reader.count(what), what)  # data
    else:
        raise reader.fail(f"{what}: unknown type index {type_index}")
    return _Opaque(type_index)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _metadata_of(vm: VMExecutable) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON `_metadata` returns: the string constant its instructions reference."""
    function = next((f for f in vm.functions if f.name == "_metadata"), None)
    if function is None:
        return None, None  # the caller reports the missing function
    if function.kind != _FUNC_KIND_VM:
        return None, "_metadata is not a Relax function (the runtime looks it up without imports)"
    referenced = []
    for index in range(function.start_instr, function.end_instr):
        if not 0 <= index < len(vm.instr_offset):
            return None, f"_metadata's instruction {index} is outside the code section"
        at = vm.instr_offset[index]
        opcode = vm.instr_data[at] if 0 <= at < len(vm.instr_data) else None
        if opcode != _OP_CALL:
            continue
        num_args = vm.instr_data[at + 3]
        for arg in vm.instr_data[at + 4 : at + 4 + num_args]:
            if (arg >> _ARG_VALUE_BITS) & 0xFF == _ARG_CONST_IDX:
                referenced.append(arg & ((1 << _ARG_VALUE_BITS) - 1))
    texts = [vm.constants[i] for i in referenced if i < len(vm.constants)]
    texts = [t for t in texts if isinstance(t, str)]
    if len(texts) != 1:
        return None, f"_metadata references {len(texts)} string constants, expected 1"
    try:
        value = json.loads(texts[0])
    except json.JSONDecodeError as error:
        return None, f"_metadata is not JSON ({error})"
    if not isinstance(value, Mapping):
        return None, f"_metadata is JSON {type(value).__name__}, expected an object"
    return dict(value), None
