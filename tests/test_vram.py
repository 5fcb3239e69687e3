"""The memory estimate of a model library from its `_metadata`."""

from __future__ import annotations

import pytest

from packaging_plugin.checks.vram import VramEstimateError, estimate_vram

METADATA = {
    "quantization": "q4f16_1",
    "context_window_size": 1024,
    "sliding_window_size": -1,
    "attention_sink_size": -1,
    "params": [
        {"name": "model.embed_tokens.q_weight", "shape": ["vocab_size", 8], "dtype": "uint32"},
        {"name": "model.embed_tokens.q_scale", "shape": ["vocab_size", 2], "dtype": "float16"},
        {"name": "model.norm.weight", "shape": [64], "dtype": "float16"},
    ],
    "memory_usage": {"prefill": 5000, "decode": 300, "batch_prefill": 7000},
    "kv_cache": {"num_hidden_layers": 2, "num_key_value_heads": 2, "head_dim": 32},
}


def test_weights_workspace_and_kv_cache_add_up() -> None:
    estimate = estimate_vram(METADATA, {"vocab_size": 100})
    assert estimate.params_bytes == 100 * 8 * 4 + 100 * 2 * 2 + 64 * 2
    assert estimate.workspace_bytes == 7000  # the largest function's plan, not the sum
    assert estimate.kv_cache_bytes == 2 * 2 * 2 * 32 * 1024 * 2  # K and V, fp16
    assert estimate.total == estimate.params_bytes + 7000 + estimate.kv_cache_bytes


def test_a_sliding_window_bounds_the_kv_cache_and_f32_doubles_it() -> None:
    metadata = {**METADATA, "quantization": "q4f32_1", "sliding_window_size": 256,
                "attention_sink_size": 4}  # fmt: skip
    estimate = estimate_vram(metadata, {"vocab_size": 100})
    assert estimate.kv_cache_bytes == 2 * 2 * 2 * 32 * (256 + 4) * 4


def test_an_unresolvable_dimension_is_an_error() -> None:
    with pytest.raises(VramEstimateError, match=r"'vocab_size' is not in mlc-chat-config\.json"):
        estimate_vram(METADATA, {})
