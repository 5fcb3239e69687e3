"""Names the config checker needs without importing TVM: model families and quantizations."""

from __future__ import annotations

# model_type values (as in mlc-chat-config.json) that packaging_plugin.compile.export can compile.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi3",
    "gpt2",
)

# Quantization names with MLC's meaning: q<bits>f<activation float bits>_<layout>.
SUPPORTED_QUANTIZATIONS: tuple[str, ...] = ("q0f16", "q0f32", "q4f16_0", "q4f16_1", "q4f32_1")
