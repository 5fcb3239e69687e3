"""library_contents.py and the runtime-contract checks (runtime_contract.py), on real libraries.

The demo llama is compiled once per run for each device (through the shared compile cache), and
the failure cases are made from those real libraries by rewriting bytes in place: a function
table entry renamed, an exported symbol renamed, a metadata key renamed. Every rewrite keeps the
length, so the objects stay valid, and leaves the old name elsewhere in the bytes (kernel names
contain "batch_decode"): only a reader of the real structure notices.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from packaging_plugin.checks.library_contents import (
    LibraryContentsError,
    parse_library_bin,
    parse_vm_executable,
    read_library_contents,
)
from packaging_plugin.checks.objects import ArchiveMember, read_library_tar
from packaging_plugin.checks.runtime_contract import (
    GPU_SAMPLER_FUNCTIONS,
    RUNTIME_FUNCTIONS,
    required_functions,
)
from packaging_plugin.checks.validation import (
    ValidationError,
    validate_model_library,
)
from packaging_plugin.compile.cache import JitPolicy, LibraryCache, cache_key
from packaging_plugin.compile.runner import run_compile
from packaging_plugin.config.chat_config import build_compile_request, read_chat_config
from packaging_plugin.config.devices import DEVICES, system_lib_prefix
from tests.helpers.tvm_blobs import length_prefixed, library_bin, valid_blob

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "configs" / "models" / "tiny-llama-q4f16_1"
MODEL_LIB = "tiny_llama_q4f16_1"
KERNEL_KIND = {"android": "opencl", "iphone": "metal", "linux": None}


# --------------------------------------------------------------------------------------------
# Real libraries


@dataclass(frozen=True)
class RealLibrary:
    device: str
    tar: Path
    request: dict[str, Any]


@pytest.fixture(scope="module")
def real_libraries(shared_compile_cache: Path) -> dict[str, RealLibrary]:
    """The demo llama compiled for android, iphone and linux (in parallel: compiles are child
    processes), through the shared cache so the plugin tests reuse them."""
    chat = read_chat_config(MODEL)
    prefix = system_lib_prefix(MODEL_LIB)

    def build(device: str) -> RealLibrary:
        request = build_compile_request(chat, {}, device)
        cached = LibraryCache(shared_compile_cache).obtain(
            cache_key(request, prefix),
            JitPolicy.ON,
            lambda out: run_compile({**request, "system_lib_prefix": prefix}, out, 300),
        )
        return RealLibrary(device, cached.path, request)

    with ThreadPoolExecutor(3) as pool:
        return {lib.device: lib for lib in pool.map(build, KERNEL_KIND)}


def rewrite(
    library: RealLibrary, tmp_path: Path, member_suffix: str, old: bytes, new: bytes
) -> Path:
    """A copy of the library tar with `old` replaced by `new` (same length) once in a member."""
    assert len(old) == len(new)
    members = read_library_tar(library.tar)
    changed = []
    for member in members:
        data = member.data
        if member.name.endswith(member_suffix):
            assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times"
            data = data.replace(old, new)
        changed.append(ArchiveMember(member.name, data))
    return retar(changed, tmp_path / f"{library.device}-rewritten.tar")


def rename_elf_symbol(data: bytes, symbol: str) -> bytes:
    """The ELF object with `symbol`'s last letter made "X" in the string table its symbol entry
    points at (section names and strings elsewhere hold the same text, and stay)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    elf = ELFFile(io.BytesIO(data))
    for table in elf.iter_sections():
        if not isinstance(table, SymbolTableSection):
            continue
        strtab = elf.get_section(table["sh_link"])
        for sym in table.iter_symbols():
            if sym.name == symbol:
                at = strtab["sh_offset"] + sym["st_name"] + len(symbol) - 1
                return data[:at] + b"X" + data[at + 1 :]
    raise AssertionError(f"{symbol} not found")


def retar(members: Sequence[ArchiveMember], path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.size = len(member.data)
            tar.addfile(info, io.BytesIO(member.data))
    return path


def problems_of(error: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [line.removeprefix("  - ") for line in str(error.value).split("\n")[1:]]


@pytest.mark.parametrize("device", list(KERNEL_KIND))
@pytest.mark.slow
def test_contents_of_a_real_library(real_libraries: dict[str, RealLibrary], device: str) -> None:
    library = real_libraries[device]
    members = read_library_tar(library.tar)
    contents = read_library_contents(members, MODEL_LIB, DEVICES[device])

    u = DEVICES[device].symbol_prefix
    assert contents.blob_symbol == f"{u}{MODEL_LIB}___tvm_ffi__library_bin"
    assert contents.blob_member == f"{MODEL_LIB}_devc.o"
    kernels = KERNEL_KIND[device]
    assert contents.module_kinds == ("relax.VMExecutable", "_lib", *([kernels] if kernels else []))
    assert contents.kernel_source_kind == kernels
    assert contents.vm_version == "0.14"
    # Relax functions are in the VM's table; the logit processors are exported TIR symbols.
    relax = {
        "_metadata", "embed", "prefill", "decode", "batch_prefill", "batch_decode",
        "batch_verify", "create_tir_paged_kv_cache", "alloc_embedding_tensor",
        "softmax_with_temperature",
    }  # fmt: skip
    assert relax <= contents.vm_functions
    processors = {"apply_logit_bias_inplace", "apply_penalty_inplace", "apply_bitmask_inplace"}
    assert processors <= contents.exported_functions
    assert not processors & contents.vm_functions
    assert set(RUNTIME_FUNCTIONS) <= contents.functions
    # Builtins the VM calls are not functions the library offers.
    assert "vm.builtin.copy" not in contents.functions

    metadata = contents.metadata
    assert metadata is not None and contents.metadata_error is None
    config = library.request["model_config"]
    assert (metadata["model_type"], metadata["quantization"]) == ("llama", "q4f16_1")
    assert metadata["context_window_size"] == config["context_window_size"]
    assert metadata["prefill_chunk_size"] == config["prefill_chunk_size"]
    assert metadata["kv_cache"] == {
        "num_hidden_layers": config["num_hidden_layers"],
        "num_attention_heads": config["num_attention_heads"],
        "num_key_value_heads": config["num_key_value_heads"],
        "head_dim": config["head_dim"],
    }
    assert metadata["params"][0]["name"] == "model.embed_tokens.q_weight"
    assert metadata["params"][0]["shape"][0] == "vocab_size"

    facts = validate_model_library(library.tar, MODEL_LIB, DEVICES[device], library.request)
    assert facts.contents == contents


@pytest.mark.slow
def test_the_blob_is_the_symbols_bytes(real_libraries: dict[str, RealLibrary]) -> None:
    """ELF records the blob's size; Mach-O does not, and its section holds more after the blob
    (the symbol's name as a string): the blob must still end exactly at its declared length."""
    for device, library in real_libraries.items():
        members = read_library_tar(library.tar)
        contents = read_library_contents(members, MODEL_LIB, DEVICES[device])
        devc = next(m.data for m in members if m.name == contents.blob_member)
        start = devc.find(struct.pack("<Q", contents.blob_size - 8))
        assert start >= 0
        kinds, payloads = parse_library_bin(devc[start : start + contents.blob_size])
        assert tuple(kinds) == contents.module_kinds
        assert parse_vm_executable(payloads[0]).version == "0.14"


@pytest.mark.parametrize("device", ["android", "iphone"])
@pytest.mark.slow
def test_a_library_missing_a_relax_function_fails_naming_it(
    real_libraries: dict[str, RealLibrary], tmp_path: Path, device: str
) -> None:
    library = real_libraries[device]
    entry = length_prefixed("batch_decode")
    tar = rewrite(library, tmp_path, "devc.o", entry, length_prefixed("batch_decodX"))
    # The name is still in the bytes (kernel names contain it): a grep would be fooled.
    devc = next(m.data for m in read_library_tar(tar) if m.name.endswith("devc.o"))
    assert b"batch_decode" in devc
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, MODEL_LIB, DEVICES[device], library.request)
    assert problems_of(error) == [
        f"model_lib {MODEL_LIB} lacks function 'batch_decode' that the MLC runtime calls"
    ]


@pytest.mark.slow
def test_a_library_missing_an_exported_tir_function_fails_naming_it(
    real_libraries: dict[str, RealLibrary], tmp_path: Path
) -> None:
    library = real_libraries["android"]
    symbol = f"__tvm_ffi_{MODEL_LIB}_apply_bitmask_inplace"
    members = [
        ArchiveMember(m.name, rename_elf_symbol(m.data, symbol) if m.name == "lib0.o" else m.data)
        for m in read_library_tar(library.tar)
    ]
    tar = retar(members, tmp_path / "renamed.tar")
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, MODEL_LIB, DEVICES["android"], library.request)
    assert problems_of(error) == [
        f"model_lib {MODEL_LIB} lacks function 'apply_bitmask_inplace' that the MLC runtime calls"
    ]


@pytest.mark.slow
def test_metadata_missing_a_field_fails_naming_it(
    real_libraries: dict[str, RealLibrary], tmp_path: Path
) -> None:
    library = real_libraries["linux"]
    tar = rewrite(library, tmp_path, "devc.o", b'"max_batch_size":', b'"max_batch_sizX":')
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, MODEL_LIB, DEVICES["linux"])
    assert problems_of(error) == [
        f"model_lib {MODEL_LIB}: _metadata lacks the field(s) max_batch_size that the MLC "
        "runtime reads"
    ]


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("context_window_size", 1024, "_metadata context_window_size is 512"),
        ("prefill_chunk_size", 32, "_metadata prefill_chunk_size is 128"),
        ("model_type", "qwen2", "_metadata model_type is 'llama'"),
        ("quantization", "q0f16", "_metadata quantization is 'q4f16_1'"),
    ],
)
@pytest.mark.slow
def test_metadata_disagreeing_with_the_chat_config_fails_naming_the_field(
    real_libraries: dict[str, RealLibrary], key: str, value: Any, shown: str
) -> None:
    library = real_libraries["linux"]
    request = json.loads(json.dumps(library.request))
    if key in ("model_type", "quantization"):
        request[key] = value
    else:
        request["model_config"][key] = value
    with pytest.raises(ValidationError) as error:
        validate_model_library(library.tar, MODEL_LIB, DEVICES["linux"], request)
    assert problems_of(error) == [
        f"model_lib {MODEL_LIB}: {shown} but the model's mlc-chat-config.json (with overrides) "
        f"says {value!r}"
    ]


@pytest.mark.slow
def test_a_concrete_vocabulary_must_match_the_chat_config(
    real_libraries: dict[str, RealLibrary], tmp_path: Path
) -> None:
    library = real_libraries["linux"]
    # The embedding's vocab dimension made concrete (same length: "vocab_size" -> 10-digit int).
    param = b'"model.embed_tokens.q_weight","pipeline_stages":[0],"preprocs":[],"shape":'
    tar = rewrite(
        library, tmp_path, "devc.o", param + b'["vocab_size",8]', param + b"[1234567890 , 8]"
    )
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, MODEL_LIB, DEVICES["linux"], library.request)
    assert problems_of(error) == [
        f"model_lib {MODEL_LIB}: _metadata param model.embed_tokens.q_weight has 1234567890 rows "
        "but the model's mlc-chat-config.json (with overrides) says vocab_size 512"
    ]


@pytest.mark.slow
def test_metal_libraries_must_carry_the_gpu_sampler_and_android_ones_need_not(
    real_libraries: dict[str, RealLibrary], tmp_path: Path
) -> None:
    iphone, android = DEVICES["iphone"], DEVICES["android"]
    assert set(GPU_SAMPLER_FUNCTIONS) <= set(required_functions(iphone))
    assert not set(GPU_SAMPLER_FUNCTIONS) & set(required_functions(android))
    library = real_libraries["iphone"]
    validate_model_library(library.tar, MODEL_LIB, iphone, library.request)
    # Drop one sampler function from the VM function table: the iPhone library now fails.
    tar = rewrite(
        library,
        tmp_path,
        "devc.o",
        length_prefixed("argsort_probs"),
        length_prefixed("argsort_probX"),
    )
    with pytest.raises(ValidationError) as error:
        validate_model_library(tar, MODEL_LIB, iphone, library.request)
    assert problems_of(error) == [
        f"model_lib {MODEL_LIB} lacks function 'argsort_probs' that the MLC runtime calls"
    ]


# --------------------------------------------------------------------------------------------
# The parser on synthetic blobs: malformed input is an error that says where


def test_synthetic_blob_round_trip() -> None:
    kinds, payloads = parse_library_bin(valid_blob(context_window_size=99))
    assert kinds == ["relax.VMExecutable", "_lib"]
    vm = parse_vm_executable(payloads[0])
    assert {f.name for f in vm.functions} >= {"_metadata", *RUNTIME_FUNCTIONS}
    assert json.loads(vm.constants[0])["context_window_size"] == 99


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (valid_blob()[:-3], "length"),
        (struct.pack("<QQ", 8, 5), "import tree: count 5 exceeds the remaining bytes"),
        (
            library_bin([("relax.VMExecutable", b"\0" * 16), ("_lib", b"")]),
            "magic 0x0, expected one of 0xd225de2f4214151d, 0xd225de2f4214151e",
        ),
    ],
    ids=["truncated", "garbage-count", "bad-magic"],
)
def test_malformed_blobs_are_named(blob: bytes, message: str) -> None:
    with pytest.raises(LibraryContentsError) as error:
        _kinds, payloads = parse_library_bin(blob)
        parse_vm_executable(payloads[0])
    assert message in str(error.value)
