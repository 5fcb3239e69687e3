"""A writer of TVM's blob layout, for synthetic libraries: the VM executable, the library-bin
blob around it, and the `_metadata` a model library reports."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from packaging_plugin.checks.library_contents import VM_MAGICS
from packaging_plugin.checks.runtime_contract import GPU_SAMPLER_FUNCTIONS, RUNTIME_FUNCTIONS


def length_prefixed(value: str | bytes) -> bytes:
    """A string as TVM writes it: a little-endian uint64 length, then the bytes."""
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("<Q", len(data)) + data


def vm_executable(functions: Sequence[str], metadata: str | None) -> bytes:
    """A v2 VM executable: `functions` as Relax functions with no code, and `_metadata` (when
    metadata is given) as one `vm.builtin.copy` of string constant 0 into a register, returned."""
    table = []  # (kind, name, start, end)
    code_offsets: list[int] = []
    code: list[int] = []
    if metadata is not None:
        table.append((1, "_metadata", 0, 2))
        table.append((0, "vm.builtin.copy", 0, 0))
        const_arg = (2 << 56) | 0  # ArgKind kConstIdx, constant 0
        code_offsets += [0, 5]
        code += [1, 0, 1, 1, const_arg]  # Call dst=r0 func=1 (vm.builtin.copy) nargs=1 c[0]
        code += [2, 0]  # Ret r0
    table += [(1, name, 0, 0) for name in functions]
    out = struct.pack("<Q", VM_MAGICS[1]) + length_prefixed("0.14") + struct.pack("<Q", len(table))
    for kind, name, start, end in table:
        out += (
            struct.pack("<i", kind)
            + length_prefixed(name)
            + struct.pack("<qqqqQ", start, end, 0, 1, 0)
        )
    out += struct.pack("<Q", 0)  # memory scopes
    if metadata is None:
        out += struct.pack("<Q", 0)
    else:
        out += struct.pack("<Q", 1) + struct.pack("<i", 65) + length_prefixed(metadata)
    out += struct.pack(f"<Q{len(code_offsets)}Q", len(code_offsets), *code_offsets)
    out += struct.pack(f"<Q{len(code)}q", len(code), *code)
    return out


def library_bin(modules: Sequence[tuple[str, bytes]]) -> bytes:
    """The blob: module 0 imports module 1, which imports the rest (TVM's own chain)."""
    n = len(modules)
    indptr = [0, *(min(i, n - 1) for i in range(1, n + 1))] if n > 1 else [0, 0]
    children = list(range(1, n))
    body = struct.pack(f"<Q{len(indptr)}Q", len(indptr), *indptr)
    body += struct.pack(f"<Q{len(children)}Q", len(children), *children)
    for kind, payload in modules:
        body += length_prefixed(kind) + (b"" if kind == "_lib" else length_prefixed(payload))
    return struct.pack("<Q", len(body)) + body


def minimal_metadata(**changes: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "model_type": "llama",
        "quantization": "q4f16_1",
        "context_window_size": 512,
        "prefill_chunk_size": 128,
        "max_batch_size": 1,
        "tensor_parallel_shards": 1,
        "params": [{"name": "model.embed_tokens.weight", "shape": ["vocab_size", 64]}],
        "memory_usage": {},
        "kv_cache": {
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
        },
        "sliding_window_size": -1,
        "attention_sink_size": -1,
    }
    metadata.update(changes)
    return metadata


def valid_blob(functions: Sequence[str] = RUNTIME_FUNCTIONS, **metadata: Any) -> bytes:
    """A blob that meets the runtime contract on every device, sampler included."""
    vm = vm_executable(
        [*functions, *GPU_SAMPLER_FUNCTIONS], json.dumps(minimal_metadata(**metadata))
    )
    return library_bin([("relax.VMExecutable", vm), ("_lib", b"")])
