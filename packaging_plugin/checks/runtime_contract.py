"""The MLC runtime's contract with a model library, and the checks against it.

What the app's runtime provides (the symbols a model object may leave undefined), the functions it
calls in a library, and the `_metadata` fields it reads (notes/mlc-model-lib-abi.md); checked on
what a library's objects hold (library_contents.py), and, given the compile request, against the
model's mlc-chat-config.json and overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from packaging_plugin.checks.library_contents import LibraryContents
from packaging_plugin.config.devices import DeviceSpec

# Undefined symbols a model object may reference, as C names (Mach-O adds "_" in front).
# TVM runtime C ABI of 0.27 that its code generators call: exact names, so a reference to
# anything else (a newer ABI the app's runtime may lack) is caught here and not at app link time.
TVM_RUNTIME_SYMBOLS: frozenset[str] = frozenset({
    "TVMBackendAllocWorkspace",  # temporary buffers in host code
    "TVMBackendFreeWorkspace",
    "TVMBackendParallelLaunch",  # parallel loops on CPU (llvm targets)
    "TVMBackendParallelBarrier",
    "TVMBackendAnyListSetPackedArg",  # Relax VM "compiled" mode
    "TVMBackendAnyListResetItem",
    "TVMBackendAnyListMoveFromPackedReturn",
    "TVMFFIEnvModLookupFromImports",  # host code looks up its OpenCL/Metal kernels
    "TVMFFIEnvModRegisterSystemLibSymbol",  # the static constructor registering the model
    "TVMFFIErrorSetRaisedFromCStr",
    "TVMFFIErrorSetRaisedFromCStrParts",
    "TVMFFIFunctionCall",
    "TVMFFIHandleInitOnce",
})  # fmt: skip
# C library functions LLVM calls instead of inlining on x86-64 / aarch64: memory intrinsics, and
# the math TVM's intrinsic rules map to libm (x86-64 leaves e.g. `expf` undefined). Every app
# links libc and libm, so these always resolve.
C_LIBRARY_SYMBOLS: frozenset[str] = frozenset({
    "memcpy", "memmove", "memset", "memcmp",
    "bzero",  # LLVM lowers large zeroing memsets to bzero on Darwin
    *(
        name + suffix
        for suffix in ("", "f")  # double and float versions
        for name in (
            "exp", "exp2", "exp10", "expm1", "log", "log2", "log10", "log1p", "pow", "sqrt",
            "cbrt", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh",
            "asinh", "acosh", "atanh", "erf", "erfc", "fmod", "floor", "ceil", "trunc", "round",
            "nearbyint", "rint", "fabs", "fmax", "fmin", "fma", "copysign", "ldexp", "frexp",
            "hypot", "nextafter",
            "sincos",  # LLVM joins a sin and a cos of one value (partial RoPE) into one call
        )
    ),
    "__sincosf_stret", "__sincos_stret",  # Darwin's form of the same
})  # fmt: skip
# Half-precision conversions from compiler-rt / libgcc: TVM defines them weakly in every model,
# and where an object only references them the toolchain's builtins library provides them.
COMPILER_BUILTIN_SYMBOLS: frozenset[str] = frozenset(
    {"__extendhfsf2", "__truncsfhf2", "__truncdfhf2", "__gnu_h2f_ieee", "__gnu_f2h_ieee"}
)
# Made by the linker itself; gcc's x86-64 PIC code names it (LLVM's does not, but may one day).
LINKER_DEFINED_SYMBOLS: frozenset[str] = frozenset({"_GLOBAL_OFFSET_TABLE_"})
RUNTIME_PROVIDED_SYMBOLS: frozenset[str] = (
    TVM_RUNTIME_SYMBOLS | C_LIBRARY_SYMBOLS | COMPILER_BUILTIN_SYMBOLS | LINKER_DEFINED_SYMBOLS
)

# Functions the MLC runtime looks up in every model library (cpp/serve/function_table.cc). Relax
# functions live in the VM executable; TIR PrimFuncs (apply_*_inplace) may instead be exported as
# object symbols `__tvm_ffi_<prefix><name>`: the runtime finds either through the VM's imports.
RUNTIME_FUNCTIONS: tuple[str, ...] = (
    "embed",
    "prefill",
    "decode",
    "batch_prefill",
    "batch_decode",
    "create_tir_paged_kv_cache",
    "alloc_embedding_tensor",  # not checked by MLC at load, but it reads the hidden size from it
    "softmax_with_temperature",
    "apply_logit_bias_inplace",
    "apply_penalty_inplace",
    "apply_bitmask_inplace",
)
# The GPU sampler: where the runtime samples on the GPU (Metal) it calls these; on OpenCL
# (Android) it samples on the CPU and does not.
GPU_SAMPLER_FUNCTIONS: tuple[str, ...] = (
    "multinomial_from_uniform",
    "argsort_probs",
    "sample_with_top_p",
    "sampler_take_probs",
    # Not checked when a model loads, but called on the first request with top_p < 1.
    "renormalize_by_top_p",
)

# `_metadata` fields the runtime reads without a default (cpp/metadata/model.cc).
METADATA_REQUIRED_FIELDS: tuple[str, ...] = (
    "model_type",
    "quantization",
    "context_window_size",
    "prefill_chunk_size",
    "max_batch_size",
    "tensor_parallel_shards",
    "params",
    "memory_usage",
    "kv_cache",
    # Not read with a default: the C++ struct stays uninitialised without them.
    "sliding_window_size",
    "attention_sink_size",
)
METADATA_KV_CACHE_FIELDS: tuple[str, ...] = (
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)
# Sizes the runtime plans memory with: each must equal what the compile request asked for.
METADATA_REQUEST_SIZES: tuple[str, ...] = ("context_window_size", "prefill_chunk_size")
# Names of the embedding parameter (MLC's, per family); its axis 0 is the vocabulary.
EMBEDDING_PARAMS: tuple[str, ...] = (
    "model.embed_tokens",
    "transformer.wte",
    "transformer.embd",
    "gpt_neox.embed_in",
    "language_model.model.embed_tokens",  # gemma3
)


def required_functions(device: DeviceSpec) -> tuple[str, ...]:
    """The functions the MLC runtime calls in a model library on `device`."""
    sampler = GPU_SAMPLER_FUNCTIONS if device.samples_on_gpu else ()
    return ("_metadata", *RUNTIME_FUNCTIONS, *sampler)


def contract_problems(
    contents: LibraryContents, device: DeviceSpec, request: Mapping[str, Any] | None = None
) -> list[str]:
    """What keeps the runtime from using this library: missing functions, `_metadata` lacking
    fields, or (given the compile request) disagreeing with the model's chat config."""
    problems = []
    lib = contents.model_lib
    for name in required_functions(device):
        if name not in contents.functions:
            problems.append(f"model_lib {lib} lacks function {name!r} that the MLC runtime calls")
    if "_metadata" in contents.exported_functions - contents.vm_functions:
        problems.append(
            f"model_lib {lib}: _metadata is a TIR function, but the runtime looks it up without "
            "imports: it must be a Relax function"
        )
    if contents.metadata_error is not None:
        problems.append(f"model_lib {lib}: {contents.metadata_error}")
    metadata = contents.metadata
    if metadata is None:
        return problems
    missing = [f for f in METADATA_REQUIRED_FIELDS if f not in metadata]
    kv_cache = metadata.get("kv_cache")
    if isinstance(kv_cache, Mapping):
        missing += [f"kv_cache.{f}" for f in METADATA_KV_CACHE_FIELDS if f not in kv_cache]
    elif "kv_cache" in metadata:
        problems.append(f"model_lib {lib}: _metadata field 'kv_cache' is not an object")
    if missing:
        problems.append(
            f"model_lib {lib}: _metadata lacks the field(s) {', '.join(missing)} that the MLC "
            "runtime reads"
        )
    if request is not None:
        problems += _request_problems(lib, metadata, request)
    return problems


def _request_problems(
    lib: str, metadata: Mapping[str, Any], request: Mapping[str, Any]
) -> list[str]:
    """`_metadata` against the compile request (the chat config after overrides)."""
    model_config = request.get("model_config") or {}
    expected: dict[str, Any] = {
        "model_type": request.get("model_type"),
        "quantization": request.get("quantization"),
    }
    for key in METADATA_REQUEST_SIZES:
        expected[key] = model_config.get(key)
    problems = []
    for key, want in expected.items():
        if want is not None and key in metadata and metadata[key] != want:
            problems.append(
                f"model_lib {lib}: _metadata {key} is {metadata[key]!r} but the model's "
                f"mlc-chat-config.json (with overrides) says {want!r}"
            )
    vocab = model_config.get("vocab_size")
    embedding = _embedding_param(metadata.get("params"))
    if vocab is not None and embedding is not None:
        name, rows = embedding
        # A symbolic "vocab_size" is resolved by the runtime from the chat config itself.
        if rows != "vocab_size" and rows != vocab:
            problems.append(
                f"model_lib {lib}: _metadata param {name} has {rows!r} rows but the model's "
                f"mlc-chat-config.json (with overrides) says vocab_size {vocab!r}"
            )
    return problems


def _embedding_param(params: Any) -> tuple[str, Any] | None:
    """(name, axis-0 size) of the embedding parameter listed in `_metadata.params`."""
    if not isinstance(params, list):
        return None
    for param in params:
        if not isinstance(param, Mapping):
            continue
        name, shape = param.get("name"), param.get("shape")
        if (
            isinstance(name, str)
            and name.rsplit(".", 1)[0] in EMBEDDING_PARAMS
            and isinstance(shape, list)
            and shape
        ):
            return name, shape[0]
    return None


def runtime_provides(name: str, device: DeviceSpec) -> bool:
    """Whether the MLC runtime (TVM, libc, compiler builtins) defines `name` for the device."""
    prefix = device.symbol_prefix
    if prefix and not name.startswith(prefix):
        return False  # a Mach-O C symbol always carries the "_"
    return name[len(prefix) :] in RUNTIME_PROVIDED_SYMBOLS
