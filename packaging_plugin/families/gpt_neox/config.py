"""The gpt_neox family's rules without TVM (GPT-NeoX, Pythia, RedPajama-INCITE), and its HF config.

The model_config keys are those of MLC's GPTNeoXConfig (`use_parallel_residual`, `rotary_pct`,
`position_embedding_base`, `ffn_out_dtype`, ...), so the configs MLC wrote for its RedPajama
models compile as they are. Three keys of ours, which MLC's config keeps aside unread, say what
MLC's model assumes: `hidden_act` (MLC always computes the exact, erf GELU), `attention_bias`
(MLC always has the attention biases) and `tie_word_embeddings` (never tied, in MLC and here).
"""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.config import ConvertError, ModelTypeRules, hf_sizes, need

FAMILY = "gpt_neox"
MODEL_TYPES: dict[str, ModelTypeRules] = {"gpt_neox": ModelTypeRules("gpt_neox")}
LAYER_NORM_EPS = 1e-5  # transformers' default
ROTARY_PCT = 0.25  # transformers' default when a config.json gives none
ROPE_THETA = 10000.0
# hidden_act -> how the model computes it. transformers' "gelu" is torch's exact GELU (erf);
# "gelu_new", "gelu_fast" and "gelu_pytorch_tanh" are all the tanh approximation.
HIDDEN_ACTS: dict[str, str] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}
# MLC's default: the MLP's matmuls accumulate, add their biases and return in float32 (the
# biases are stored in float32 too), whatever the model's dtype.
FFN_OUT_DTYPE = "float32"


def rotary_dim(head_dim: int, rotary_pct: float) -> int:
    """The leading dims of each head that RoPE rotates, as transformers and MLC truncate it."""
    return int(head_dim * rotary_pct)


def check_rotary_dim(head_dim: int, rotary_pct: float) -> str | None:
    """What is wrong with `rotary_pct` for this head_dim, or None."""
    dim = rotary_dim(head_dim, rotary_pct)
    if dim < 2 or dim > head_dim or dim % 2:
        return (
            f"rotary_pct {rotary_pct} gives {dim} rotary dims of head_dim {head_dim}; "
            "an even number from 2 to head_dim is supported"
        )
    return None


def _first(*values: Any) -> Any:
    """The first value that is not None (0 and 0.0 are values here)."""
    return next((v for v in values if v is not None), None)


def _hf_rope(hf: dict[str, Any]) -> tuple[float, float]:
    """(rope theta, rotary_pct) from either spelling.

    transformers 4 writes `rotary_emb_base`, `rotary_pct` and `rope_scaling` at the top level;
    5 writes `rope_parameters: {"rope_theta", "partial_rotary_factor", "rope_type"}`.
    """
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for where, source in (("rope_parameters", params), ("rope_scaling", scaling)):
        kind = source.get("rope_type", source.get("type"))
        if kind not in (None, "default"):
            raise ConvertError(
                f"config.json: {where}.rope_type {kind!r} is not supported for gpt_neox "
                "(plain RoPE only)"
            )
    theta = _first(params.get("rope_theta"), hf.get("rotary_emb_base"), hf.get("rope_theta"))
    pct = _first(
        params.get("partial_rotary_factor"), hf.get("rotary_pct"), hf.get("partial_rotary_factor")
    )
    return float(_first(theta, ROPE_THETA)), float(_first(pct, ROTARY_PCT))


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's GPTNeoXConfig keys (and our three) from config.json."""
    act = hf.get("hidden_act") or "gelu"
    if act not in HIDDEN_ACTS:
        raise ConvertError(
            f"config.json: hidden_act {act!r} is not supported for gpt_neox "
            f"(expected {', '.join(HIDDEN_ACTS)})"
        )
    if hf.get("tie_word_embeddings"):
        raise ConvertError(
            "config.json: tie_word_embeddings=true is not supported for gpt_neox "
            "(embed_out is a weight of its own)"
        )
    hidden, heads = int(need(hf, "hidden_size")), int(need(hf, "num_attention_heads"))
    if hidden % heads:
        raise ConvertError(
            f"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )
    head_dim = hidden // heads
    theta, pct = _hf_rope(hf)
    if problem := check_rotary_dim(head_dim, pct):
        raise ConvertError(f"config.json: {problem}")
    context = int(need(hf, "max_position_embeddings"))
    return {
        "use_parallel_residual": bool(hf.get("use_parallel_residual", True)),
        "hidden_size": hidden,
        "intermediate_size": int(need(hf, "intermediate_size")),
        "num_attention_heads": heads,
        "num_hidden_layers": int(need(hf, "num_hidden_layers")),
        "layer_norm_eps": float(_first(hf.get("layer_norm_eps"), LAYER_NORM_EPS)),
        "vocab_size": int(need(hf, "vocab_size")),
        "rotary_pct": pct,
        "position_embedding_base": theta,
        "head_dim": head_dim,
        "ffn_out_dtype": FFN_OUT_DTYPE,
        "hidden_act": act,
        "attention_bias": bool(hf.get("attention_bias", True)),
        "tie_word_embeddings": False,
        **hf_sizes(MODEL_TYPES[model_type], context),
    }
