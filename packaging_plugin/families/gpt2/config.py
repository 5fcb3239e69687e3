"""The gpt2 family's rules without TVM, and its HF config."""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.config import (
    ModelTypeRules,
    hf_activation,
    hf_sizes,
    need,
)

FAMILY = "gpt2"
# `n_positions`: the rows of the position embedding, kept apart from the context window
# (gpt2/model.py): an override of the context window must not change that stored shape.
MODEL_TYPES: dict[str, ModelTypeRules] = {
    "gpt2": ModelTypeRules("gpt2", position_rows_key="n_positions")
}
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5  # transformers' and MLC's default


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's GPT2Config keys from config.json."""
    hf_activation(hf, ACTIVATIONS, "activation_function")
    hidden, heads = int(need(hf, "n_embd")), int(need(hf, "n_head"))
    n_positions = int(need(hf, "n_positions"))
    inner = hf.get("n_inner")
    return {
        "vocab_size": int(need(hf, "vocab_size")),
        "n_embd": hidden,
        "n_layer": int(need(hf, "n_layer")),
        "n_head": heads,
        "layer_norm_epsilon": float(hf.get("layer_norm_epsilon") or LAYER_NORM_EPS),
        "n_inner": 4 * hidden if inner in (None, -1) else int(inner),
        "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx")),
        "head_dim": hidden // heads,
        "n_positions": n_positions,
        **hf_sizes(MODEL_TYPES[model_type], n_positions),
    }
