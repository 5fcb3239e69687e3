"""How much device memory a model library needs, from its own `_metadata`.

The estimate is the one an app must budget for: the weights (the params of `_metadata`, symbolic
dims resolved from the chat config), the largest planned temporary workspace of any function
(`memory_usage`), and a KV cache that holds the whole context window (or the sliding window) for
one sequence. `estimated_vram_bytes` below this is an underestimate: the runtime may refuse the
model or the app may be killed for using more than it declared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_DTYPE_BYTES = {
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "uint32": 4,
    "int32": 4,
    "int8": 1,
    "uint8": 1,
}


class VramEstimateError(ValueError):
    """The metadata lacks what the estimate needs."""


@dataclass(frozen=True)
class VramEstimate:
    params_bytes: int
    workspace_bytes: int
    kv_cache_bytes: int

    @property
    def total(self) -> int:
        return self.params_bytes + self.workspace_bytes + self.kv_cache_bytes


def _dim(value: Any, chat_config: Mapping[str, Any]) -> int:
    if isinstance(value, int):
        return value
    resolved = chat_config.get(value)  # a symbolic dim names a top-level chat-config field
    if not isinstance(resolved, int):
        raise VramEstimateError(f"parameter dimension {value!r} is not in mlc-chat-config.json")
    return resolved


def _dtype_bytes(dtype: str) -> int:
    if dtype not in _DTYPE_BYTES:
        raise VramEstimateError(f"unknown parameter dtype {dtype!r}")
    return _DTYPE_BYTES[dtype]


def estimate_vram(metadata: Mapping[str, Any], chat_config: Mapping[str, Any]) -> VramEstimate:
    """The memory one sequence of the model needs on the device."""
    params = sum(
        math.prod(_dim(d, chat_config) for d in p["shape"]) * _dtype_bytes(p["dtype"])
        for p in metadata["params"]
    )
    workspace = max(metadata.get("memory_usage", {}).values(), default=0)
    kv = metadata["kv_cache"]
    # KV entries are stored in the activation dtype: q*f16* -> 2 bytes, q*f32* -> 4.
    activation_bytes = 4 if "f32" in str(metadata["quantization"]) else 2
    window = metadata["context_window_size"]
    sliding = metadata.get("sliding_window_size", -1)
    if isinstance(sliding, int) and sliding > 0:
        window = sliding + max(metadata.get("attention_sink_size", 0), 0)
    kv_bytes = (
        2 * kv["num_hidden_layers"] * kv["num_key_value_heads"] * kv["head_dim"] * window
    ) * activation_bytes
    return VramEstimate(params, int(workspace), kv_bytes)
