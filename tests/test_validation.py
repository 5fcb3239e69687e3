"""validation.py on real objects shaped like TVM's: a host `lib0.o` and a `<prefix>devc.o`.

The C sources below define what TVM 0.27's system-lib objects define (checked against real
builds): strong `__tvm_ffi_<prefix><func>` functions, the strong library-bin blob, a LOCAL
`<prefix>__tvm_ffi__library_bin_reg_`, weak `__extendhfsf2` and `<prefix>__tvm_ffi__library_ctx`,
and references to the runtime's C API and `expf`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from packaging_plugin.checks.objects import (
    ArchiveMember,
    read_archive,
    read_library_tar,
    read_object,
    write_archive,
)
from packaging_plugin.checks.runtime_contract import (
    GPU_SAMPLER_FUNCTIONS,
    RUNTIME_FUNCTIONS,
    RUNTIME_PROVIDED_SYMBOLS,
)
from packaging_plugin.checks.validation import (
    LIBRARY_BIN_SUFFIXES,
    ValidationError,
    archive_member_name,
    validate_combined_archive,
    validate_model_library,
)
from packaging_plugin.config.devices import DEVICES, DeviceSpec, system_lib_prefix
from tests.helpers.toolchains import CFLAGS, COMPILERS, HAVE_ZIG, ZIG
from tests.helpers.tvm_blobs import library_bin, minimal_metadata, valid_blob, vm_executable

DEVICE_PARAMS = [
    pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(
            not (shutil.which("cc") if name == "linux" else HAVE_ZIG),
            reason="no cc" if name == "linux" else "ziglang is not installed",
        ),
    )
    for name in COMPILERS
]


def lib0_source(prefix: str, extra: str = "") -> str:
    return f"""
extern int TVMFFIFunctionCall(void*, const void*, int, void*);
extern void* TVMBackendAllocWorkspace(int, int, unsigned long long, int, int);
extern int TVMBackendFreeWorkspace(int, int, void*);
extern float expf(float);
__attribute__((weak)) float __extendhfsf2(unsigned short h) {{ return (float)h; }}
__attribute__((weak)) void* {prefix}__tvm_ffi__library_ctx = 0;
int __tvm_ffi_{prefix}add(void* handle, const void* args, int n, void* ret) {{
    void* w = TVMBackendAllocWorkspace(1, 0, 64, 2, 32);
    TVMBackendFreeWorkspace(1, 0, w);
    return TVMFFIFunctionCall(handle, args, n, ret) + (int)expf((float)n);
}}
{extra}
"""


def devc_source(prefix: str, suffix: str, storage: str = "", data: bytes | None = None) -> str:
    """The blob object; its data is a real blob in TVM's layout (a VM executable offering every
    function the runtime calls, and `_metadata`) unless `data` is given."""
    blob = prefix.removesuffix("_") + suffix
    initializer = ", ".join(map(str, valid_blob() if data is None else data))
    return f"""
extern int TVMFFIEnvModRegisterSystemLibSymbol(const char*, void*);
{storage}const unsigned char {blob}[] = {{{initializer}}};
__attribute__((used)) static int {prefix}__tvm_ffi__library_bin_reg_;
__attribute__((constructor)) static void register_library(void) {{
    {prefix}__tvm_ffi__library_bin_reg_ =
        TVMFFIEnvModRegisterSystemLibSymbol("{blob}", (void*){blob});
}}
"""


MakeLibrary = Callable[..., Path]


@pytest.fixture(scope="module")
def make_library(tmp_path_factory: pytest.TempPathFactory) -> MakeLibrary:
    """Build a model library tar as `export_library` does (gzip, lib0.o + <prefix>devc.o)."""
    folder = tmp_path_factory.mktemp("libraries")
    objects: dict[tuple[str, str], bytes] = {}

    def compile_(source: str, built_for: str) -> bytes:
        if (source, built_for) not in objects:
            stem = folder / f"o{len(objects)}"
            stem.with_suffix(".c").write_text(source)
            command = [*COMPILERS[built_for], *CFLAGS, str(stem.with_suffix(".c"))]
            result = subprocess.run(
                [*command, "-o", str(stem.with_suffix(".o"))], capture_output=True, text=True
            )
            assert result.returncode == 0, result.stderr
            objects[source, built_for] = stem.with_suffix(".o").read_bytes()
        return objects[source, built_for]

    def make(
        built_for: str,
        model_lib: str,
        *,
        suffix: str = LIBRARY_BIN_SUFFIXES[0],
        storage: str = "",
        extra: str = "",
        lib0: bytes | None = None,
        blob: bytes | None = None,
    ) -> Path:
        prefix = system_lib_prefix(model_lib)
        members = {
            "lib0.o": lib0 if lib0 is not None else compile_(lib0_source(prefix, extra), built_for),
            f"{prefix}devc.o": compile_(devc_source(prefix, suffix, storage, blob), built_for),
        }
        path = folder / f"lib{len(list(folder.glob('*.tar')))}.tar"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    return make


def underscore(device: str) -> str:
    return DEVICES[device].symbol_prefix


def problems(error: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    """The problem lines of a ValidationError message (after its header line)."""
    header, *lines = str(error.value).split("\n")
    assert header.endswith("failed validation:")
    return [line.removeprefix("  - ") for line in lines]


# --------------------------------------------------------------------------------------------
# One model library


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_valid_library(make_library: MakeLibrary, device: str) -> None:
    tar = make_library(device, "tiny-llama-q4f16_1")
    facts = validate_model_library(tar, "tiny-llama-q4f16_1", DEVICES[device])
    u = underscore(device)
    assert facts.symbol == f"{u}tiny_llama_q4f16_1___tvm_ffi__library_bin"
    assert (facts.suffix, facts.legacy_suffix) == ("___tvm_ffi__library_bin", False)
    assert facts.members == ("lib0.o", "tiny_llama_q4f16_1_devc.o")
    assert (facts.object_format, facts.machine) == (
        DEVICES[device].object_format,
        DEVICES[device].machine,
    )
    # Strong definitions only: weak __extendhfsf2 / library_ctx and the local _reg_ are not.
    assert facts.defined_symbols == (
        f"{u}__tvm_ffi_tiny_llama_q4f16_1_add",
        f"{u}tiny_llama_q4f16_1___tvm_ffi__library_bin",
    )
    assert set(facts.undefined_symbols) - {"_GLOBAL_OFFSET_TABLE_"} == {
        u + name
        for name in (
            "TVMBackendAllocWorkspace",
            "TVMBackendFreeWorkspace",
            "TVMFFIEnvModRegisterSystemLibSymbol",
            "TVMFFIFunctionCall",
            "expf",
        )
    }
    assert facts.size_bytes == tar.stat().st_size
    # The look-alike LOCAL symbol is really there, so ignoring it was tested.
    devc = read_library_tar(tar)[1]
    reg = f"{u}tiny_llama_q4f16_1___tvm_ffi__library_bin_reg_"
    assert any(s.name == reg and s.binding == "local" for s in read_object(devc.data, "").symbols)


def test_wrong_architecture(make_library: MakeLibrary) -> None:
    tar = make_library("linux", "tiny")
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES["android"])
    assert str(error.value) == (
        f"model library {tar} (model_lib 'tiny', device android) failed validation:\n"
        "  - model 'tiny' was built for ELF x86_64 (lib0.o, tiny_devc.o), "
        "device android needs ELF aarch64"
    )


@pytest.mark.skipif(not HAVE_ZIG, reason="ziglang is not installed")
def test_wrong_format(make_library: MakeLibrary) -> None:
    tar = make_library("iphone", "tiny")
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES["android"])
    assert problems(error)[0] == (
        "model 'tiny' was built for Mach-O arm64 (lib0.o, tiny_devc.o), "
        "device android needs ELF aarch64"
    )


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_missing_library_bin_names_what_is_there(make_library: MakeLibrary, device: str) -> None:
    tar = make_library(device, "other-model")
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES[device])
    assert problems(error) == [
        f"no defined global symbol {underscore(device)}tiny___tvm_ffi__library_bin (nor an older "
        "suffix: ___tvm_ffi_library_bin, ___tvm_dev_mblob); the library holds model_libs "
        "other_model ('-' in a model_lib appears as '_' in symbols)"
    ]


@pytest.mark.parametrize("storage", ["static ", "__attribute__((weak)) "], ids=["local", "weak"])
def test_only_a_global_library_bin_counts(make_library: MakeLibrary, storage: str) -> None:
    tar = make_library("linux", "tiny", storage=storage)
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES["linux"])
    binding = storage.strip() and ("local" if storage == "static " else "weak")
    assert problems(error) == [
        "no defined global symbol tiny___tvm_ffi__library_bin (nor an older suffix: "
        "___tvm_ffi_library_bin, ___tvm_dev_mblob); the library holds no model library at all "
        "(no *___tvm_ffi__library_bin symbol); tiny___tvm_ffi__library_bin is there only as a "
        f"{binding} definition"
    ]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("suffix", LIBRARY_BIN_SUFFIXES[1:])
def test_older_suffix_accepted_and_named(
    make_library: MakeLibrary, device: str, suffix: str
) -> None:
    tar = make_library(device, "old-lib", suffix=suffix)
    facts = validate_model_library(tar, "old-lib", DEVICES[device])
    assert (facts.suffix, facts.legacy_suffix) == (suffix, True)
    assert facts.symbol == f"{underscore(device)}old_lib{suffix}"
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "new-lib", DEVICES[device])
    assert problems(error)[0].endswith(
        f"the library holds model_libs old_lib (older {suffix}) "
        "('-' in a model_lib appears as '_' in symbols)"
    )


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_unexpected_undefined_symbols(make_library: MakeLibrary, device: str) -> None:
    extra = """
extern int mystery_function(int);
extern int TVMFFIEnvGetStream(int, int);
int use_them(int x) { return mystery_function(x) + TVMFFIEnvGetStream(x, x); }
"""
    tar = make_library(device, "tiny", extra=extra)
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES[device])
    u = underscore(device)
    assert problems(error) == [
        f"undefined symbols that the runtime does not provide: {u}TVMFFIEnvGetStream (in lib0.o), "
        f"{u}mystery_function (in lib0.o)"
    ]


def test_unreadable_member_and_missing_file(make_library: MakeLibrary, tmp_path: Path) -> None:
    tar = make_library("linux", "tiny", lib0=b"#!/bin/sh\necho not an object\n")
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES["linux"])
    assert problems(error) == [
        "lib0.o: not an object file: magic bytes 23 21 2f 62 (neither ELF nor Mach-O)"
    ]
    with pytest.raises(ValidationError, match=r"nothing\.tar .*: the file does not exist$"):
        validate_model_library(tmp_path / "nothing.tar", "tiny", DEVICES["linux"])


def test_runtime_allow_list_is_explicit() -> None:
    assert {"TVMFFIFunctionCall", "TVMBackendAllocWorkspace", "expf", "memset"} <= (
        RUNTIME_PROVIDED_SYMBOLS
    )
    # Exact names, not patterns: an ABI function the app's runtime may lack is not waved through.
    assert "TVMFFIEnvGetStream" not in RUNTIME_PROVIDED_SYMBOLS
    assert not any(name.startswith("_TVM") for name in RUNTIME_PROVIDED_SYMBOLS)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_contract_problems_are_all_listed(make_library: MakeLibrary, device: str) -> None:
    """Synthetic blobs: the checks read the VM's table and `_metadata`, whatever the device."""
    functions = [f for f in RUNTIME_FUNCTIONS if f not in ("decode", "apply_penalty_inplace")]
    metadata = minimal_metadata(prefill_chunk_size=64)
    del metadata["kv_cache"]["head_dim"], metadata["sliding_window_size"]
    blob = library_bin(
        [("relax.VMExecutable", vm_executable(functions, json.dumps(metadata))), ("_lib", b"")]
    )
    tar = make_library(device, "tiny", blob=blob)
    request = {"model_type": "llama", "quantization": "q4f16_1", "model_config": {
        "context_window_size": 512, "prefill_chunk_size": 128, "vocab_size": 512}}  # fmt: skip
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES[device], request)
    sampler = GPU_SAMPLER_FUNCTIONS if DEVICES[device].samples_on_gpu else ()
    assert problems(error) == [
        "model_lib tiny lacks function 'decode' that the MLC runtime calls",
        "model_lib tiny lacks function 'apply_penalty_inplace' that the MLC runtime calls",
        *(f"model_lib tiny lacks function {name!r} that the MLC runtime calls" for name in sampler),
        "model_lib tiny: _metadata lacks the field(s) sliding_window_size, kv_cache.head_dim "
        "that the MLC runtime reads",
        "model_lib tiny: _metadata prefill_chunk_size is 64 but the model's mlc-chat-config.json "
        "(with overrides) says 128",
    ]


def test_unreadable_blob_and_missing_metadata(make_library: MakeLibrary) -> None:
    tar = make_library("linux", "tiny", blob=b"not a blob at all")
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES["linux"])
    assert problems(error) == [
        "the library blob is unreadable: tiny_devc.o: tiny___tvm_ffi__library_bin declares "
        f"{int.from_bytes(b'not a bl', 'little')} bytes but only 9 follow it"
    ]
    blob = library_bin([("relax.VMExecutable", vm_executable(RUNTIME_FUNCTIONS, None))])
    tar = make_library("linux", "tiny", blob=blob)
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, "tiny", DEVICES["linux"])
    assert problems(error) == [
        "model_lib tiny lacks function '_metadata' that the MLC runtime calls"
    ]


# --------------------------------------------------------------------------------------------
# The combined archive


def combine(
    path: Path, device: DeviceSpec, libraries: Mapping[str, tuple[str, Path]]
) -> dict[str, str]:
    """Combine model libraries as the package step does; returns model_id -> model_lib."""
    members = [
        ArchiveMember(archive_member_name(model_lib, m.name), m.data)
        for model_lib, tar in libraries.values()
        for m in read_library_tar(tar)
    ]
    write_archive(path, members, index=device.archive_index)  # type: ignore[arg-type]
    return {model_id: model_lib for model_id, (model_lib, _) in libraries.items()}


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_valid_archive_with_repeated_weak_symbols(
    make_library: MakeLibrary, device: str, tmp_path: Path
) -> None:
    weak = "__attribute__((weak)) int shared_weak(int x) { return x; }"
    spec, u = DEVICES[device], underscore(device)
    expected = combine(
        tmp_path / "lib.a",
        spec,
        {
            "a": ("tiny-llama", make_library(device, "tiny-llama", extra=weak)),
            "b": ("qwen-small", make_library(device, "qwen-small", extra=weak)),
        },
    )
    facts = validate_combined_archive(tmp_path / "lib.a", expected, spec)
    assert facts.symbols == {
        "a": f"{u}tiny_llama___tvm_ffi__library_bin",
        "b": f"{u}qwen_small___tvm_ffi__library_bin",
    }
    assert facts.member_owner == {
        "tiny-llama_lib0.o": "a",
        "tiny-llama_tiny_llama_devc.o": "a",
        "qwen-small_lib0.o": "b",
        "qwen-small_qwen_small_devc.o": "b",
    }
    # The weak symbols really are defined twice; that is allowed.
    for name in ("shared_weak", "__extendhfsf2"):
        weak_definers = [
            m.name
            for m in read_archive(tmp_path / "lib.a")
            if any(
                s.name == u + name and s.defined and s.binding == "weak"
                for s in read_object(m.data, m.name).symbols
            )
        ]
        assert weak_definers == ["tiny-llama_lib0.o", "qwen-small_lib0.o"]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_archive_missing_model_names_it(
    make_library: MakeLibrary, device: str, tmp_path: Path
) -> None:
    spec = DEVICES[device]
    expected = combine(
        tmp_path / "lib.a",
        spec,
        {
            "a": ("tiny-llama", make_library(device, "tiny-llama")),
            "b": ("qwen-small", make_library(device, "qwen-small")),
        },
    )
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(tmp_path / "lib.a", {**expected, "ghost": "ghost-lib"}, spec)
    assert problems(error) == [
        f"model 'ghost' (model_lib 'ghost-lib') is missing: no "
        f"{underscore(device)}ghost_lib___tvm_ffi__library_bin (nor an older suffix); the "
        "archive holds model_libs qwen_small, tiny_llama ('-' in a model_lib appears as '_' in "
        "symbols)"
    ]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_duplicate_strong_symbol_names_both_models(
    make_library: MakeLibrary, device: str, tmp_path: Path
) -> None:
    strong = "int shared_helper(int x) { return x + 1; }"
    spec = DEVICES[device]
    expected = combine(
        tmp_path / "lib.a",
        spec,
        {
            "a": ("tiny-llama", make_library(device, "tiny-llama", extra=strong)),
            "b": ("qwen-small", make_library(device, "qwen-small", extra=strong)),
        },
    )
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(tmp_path / "lib.a", expected, spec)
    assert problems(error) == [
        "strong symbols defined twice, by model 'a' (member tiny-llama_lib0.o) and model 'b' "
        f"(member qwen-small_lib0.o): {underscore(device)}shared_helper; these cannot be linked "
        "into one app (two models with the same model_lib / system-lib prefix?)"
    ]


def test_same_prefix_twice_with_explicit_owners(make_library: MakeLibrary, tmp_path: Path) -> None:
    """One library packaged for two model_ids under different member names: every strong
    symbol clashes, in one line naming both ids."""
    tar = make_library("linux", "tiny")
    members = [
        ArchiveMember(f"{copy}_{m.name}", m.data) for copy in "xy" for m in read_library_tar(tar)
    ]
    write_archive(tmp_path / "lib.a", members, index="gnu")
    owners = {m.name: ("first" if m.name.startswith("x_") else "second") for m in members}
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(
            tmp_path / "lib.a", {"first": "tiny", "second": "tiny"}, DEVICES["linux"], owners
        )
    assert problems(error) == [
        "strong symbols defined twice, by model 'first' (member x_lib0.o) and model 'second' "
        "(member y_lib0.o): __tvm_ffi_tiny_add; these cannot be linked into one app (two models "
        "with the same model_lib / system-lib prefix?)",
        "strong symbols defined twice, by model 'first' (member x_tiny_devc.o) and model "
        "'second' (member y_tiny_devc.o): tiny___tvm_ffi__library_bin; these cannot be linked "
        "into one app (two models with the same model_lib / system-lib prefix?)",
    ]


@pytest.mark.skipif(not HAVE_ZIG, reason="ziglang is not installed")
def test_archive_wrong_architecture_names_model(make_library: MakeLibrary, tmp_path: Path) -> None:
    expected = combine(
        tmp_path / "lib.a",
        DEVICES["android"],
        {
            "a": ("tiny", make_library("android", "tiny")),
            "b": ("qwen", make_library("linux", "qwen")),
        },
    )
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(tmp_path / "lib.a", expected, DEVICES["android"])
    assert problems(error) == [
        "model 'b' was built for ELF x86_64 (qwen_lib0.o, qwen_qwen_devc.o), "
        "device android needs ELF aarch64"
    ]


def test_owner_is_the_longest_model_lib_prefix(make_library: MakeLibrary, tmp_path: Path) -> None:
    expected = combine(
        tmp_path / "lib.a",
        DEVICES["linux"],
        {
            "small": ("tiny", make_library("linux", "tiny")),
            "big": ("tiny_big", make_library("linux", "tiny_big")),
        },
    )
    facts = validate_combined_archive(tmp_path / "lib.a", expected, DEVICES["linux"])
    assert facts.member_owner == {
        "tiny_lib0.o": "small",
        "tiny_tiny_devc.o": "small",
        "tiny_big_lib0.o": "big",
        "tiny_big_tiny_big_devc.o": "big",
    }


@pytest.mark.skipif(not HAVE_ZIG, reason="ziglang is not installed")
def test_archive_without_index(make_library: MakeLibrary, tmp_path: Path) -> None:
    members = read_library_tar(make_library("android", "tiny"))
    for member in members:
        (tmp_path / member.name).write_bytes(member.data)
    # A real `ar` with S: no symbol index.
    command = [
        *ZIG,
        "ar",
        "rcS",
        str(tmp_path / "lib.a"),
        *(str(tmp_path / m.name) for m in members),
    ]
    subprocess.run(command, check=True, capture_output=True)
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(tmp_path / "lib.a", {"a": "tiny"}, DEVICES["android"])
    assert problems(error) == [
        "the archive has no symbol index: ld64 refuses it and GNU ld cannot search it "
        "(write it with objects.write_archive, or run ranlib)"
    ]


@pytest.mark.skipif(not HAVE_ZIG, reason="ziglang is not installed")
def test_archive_index_of_the_wrong_kind(make_library: MakeLibrary, tmp_path: Path) -> None:
    members = [
        ArchiveMember(archive_member_name("tiny", m.name), m.data)
        for m in read_library_tar(make_library("iphone", "tiny"))
    ]
    write_archive(tmp_path / "lib.a", members, index="gnu")
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(tmp_path / "lib.a", {"a": "tiny"}, DEVICES["iphone"])
    assert problems(error) == ["the symbol index is gnu format, device iphone needs darwin"]


def test_stale_index(make_library: MakeLibrary, tmp_path: Path) -> None:
    """A member appended after the index was written (`ar q` style) is not in the index."""
    path = tmp_path / "lib.a"
    expected = combine(path, DEVICES["linux"], {"a": ("tiny", make_library("linux", "tiny"))})
    for member in read_library_tar(make_library("linux", "qw")):
        name = archive_member_name("qw", member.name).encode() + b"/"
        assert len(name) <= 16
        fields = (name, b"0", b"0", b"0", b"644", len(member.data))
        header = b"%-16s%-12s%-6s%-6s%-8s%-10d`\n" % fields
        with path.open("ab") as archive:
            archive.write(header + member.data + b"\n" * (len(member.data) % 2))
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(path, {**expected, "b": "qw"}, DEVICES["linux"])
    assert problems(error) == [
        "the symbol index does not list qw___tvm_ffi__library_bin (model 'b')",
        # __extendhfsf2 is listed (for tiny's member): a weak symbol needs one entry only.
        "the symbol index is incomplete, it lacks __tvm_ffi_qw_add, qw___tvm_ffi__library_bin, "
        "qw___tvm_ffi__library_ctx",
    ]


def test_archive_member_name() -> None:
    assert archive_member_name("tiny-llama-q4f16_1", "lib0.o") == "tiny-llama-q4f16_1_lib0.o"
    assert archive_member_name("m", "./m_devc.o") == "m_m_devc.o"
    with pytest.raises(ValueError, match="contains '/'"):
        archive_member_name("a/b", "lib0.o")


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as error:
        validate_combined_archive(tmp_path / "none.a", {}, DEVICES["linux"])
    assert (
        str(error.value) == f"archive {tmp_path / 'none.a'} (device linux): the file does not exist"
    )


def test_messages_need_no_traceback(make_library: MakeLibrary, tmp_path: Path) -> None:
    """The error for a user's mistake is complete in its own text (no chained cause needed)."""
    with pytest.raises(ValidationError) as error:
        validate_model_library(make_library("linux", "tiny"), "other", DEVICES["linux"])
    assert error.value.__cause__ is None
    assert os.fspath(error.value.args[0]).count("\n") == 1
