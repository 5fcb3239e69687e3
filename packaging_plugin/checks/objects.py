"""Read symbols of ELF and Mach-O objects; read and write `ar` archives with a symbol index.

No `nm`, `ar` or `ranlib` is needed: validation must also work where no toolchain is installed.
ELF goes through pyelftools, Mach-O through LIEF (both imported lazily: loading the plugin must
stay cheap). The `ar` reader and writer are plain Python:

- GNU format (ELF, Android/Linux): a `/` index (big-endian count, member offsets, names) and a
  `//` table for names longer than 15 bytes.
- BSD/darwin format (Mach-O, iOS): `#1/<len>` names stored before the data, a `__.SYMDEF SORTED`
  index of little-endian `ranlib {strx, off}` structs, and every member's data 8-byte aligned
  (ld64 maps 64-bit objects in place). ld64 and ld64.lld refuse an archive without an index.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from packaging_plugin.atomic_files import write_atomically
from packaging_plugin.errors import PackagingError

Binding = Literal["global", "weak", "local"]
IndexKind = Literal["gnu", "darwin"]

AR_MAGIC = b"!<arch>\n"
_HEADER = struct.Struct("16s12s6s6s8s10s2s")  # name, mtime, uid, gid, mode, size, "`\n"
_GNU_INDEX_NAMES = ("/", "/SYM64/")
_BSD_INDEX_NAMES = ("__.SYMDEF", "__.SYMDEF SORTED", "__.SYMDEF_64", "__.SYMDEF_64 SORTED")
_DARWIN_INDEX_NAME = "__.SYMDEF SORTED"

ELF_MAGIC = b"\x7fELF"
# Mach-O magics as they appear in the file (both byte orders, 32 and 64 bit).
_MACHO_MAGICS = (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xfe\xed\xfa\xce")
_KNOWN_MAGICS = {
    b"\xca\xfe\xba\xbe": "a universal (fat) Mach-O file",
    b"BC\xc0\xde": "LLVM bitcode (an LTO object)",
    b"\xde\xc0\x17\x0b": "LLVM bitcode (an LTO object)",
    b"!<ar": "an ar archive",
}

_ELF_MACHINES = {"EM_AARCH64": "aarch64", "EM_X86_64": "x86_64", "EM_ARM": "arm", "EM_386": "x86"}
_ELF_BINDINGS: dict[str, Binding] = {
    "STB_GLOBAL": "global",
    "STB_WEAK": "weak",
    "STB_LOCAL": "local",
    # GNU_UNIQUE (C++ inline statics) lives in COMDAT groups: repeats fold like weak ones.
    "STB_LOOS": "weak",
    "STB_GNU_UNIQUE": "weak",
}
_MACHO_MACHINES = {"ARM64": "arm64", "X86_64": "x86_64", "ARM": "arm", "X86": "x86"}

# Mach-O nlist fields (<mach-o/nlist.h>).
_N_STAB, _N_PEXT, _N_TYPE, _N_EXT = 0xE0, 0x10, 0x0E, 0x01
_N_UNDF = 0x0
_N_WEAK_REF, _N_WEAK_DEF = 0x0040, 0x0080


class ObjectFormatError(PackagingError, ValueError):
    """A file is not the object (or archive, or tar) the packager expects; the message says why."""


class ArchiveFormatError(ObjectFormatError):
    """An `ar` archive or library tar is malformed, or cannot be written as asked."""


@dataclass(frozen=True)
class Symbol:
    name: str
    defined: bool
    binding: Binding


@dataclass(frozen=True)
class ObjectFile:
    name: str
    format: Literal["elf", "macho"]
    machine: str  # "aarch64" / "x86_64" (ELF), "arm64" / "x86_64" (Mach-O), else lower-case
    symbols: tuple[Symbol, ...]

    def defined_external(self) -> Iterator[Symbol]:
        """Defined global and weak symbols: what a symbol index lists and a linker can resolve."""
        return (s for s in self.symbols if s.defined and s.binding != "local")


@dataclass(frozen=True)
class ArchiveMember:
    name: str
    data: bytes


# --------------------------------------------------------------------------------------------
# Objects


def read_object(data: bytes, name: str) -> ObjectFile:
    """Symbols, format and machine of one relocatable object; `name` is only used in messages."""
    magic = bytes(data[:4])
    if magic == ELF_MAGIC:
        return _read_elf(data, name)
    if magic in _MACHO_MAGICS:
        return _read_macho(data, name)
    what = _KNOWN_MAGICS.get(magic, "neither ELF nor Mach-O")
    raise ObjectFormatError(f"{name}: not an object file: magic bytes {magic.hex(' ')} ({what})")


def _read_elf(data: bytes, name: str) -> ObjectFile:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        elf = ELFFile(io.BytesIO(data))
        machine = _ELF_MACHINES.get(elf["e_machine"], str(elf["e_machine"]).lower())
        symbols: list[Symbol] = []
        for section in elf.iter_sections():
            # .symtab only: .dynsym exists in shared objects, never in what TVM emits.
            if not isinstance(section, SymbolTableSection) or section.name != ".symtab":
                continue
            for sym in section.iter_symbols():
                info = sym["st_info"]
                if not sym.name or info["type"] in ("STT_SECTION", "STT_FILE"):
                    continue
                shndx = sym["st_shndx"]
                binding = _ELF_BINDINGS.get(info["bind"], "global")
                if shndx == "SHN_COMMON":
                    binding = "weak"  # linkers merge common symbols like weak definitions
                symbols.append(Symbol(sym.name, shndx != "SHN_UNDEF", binding))
    except (ELFError, struct.error, ValueError) as error:
        raise ObjectFormatError(f"{name}: unreadable ELF object ({error})") from None
    return ObjectFile(name, "elf", machine, tuple(symbols))


def _import_lief() -> Any:
    import lief

    lief.logging.disable()  # LIEF logs parse warnings to stderr; we report errors ourselves
    # nanobind prints hundreds of "leaked instance" lines at exit when lief was dropped from
    # sys.modules (pytester's module snapshot does that): harmless at exit, so silence it.
    if hasattr(lief, "disable_leak_warning"):
        lief.disable_leak_warning()
    return lief


def _read_macho(data: bytes, name: str) -> ObjectFile:
    lief = _import_lief()
    fat = lief.MachO.parse(bytes(data))
    binary = fat.at(0) if fat is not None and fat.size else None
    if binary is None:
        raise ObjectFormatError(f"{name}: unreadable Mach-O object")
    cpu = binary.header.cpu_type.name
    machine = _MACHO_MACHINES.get(cpu, cpu.lower())
    symbols: list[Symbol] = []
    for sym in binary.symbols:
        if sym.origin != lief.MachO.Symbol.ORIGIN.SYMTAB or not sym.name:
            continue
        n_type, n_desc = sym.raw_type, sym.description
        if n_type & _N_STAB:
            continue  # debugger entries, not linker symbols
        undefined = (n_type & _N_TYPE) == _N_UNDF
        if not n_type & _N_EXT:
            binding: Binding = "local"  # includes private externs (N_PEXT): not visible outside
        elif undefined and sym.value:
            binding = "weak"  # common symbol: merged by the linker, like a weak definition
            undefined = False
        elif n_desc & (_N_WEAK_REF if undefined else _N_WEAK_DEF):
            binding = "weak"
        else:
            binding = "global"
        symbols.append(Symbol(sym.name, not undefined, binding))
    return ObjectFile(name, "macho", machine, tuple(symbols))


# --------------------------------------------------------------------------------------------
# Reading archives


@dataclass(frozen=True)
class _RawMember:
    offset: int  # of the member header in the archive: what index entries point at
    name: str
    data: bytes
    kind: Literal["gnu-index", "gnu-index64", "bsd-index", "bsd-index64", "member"]


def _iter_archive(blob: bytes, where: str) -> Iterator[_RawMember]:
    if blob.startswith(b"!<thin>\n"):
        raise ArchiveFormatError(f"{where}: a thin archive (members are not inside): not supported")
    if not blob.startswith(AR_MAGIC):
        raise ArchiveFormatError(
            f"{where}: not an ar archive: starts with {bytes(blob[:8])!r}, expected {AR_MAGIC!r}"
        )
    long_names = b""
    pos = len(AR_MAGIC)
    while pos < len(blob):
        if blob[pos : pos + 1] == b"\n":  # tolerate stray padding at the end
            pos += 1
            continue
        header = blob[pos : pos + _HEADER.size]
        if len(header) < _HEADER.size:
            raise ArchiveFormatError(f"{where}: truncated member header at offset {pos}")
        raw_name, _mtime, _uid, _gid, _mode, raw_size, fmag = _HEADER.unpack(header)
        if fmag != b"`\n":
            raise ArchiveFormatError(f"{where}: bad member header at offset {pos}")
        size = int(raw_size.decode().strip())
        start = pos + _HEADER.size
        data = blob[start : start + size]
        if len(data) < size:
            raise ArchiveFormatError(f"{where}: member at offset {pos} is truncated")
        name = raw_name.decode("utf-8", "replace").rstrip(" ")
        offset, pos = pos, start + size + (size & 1)  # members start at even offsets
        if name == "//":  # GNU long-name table: "name/\n" entries
            long_names = data
            continue
        if name in _GNU_INDEX_NAMES:
            kind = "gnu-index" if name == "/" else "gnu-index64"
            yield _RawMember(offset, name, data, kind)
            continue
        if name.startswith("#1/"):  # BSD: the name is the first <len> bytes of the data
            length = int(name[3:])
            name = data[:length].rstrip(b"\0").decode("utf-8", "replace")
            data = data[length:]
        elif name.startswith("/") and name[1:].isdigit():
            at = int(name[1:])
            name = long_names[at : long_names.index(b"\n", at)].decode("utf-8", "replace")
            name = name.removesuffix("/")
        else:
            name = name.removesuffix("/")  # GNU short names end in "/", BSD ones do not
        if name in _BSD_INDEX_NAMES:
            kind = "bsd-index64" if "_64" in name else "bsd-index"
            yield _RawMember(offset, name, data, kind)
            continue
        yield _RawMember(offset, name, data, "member")


def read_archive(path: str | os.PathLike[str]) -> list[ArchiveMember]:
    """The members of an `ar` archive (GNU or BSD), in order, without the symbol index.

    BSD/darwin members hold the alignment padding the writer added (at most 7 bytes after the
    object's end): object readers ignore it, but data may be longer than the file put in.
    """
    blob = Path(path).read_bytes()
    return [
        ArchiveMember(m.name, m.data) for m in _iter_archive(blob, str(path)) if m.kind == "member"
    ]


def read_archive_index(path: str | os.PathLike[str]) -> dict[str, str]:
    """Symbol -> member name from the archive's symbol index; empty when it has none.

    A symbol listed for several members (weak definitions repeat in every model) maps to the
    first, which is the one a linker would load.
    """
    blob = Path(path).read_bytes()
    members = list(_iter_archive(blob, str(path)))
    by_offset = {m.offset: m.name for m in members if m.kind == "member"}
    index: dict[str, str] = {}
    for entry in members:
        if entry.kind == "member":
            continue
        try:
            pairs = _parse_index(entry.data, entry.kind)
        except (struct.error, ValueError, IndexError) as error:
            raise ArchiveFormatError(f"{path}: malformed symbol index {entry.name!r}") from error
        for symbol, offset in pairs:
            if offset not in by_offset:
                raise ArchiveFormatError(
                    f"{path}: symbol index entry {symbol!r} points at offset {offset}, "
                    "where no member starts"
                )
            index.setdefault(symbol, by_offset[offset])
    return index


def archive_index_kind(path: str | os.PathLike[str]) -> IndexKind | None:
    """Which symbol index the archive has: "gnu" (`/`), "darwin" (`__.SYMDEF*`), or None."""
    blob = Path(path).read_bytes()
    for member in _iter_archive(blob, str(path)):
        if member.kind.startswith("gnu-index"):
            return "gnu"
        if member.kind.startswith("bsd-index"):
            return "darwin"
    return None


def _parse_index(data: bytes, kind: str) -> list[tuple[str, int]]:
    if kind in ("gnu-index", "gnu-index64"):
        word = 4 if kind == "gnu-index" else 8
        fmt = ">I" if word == 4 else ">Q"
        (count,) = struct.unpack_from(fmt, data)
        offsets = struct.unpack_from(f">{count}{fmt[1]}", data, word)
        names = data[word * (count + 1) :].split(b"\0")[:count]
        if len(names) != count:
            raise ValueError("fewer names than offsets")
        return [(n.decode(), off) for n, off in zip(names, offsets, strict=True)]
    word = 4 if kind == "bsd-index" else 8
    fmt = "<I" if word == 4 else "<Q"
    (ranlib_bytes,) = struct.unpack_from(fmt, data)
    count = ranlib_bytes // (2 * word)
    entries = struct.unpack_from(f"<{2 * count}{fmt[1]}", data, word)
    strtab_at = word + ranlib_bytes + word
    (strtab_size,) = struct.unpack_from(fmt, data, word + ranlib_bytes)
    strtab = data[strtab_at : strtab_at + strtab_size]
    pairs = []
    for strx, off in zip(entries[::2], entries[1::2], strict=True):
        pairs.append((strtab[strx : strtab.index(b"\0", strx)].decode(), off))
    return pairs


# --------------------------------------------------------------------------------------------
# Writing archives


def write_archive(
    path: str | os.PathLike[str], members: Sequence[ArchiveMember], index: IndexKind
) -> None:
    """Write a reproducible archive (times, owners 0, mode 644) with a symbol index.

    Members are written in the order given (sort them for reproducible output); their names must
    be distinct, since `ar x` and many tools treat a repeated name as a replacement. The index
    lists every defined global and weak symbol. Written to a temp file and renamed into place.
    """
    seen: set[str] = set()
    for member in members:
        if member.name in seen:
            raise ArchiveFormatError(
                f"two archive members are both named {member.name!r}: name members per model"
            )
        seen.add(member.name)
    objects = [read_object(m.data, m.name) for m in members]
    if index == "gnu":
        blob = _gnu_archive(members, objects)
    elif index == "darwin":
        blob = _darwin_archive(members, objects)
    else:
        raise ValueError(f"index must be 'gnu' or 'darwin', not {index!r}")
    write_atomically(Path(path), blob)


def _header(name: bytes, size: int, mode: bytes = b"644", *, blank: bool = False) -> bytes:
    stamp = b"" if blank else b"0"  # GNU leaves the `//` table's fields blank
    return _HEADER.pack(
        name.ljust(16), stamp.ljust(12), stamp.ljust(6), stamp.ljust(6),
        (b"" if blank else mode).ljust(8), str(size).encode().ljust(10), b"`\n",
    )  # fmt: skip


def _gnu_archive(members: Sequence[ArchiveMember], objects: Sequence[ObjectFile]) -> bytes:
    long_names = bytearray()
    header_names = []
    for member in members:
        encoded = member.name.encode()
        if b"/" in encoded or b"\n" in encoded:
            raise ArchiveFormatError(f"archive member name {member.name!r} contains '/' or newline")
        if len(encoded) <= 15:
            header_names.append(encoded + b"/")
        else:
            header_names.append(b"/%d" % len(long_names))
            long_names += encoded + b"/\n"
    symbols = [(sym.name.encode(), i) for i, obj in enumerate(objects)
               for sym in obj.defined_external()]  # fmt: skip
    strtab = b"".join(name + b"\0" for name, _ in symbols)
    index_size = 4 + 4 * len(symbols) + len(strtab)
    # Offsets of member headers follow from the sizes of everything before them.
    pos = len(AR_MAGIC) + _HEADER.size + index_size + (index_size & 1)
    if long_names:
        pos += _HEADER.size + len(long_names) + (len(long_names) & 1)
    offsets = []
    for member in members:
        offsets.append(pos)
        pos += _HEADER.size + len(member.data) + (len(member.data) & 1)
    _check_32bit(pos)
    out = bytearray(AR_MAGIC)
    out += _header(b"/", index_size, b"0")
    out += struct.pack(f">I{len(symbols)}I", len(symbols), *(offsets[i] for _, i in symbols))
    out += strtab
    _pad(out, 2)
    if long_names:
        out += _header(b"//", len(long_names), blank=True) + long_names
        _pad(out, 2)
    for member, header_name in zip(members, header_names, strict=True):
        out += _header(header_name, len(member.data)) + member.data
        _pad(out, 2)
    return bytes(out)


def _darwin_archive(members: Sequence[ArchiveMember], objects: Sequence[ObjectFile]) -> bytes:
    # `#1/<n>` names: n >= len(name) with header (60) + n a multiple of 8, so the data that
    # follows is 8-aligned when the header is; data is padded to 8 so the next header is too.
    def name_field(name: bytes) -> bytes:
        return name.ljust(len(name) + (4 - len(name)) % 8, b"\0")

    names = [name_field(m.name.encode()) for m in members]
    datas = [m.data + b"\n" * (-len(m.data) % 8) for m in members]
    # ld64 wants a sorted table of unique names ("SORTED"): where a weak symbol repeats across
    # members, the first member (the one a linker would pick) is listed.
    first: dict[bytes, int] = {}
    for i, obj in enumerate(objects):
        for sym in obj.defined_external():
            first.setdefault(sym.name.encode(), i)
    symbols = sorted(first.items())
    strtab = bytearray()
    strx = []
    for name, _ in symbols:
        strx.append(len(strtab))
        strtab += name + b"\0"
    _pad(strtab, 8, b"\0")
    index_name = name_field(_DARWIN_INDEX_NAME.encode())
    index_size = len(index_name) + 4 + 8 * len(symbols) + 4 + len(strtab)
    pos = len(AR_MAGIC) + _HEADER.size + index_size
    offsets = []
    for name, data in zip(names, datas, strict=True):
        offsets.append(pos)
        pos += _HEADER.size + len(name) + len(data)
    _check_32bit(pos)
    out = bytearray(AR_MAGIC)
    out += _header(b"#1/%d" % len(index_name), index_size, b"0") + index_name
    out += struct.pack("<I", 8 * len(symbols))
    for (_, member_index), string_index in zip(symbols, strx, strict=True):
        out += struct.pack("<II", string_index, offsets[member_index])
    out += struct.pack("<I", len(strtab)) + strtab
    for name, data in zip(names, datas, strict=True):
        out += _header(b"#1/%d" % len(name), len(name) + len(data)) + name + data
    return bytes(out)


def _pad(buffer: bytearray, alignment: int, fill: bytes = b"\n") -> None:
    buffer += fill * (-len(buffer) % alignment)


def _check_32bit(size: int) -> None:
    if size >= 1 << 32:
        raise ArchiveFormatError(
            f"archive would be {size} bytes: over 4 GiB needs a 64-bit index, not supported"
        )


# --------------------------------------------------------------------------------------------
# Library tars


def read_library_tar(path: str | os.PathLike[str]) -> list[ArchiveMember]:
    """The `.o` members of a model library tar (gzip or plain), named by their base name."""
    import tarfile

    members: list[ArchiveMember] = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if not info.isreg() or not info.name.endswith(".o"):
                    continue
                handle = tar.extractfile(info)
                assert handle is not None  # regular files always have contents
                members.append(ArchiveMember(PurePosixPath(info.name).name, handle.read()))
    except (tarfile.TarError, OSError, EOFError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ArchiveFormatError(f"{path}: not a readable library tar ({error})") from None
    _require_distinct([m.name for m in members], str(path))
    return members


def _require_distinct(names: Iterable[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ArchiveFormatError(f"{where}: two object files are both named {name!r}")
        seen.add(name)
