"""objects.py on real objects: gcc (x86-64 ELF) and zig cc (aarch64 ELF, arm64 Mach-O).

Archives written here are checked by tools that are not ours: `zig ar`, `nm`/`llvm-nm`, GNU ld
(which needs the GNU index to pull a member), ld.lld, and ld64.lld (which refuses an archive
without a darwin index) or zig's Mach-O linker.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from packaging_plugin.checks.objects import (
    ArchiveFormatError,
    ArchiveMember,
    ObjectFormatError,
    Symbol,
    archive_index_kind,
    read_archive,
    read_archive_index,
    read_library_tar,
    read_object,
    write_archive,
)

ZIG = (sys.executable, "-m", "ziglang")
HAVE_ZIG = importlib.util.find_spec("ziglang") is not None
HAVE_CC = shutil.which("cc") is not None
CFLAGS = ("-c", "-O1", "-g0", "-fPIC", "-fno-sanitize=undefined")

# target -> (format, machine, compiler command)
TARGETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "elf-x86_64": ("elf", "x86_64", ("cc",)),
    "elf-aarch64": ("elf", "aarch64", (*ZIG, "cc", "-target", "aarch64-linux-gnu")),
    "macho-arm64": ("macho", "arm64", (*ZIG, "cc", "-target", "aarch64-macos")),
}


def _needs(target: str) -> pytest.MarkDecorator:
    if target == "elf-x86_64":
        return pytest.mark.skipif(not HAVE_CC, reason="no system cc")
    return pytest.mark.skipif(not HAVE_ZIG, reason="ziglang is not installed")


ALL_TARGETS = [pytest.param(t, marks=_needs(t), id=t) for t in TARGETS]

# One symbol of each kind: global function and data, weak definition, local function,
# undefined reference and weak undefined reference.
SOURCE = """
extern int ext_undefined(int);
extern int weak_ref(int) __attribute__((weak));
int global_data = 7;
__attribute__((noinline, used)) static int local_helper(int x) { return x + global_data; }
__attribute__((weak)) int weak_function(int x) { return x * 2; }
int global_function(int x) { return ext_undefined(local_helper(x)) + (weak_ref ? weak_ref(x) : 0); }
"""
OTHER_SOURCE = """
__attribute__((weak)) int weak_function(int x) { return x * 3; }
int other_function(int x) { return weak_function(x) + 1; }
"""
MAIN_SOURCE = """
extern int global_function(int);
int ext_undefined(int x) { return x; }
int weak_ref(int x) { return 0 * x; }
int main(void) { return global_function(1) == 8 ? 42 : 1; }
"""

Compile = Callable[[str, str], bytes]


def run(command: Sequence[str | os.PathLike[str]], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, **kwargs
    )


def check(command: Sequence[str | os.PathLike[str]], **kwargs) -> str:
    result = run(command, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def compile_c(tmp_path_factory: pytest.TempPathFactory) -> Compile:
    """Compile C source for a target into object bytes (cached per module)."""
    folder = tmp_path_factory.mktemp("objects")
    cache: dict[tuple[str, str], bytes] = {}

    def compile_(source: str, target: str) -> bytes:
        if (source, target) not in cache:
            stem = folder / f"o{len(cache)}"
            stem.with_suffix(".c").write_text(source)
            check(
                [*TARGETS[target][2], *CFLAGS, stem.with_suffix(".c"), "-o", stem.with_suffix(".o")]
            )
            cache[source, target] = stem.with_suffix(".o").read_bytes()
        return cache[source, target]

    return compile_


def expected_symbols(target: str) -> set[Symbol]:
    underscore = "_" if TARGETS[target][0] == "macho" else ""
    return {
        Symbol(underscore + name, defined, binding)
        for name, defined, binding in [
            ("global_data", True, "global"),
            ("global_function", True, "global"),
            ("weak_function", True, "weak"),
            ("local_helper", True, "local"),
            ("ext_undefined", False, "global"),
            ("weak_ref", False, "weak"),
        ]
    }


# --------------------------------------------------------------------------------------------
# Objects


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_read_object_symbols_and_bindings(compile_c: Compile, target: str) -> None:
    obj = read_object(compile_c(SOURCE, target), "fixture.o")
    object_format, machine, _ = TARGETS[target]
    assert (obj.name, obj.format, obj.machine) == ("fixture.o", object_format, machine)
    wanted = expected_symbols(target)
    names = {s.name for s in wanted}
    assert {s for s in obj.symbols if s.name in names} == wanted
    # Nothing else is visible outside the object (locals are assembler temporaries: ltmp0, $x).
    visible = {s for s in obj.symbols if s.binding != "local"}
    # gcc's PIC code names the GOT; it is made by the linker.
    visible.discard(Symbol("_GLOBAL_OFFSET_TABLE_", False, "global"))
    assert visible == {s for s in wanted if s.binding != "local"}


def test_read_object_names_what_it_found() -> None:
    with pytest.raises(ObjectFormatError) as error:
        read_object(b"hello world", "notes.o")
    assert str(error.value) == (
        "notes.o: not an object file: magic bytes 68 65 6c 6c (neither ELF nor Mach-O)"
    )
    with pytest.raises(ObjectFormatError, match=r"lto\.o: .*BC c0 de|lto\.o: .*42 43 c0 de"):
        read_object(b"BC\xc0\xde" + bytes(60), "lto.o")
    with pytest.raises(ObjectFormatError, match=r"^bad\.o: unreadable ELF object"):
        read_object(b"\x7fELF" + bytes(8), "bad.o")


# --------------------------------------------------------------------------------------------
# GNU archives


def armap(archive: Path) -> set[tuple[str, str]]:
    """(symbol, member) pairs of the archive index as nm prints them."""
    nm = shutil.which("llvm-nm") or shutil.which("nm")
    if nm is None:
        pytest.skip("neither llvm-nm nor nm is installed (zig does not ship nm)")
    output = check([nm, "--print-armap", archive])
    return set(re.findall(r"^(\S+) in (\S+)$", output, re.MULTILINE))


def zig_ar(*args: str | os.PathLike[str]) -> str:
    if not HAVE_ZIG:
        pytest.skip("ziglang is not installed")
    return check([*ZIG, "ar", *args], env={**os.environ, "TZ": "UTC"})


@pytest.fixture
def elf_members(compile_c: Compile) -> list[ArchiveMember]:
    target = "elf-aarch64" if HAVE_ZIG else "elf-x86_64"
    return [
        ArchiveMember("short.o", compile_c(SOURCE, target)),
        # Longer than 15 bytes: goes through the `//` long-name table.
        ArchiveMember("a_rather_long_member_name.o", compile_c(OTHER_SOURCE, target)),
    ]


def test_gnu_archive_round_trip(tmp_path: Path, elf_members: list[ArchiveMember]) -> None:
    path = tmp_path / "lib.a"
    write_archive(path, elf_members, index="gnu")
    assert read_archive(path) == elf_members  # exact bytes back: GNU pads outside the size
    assert archive_index_kind(path) == "gnu"
    assert read_archive_index(path) == {
        "global_data": "short.o",
        "global_function": "short.o",
        "weak_function": "short.o",  # weak in both members: the first is the one a linker takes
        "other_function": "a_rather_long_member_name.o",
    }
    # Reproducible: owners, times and modes are fixed, so the bytes are too.
    first = path.read_bytes()
    write_archive(path, elf_members, index="gnu")
    assert path.read_bytes() == first
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.a"]  # no temp file left


def test_gnu_archive_accepted_by_ar_and_nm(
    tmp_path: Path, elf_members: list[ArchiveMember]
) -> None:
    path = tmp_path / "lib.a"
    write_archive(path, elf_members, index="gnu")
    assert zig_ar("t", path).split() == ["short.o", "a_rather_long_member_name.o"]
    listing = zig_ar("tv", path).splitlines()
    assert all(line.startswith("rw-r--r-- 0/0") and "1970" in line for line in listing), listing
    assert armap(path) == {
        ("global_function", "short.o"),
        ("global_data", "short.o"),
        ("weak_function", "short.o"),
        ("weak_function", "a_rather_long_member_name.o"),
        ("other_function", "a_rather_long_member_name.o"),
    }
    # llvm-ar builds the same index from the same members.
    reference = tmp_path / "reference.a"
    for member in elf_members:
        (tmp_path / member.name).write_bytes(member.data)
    zig_ar("rcsD", "--format=gnu", reference, *(tmp_path / m.name for m in elf_members))
    assert read_archive_index(reference) == read_archive_index(path)
    assert read_archive(reference) == elf_members


@pytest.mark.skipif(not HAVE_CC, reason="no system cc")
def test_gnu_index_used_by_gnu_ld(tmp_path: Path, compile_c: Compile) -> None:
    """GNU ld pulls a member only through the index: a working program proves the offsets."""
    (tmp_path / "main.o").write_bytes(compile_c(MAIN_SOURCE, "elf-x86_64"))
    library = tmp_path / "libfixture.a"
    write_archive(
        library,
        [
            ArchiveMember("other_member_first.o", compile_c(OTHER_SOURCE, "elf-x86_64")),
            ArchiveMember("fixture.o", compile_c(SOURCE, "elf-x86_64")),
        ],
        index="gnu",
    )
    check(["cc", tmp_path / "main.o", library, "-o", tmp_path / "program"])
    assert run([tmp_path / "program"]).returncode == 42
    # The same members without an index: GNU ld refuses, so the check above means something.
    if HAVE_ZIG:
        bare = tmp_path / "bare.a"
        for member in read_archive(library):
            (tmp_path / member.name).write_bytes(member.data)
        zig_ar("rcS", bare, tmp_path / "other_member_first.o", tmp_path / "fixture.o")
        assert read_archive_index(bare) == {}
        refused = run(["cc", tmp_path / "main.o", bare, "-o", tmp_path / "program2"])
        assert refused.returncode != 0 and "no index" in refused.stderr


@pytest.mark.skipif(not HAVE_ZIG, reason="ziglang is not installed")
def test_aarch64_archive_links_whole_with_lld(tmp_path: Path, compile_c: Compile) -> None:
    library = tmp_path / "libfixture.a"
    write_archive(library, [ArchiveMember("fixture.o", compile_c(SOURCE, "elf-aarch64"))], "gnu")
    shared = tmp_path / "libfixture.so"
    check(
        [*ZIG, "ld.lld", "-shared", "--whole-archive", library, "--no-whole-archive", "-o", shared]
    )
    linked = read_object(shared.read_bytes(), shared.name)
    assert linked.machine == "aarch64"
    assert Symbol("global_function", True, "global") in linked.symbols


# --------------------------------------------------------------------------------------------
# Darwin archives


@pytest.fixture
def macho_members(compile_c: Compile) -> list[ArchiveMember]:
    if not HAVE_ZIG:
        pytest.skip("ziglang is not installed")
    return [
        ArchiveMember("fixture.o", compile_c(SOURCE, "macho-arm64")),
        ArchiveMember("a_rather_long_member_name.o", compile_c(OTHER_SOURCE, "macho-arm64")),
    ]


def test_darwin_archive_layout(tmp_path: Path, macho_members: list[ArchiveMember]) -> None:
    path = tmp_path / "lib.a"
    write_archive(path, macho_members, index="darwin")
    blob = path.read_bytes()
    assert blob.startswith(b"!<arch>\n#1/20 ")
    assert blob[68:88] == b"__.SYMDEF SORTED\0\0\0\0"
    assert archive_index_kind(path) == "darwin"
    for member in macho_members:
        assert blob.find(member.data) % 8 == 0, f"{member.name} is not 8-byte aligned"
    index = read_archive_index(path)
    # Sorted and unique, as `__.SYMDEF SORTED` promises; a repeated weak symbol: first member.
    assert list(index.items()) == [
        ("_global_data", "fixture.o"),
        ("_global_function", "fixture.o"),
        ("_other_function", "a_rather_long_member_name.o"),
        ("_weak_function", "fixture.o"),
    ]
    back = read_archive(path)
    assert [m.name for m in back] == [m.name for m in macho_members]
    for original, read in zip(macho_members, back, strict=True):
        # Members are padded to 8 bytes inside their size (objects ignore the tail).
        assert read.data[: len(original.data)] == original.data
        assert len(read.data) - len(original.data) < 8
        assert read_object(read.data, read.name).symbols == read_object(original.data, "x").symbols


def test_darwin_archive_accepted_by_ar_and_nm(
    tmp_path: Path, macho_members: list[ArchiveMember]
) -> None:
    path = tmp_path / "lib.a"
    write_archive(path, macho_members, index="darwin")
    assert zig_ar("t", path).split() == ["fixture.o", "a_rather_long_member_name.o"]
    assert armap(path) == {
        ("_global_data", "fixture.o"),
        ("_global_function", "fixture.o"),
        ("_other_function", "a_rather_long_member_name.o"),
        ("_weak_function", "fixture.o"),
    }
    reference = tmp_path / "reference.a"
    for member in macho_members:
        (tmp_path / member.name).write_bytes(member.data)
    zig_ar("rcsD", "--format=darwin", reference, *(tmp_path / m.name for m in macho_members))
    assert read_archive_index(reference) == read_archive_index(path)


def _ld64_lld() -> str | None:
    return shutil.which("ld64.lld") or next(
        (p for v in range(30, 13, -1) if (p := shutil.which(f"ld64.lld-{v}"))), None
    )


@pytest.mark.skipif(_ld64_lld() is None, reason="no ld64.lld (zig does not ship it)")
def test_darwin_index_used_by_ld64_lld(
    tmp_path: Path, compile_c: Compile, macho_members: list[ArchiveMember]
) -> None:
    ld64 = _ld64_lld()
    (tmp_path / "main.o").write_bytes(compile_c(MAIN_SOURCE, "macho-arm64"))
    library = tmp_path / "lib.a"
    write_archive(library, list(reversed(macho_members)), index="darwin")
    link = [ld64, "-arch", "arm64", "-platform_version", "macos", "14.0", "14.0", "-dylib"]
    link += ["-undefined", "dynamic_lookup", tmp_path / "main.o"]
    # Lazily, through the index: main references _global_function, found in the 2nd member.
    check([*link, library, "-o", tmp_path / "lazy.dylib"])
    lazy = {s.name for s in read_object((tmp_path / "lazy.dylib").read_bytes(), "lazy").symbols}
    assert {"_global_function", "_main"} <= lazy and "_other_function" not in lazy
    check([*link, "-force_load", library, "-o", tmp_path / "whole.dylib"])
    whole = {s.name for s in read_object((tmp_path / "whole.dylib").read_bytes(), "whole").symbols}
    assert {"_global_function", "_other_function"} <= whole
    # Without an index ld64.lld refuses the archive: the links above did use ours.
    for member in macho_members:
        (tmp_path / member.name).write_bytes(member.data)
    zig_ar("rcS", tmp_path / "bare.a", *(tmp_path / m.name for m in macho_members))
    refused = run([*link, tmp_path / "bare.a", "-o", tmp_path / "bare.dylib"])
    assert refused.returncode != 0 and "archive has no index" in refused.stderr


def test_darwin_archive_force_loaded_by_zig(
    tmp_path: Path, compile_c: Compile, macho_members: list[ArchiveMember]
) -> None:
    (tmp_path / "main.o").write_bytes(compile_c(MAIN_SOURCE, "macho-arm64"))
    library = tmp_path / "lib.a"
    write_archive(library, macho_members, index="darwin")
    program = tmp_path / "program"
    force_load = f"-Wl,-force_load,{library}"
    check([*ZIG, "cc", "-target", "aarch64-macos", tmp_path / "main.o", force_load, "-o", program])
    linked = read_object(program.read_bytes(), "program")
    assert linked.machine == "arm64"
    assert {"_global_function", "_other_function"} <= {s.name for s in linked.symbols}


# --------------------------------------------------------------------------------------------
# Writer refusals, foreign archives, library tars


def test_write_archive_refuses_repeated_names(
    tmp_path: Path, elf_members: list[ArchiveMember]
) -> None:
    twice = [elf_members[0], ArchiveMember("short.o", elf_members[1].data)]
    with pytest.raises(ArchiveFormatError, match=r"two archive members are both named 'short\.o'"):
        write_archive(tmp_path / "lib.a", twice, index="gnu")
    with pytest.raises(ObjectFormatError, match=r"^readme\.o: not an object file"):
        write_archive(tmp_path / "lib.a", [ArchiveMember("readme.o", b"text\n")], index="gnu")
    assert not (tmp_path / "lib.a").exists()


@pytest.mark.skipif(shutil.which("ar") is None, reason="no binutils ar")
def test_read_archive_from_binutils_ar(tmp_path: Path, elf_members: list[ArchiveMember]) -> None:
    for member in elf_members:
        (tmp_path / member.name).write_bytes(member.data)
    check(["ar", "rcsD", tmp_path / "gnu.a", *(tmp_path / m.name for m in elf_members)])
    assert read_archive(tmp_path / "gnu.a") == elf_members
    assert read_archive_index(tmp_path / "gnu.a")["other_function"] == "a_rather_long_member_name.o"


def test_read_archive_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.a").write_bytes(b"PK\x03\x04 zip file")
    with pytest.raises(ArchiveFormatError, match=r"x\.a: not an ar archive: starts with b'PK"):
        read_archive(tmp_path / "x.a")
    (tmp_path / "t.a").write_bytes(b"!<arch>\nshort.o/        0   ")
    with pytest.raises(ArchiveFormatError, match="truncated member header at offset 8"):
        read_archive(tmp_path / "t.a")


def _tar(entries: list[tuple[str, bytes | None]], compress: bool) -> bytes:
    """A tar with regular files (bytes), directories (None) and one symlink."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./link.o")
        link.type, link.linkname = tarfile.SYMTYPE, "lib0.o"
        tar.addfile(link)
    return gzip.compress(buffer.getvalue(), mtime=0) if compress else buffer.getvalue()


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_read_library_tar(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "lib.tar"
    entries: list[tuple[str, bytes | None]] = [
        ("./", None),
        ("./lib0.o", b"\x7fELF host"),
        ("./m_devc.o", b"\x7fELF dev"),
        ("./notes.txt", b"not an object"),
        ("sub/", None),
    ]
    path.write_bytes(_tar(entries, compress))
    assert read_library_tar(path) == [
        ArchiveMember("lib0.o", b"\x7fELF host"),
        ArchiveMember("m_devc.o", b"\x7fELF dev"),
    ]


def test_read_library_tar_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.tar").write_bytes(b"this is no tar" * 100)
    with pytest.raises(ArchiveFormatError, match=r"bad\.tar: not a readable library tar"):
        read_library_tar(tmp_path / "bad.tar")
    (tmp_path / "two.tar").write_bytes(_tar([("a/lib0.o", b"1"), ("b/lib0.o", b"2")], True))
    with pytest.raises(ArchiveFormatError, match=r"two object files are both named 'lib0\.o'"):
        read_library_tar(tmp_path / "two.tar")
