"""The gemma3 family's rules without TVM: gemma3_text and gemma3, and their HF configs.

The model_config is MLC's `Gemma3Config` for both model_types: the text model's settings nested
in `text_config` (MLC's `Gemma3TextConfig` keys: `position_embedding_base`, `rope_scaling`,
`sliding_window_size`, `query_pre_attn_scalar`, ...) and the sizes at the top level. Ours adds
what transformers uses and MLC does not: `rope_local_base_freq` (the sliding layers' RoPE base),
`layer_types` (per layer, "sliding_attention" or "full_attention") and
`final_logit_softcapping`. A gemma3 config.json nests the same settings in `text_config`, so
both model_types give the same text_config. Prefill chunks are kept shorter than the sliding
window: TVM's paged KV cache windows a sliding layer correctly only for such chunks.

The released configs leave out much (Gemma-3-4B's text_config has five keys): the defaults are
transformers' `Gemma3TextConfig` defaults. Top-level `sliding_window_size` and
`attention_sink_size` are -1: the per-layer window is compiled into the library, and the runtime
must not slide (evict) a sequence's cache, which the full-attention layers read whole.
"""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.config import (
    ConvertError,
    ModelTypeRules,
    hf_activation,
    hf_sizes,
    is_int,
)

FAMILY = "gemma3"
_WINDOW_PATH = ("text_config", "sliding_window_size")
MODEL_TYPES: dict[str, ModelTypeRules] = {
    name: ModelTypeRules(name, prefill_bound_path=_WINDOW_PATH)
    for name in ("gemma3_text", "gemma3")
}
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "gelu_tanh")  # all computed as GELU-tanh, as in MLC
SLIDING, FULL = "sliding_attention", "full_attention"
# transformers' Gemma3TextConfig defaults, for the keys a released config.json may leave out.
TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
}
# The RoPE bases' defaults: the full layers', the sliding layers'.
ROPE_THETA, ROPE_LOCAL_THETA = 1_000_000.0, 10_000.0


def layer_types(num_layers: int, listed: Any, pattern: Any, where: str) -> list[str]:
    """Per layer, SLIDING or FULL: `listed` (transformers 5, and 4.5x), else every `pattern`-th
    layer full (layer i is full when (i + 1) % pattern == 0), as transformers derives it."""
    if listed is None:
        if not is_int(pattern) or pattern < 1:
            raise ValueError(f"{where}sliding_window_pattern {pattern!r} is not a positive integer")
        return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]
    if not isinstance(listed, list) or any(kind not in (SLIDING, FULL) for kind in listed):
        raise ValueError(f"{where}layer_types must list {SLIDING!r} or {FULL!r}, not {listed!r}")
    if len(listed) < num_layers:
        raise ValueError(f"{where}layer_types has {len(listed)} entries for {num_layers} layers")
    return list(listed[:num_layers])


def _linear_factor(params: Any, where: str) -> float | None:
    """None for plain RoPE, the factor of a linear scaling; ConvertError for any other kind."""
    if not params:
        return None
    kind = params.get("rope_type", params.get("type"))
    if kind in (None, "default"):
        return None
    if kind != "linear":
        raise ConvertError(
            f"config.json: {where} rope_type {kind!r} is not supported (linear only)"
        )
    return float(params["factor"])


def _hf_rope(text: dict[str, Any], where: str) -> tuple[float, float, float | None]:
    """(global base, local base, the global layers' linear factor or None), either spelling.

    transformers 5: `rope_parameters: {"full_attention": {...}, "sliding_attention": {...}}`;
    4: `rope_theta`, `rope_local_base_freq` and `rope_scaling` (the global layers' only).
    """
    params = text.get("rope_parameters") or {}
    full, local = params.get(FULL) or {}, params.get(SLIDING) or {}
    if _linear_factor(local, f"{where}rope_parameters.{SLIDING}") is not None:
        raise ConvertError(
            f"config.json: {where}rope_parameters.{SLIDING}: scaling the local layers' RoPE "
            "is not supported"
        )
    if text.get("rope_scaling"):
        factor = _linear_factor(text["rope_scaling"], f"{where}rope_scaling")
    else:
        factor = _linear_factor(full, f"{where}rope_parameters.{FULL}")
    theta = text.get("rope_theta") or full.get("rope_theta") or ROPE_THETA
    local_theta = text.get("rope_local_base_freq") or local.get("rope_theta") or ROPE_LOCAL_THETA
    return float(theta), float(local_theta), factor


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's Gemma3Config (text settings nested in text_config) from config.json."""
    where = "text_config." if model_type == "gemma3" else ""
    given = hf.get("text_config") if model_type == "gemma3" else hf
    if not isinstance(given, dict):
        raise ConvertError("config.json: gemma3 has no text_config object")
    # transformers 5 writes the pattern with a leading underscore.
    text = {**TEXT_DEFAULTS, "sliding_window_pattern": given.get("_sliding_window_pattern", 6)}
    text |= {key: value for key, value in given.items() if value is not None}
    for key in ("attention_bias", "use_bidirectional_attention", "attn_logit_softcapping"):
        if text.get(key):
            raise ConvertError(
                f"config.json: {where}{key}={text[key]!r} is not supported for {model_type}"
            )
    for source, prefix in ((hf, ""), (given, where)):
        if source.get("tie_word_embeddings") is False:
            raise ConvertError(
                f"config.json: {prefix}tie_word_embeddings=False: an untied lm_head is not "
                f"supported for {model_type}"
            )
    theta, local_theta, factor = _hf_rope(text, where)
    layers = int(text["num_hidden_layers"])
    try:
        kinds = layer_types(
            layers, text.get("layer_types"), text["sliding_window_pattern"], f"config.json: {where}"
        )
    except ValueError as err:
        raise ConvertError(str(err)) from None
    window = int(text["sliding_window"])
    context = int(text["max_position_embeddings"])
    if FULL not in kinds:
        # TVM 0.27's KV cache fails at run time when every layer is a sliding one.
        raise ConvertError(
            f"config.json: {where}layer_types has no {FULL!r} layer, which is not supported"
        )
    rules = MODEL_TYPES[model_type]
    # Prefill chunks shorter than the window (base/config.py, ModelTypeRules).
    sizes = hf_sizes(rules, context, max(window - 1, 1) if SLIDING in kinds else -1)
    text_config = {
        "hidden_size": int(text["hidden_size"]),
        "intermediate_size": int(text["intermediate_size"]),
        "num_hidden_layers": layers,
        "attention_bias": False,
        "num_attention_heads": int(text["num_attention_heads"]),
        "num_key_value_heads": int(text["num_key_value_heads"]),
        "head_dim": int(text["head_dim"]),
        "rms_norm_eps": float(text["rms_norm_eps"]),
        "hidden_activation": hf_activation(text, ACTIVATIONS, "hidden_activation", "hidden_act"),
        "position_embedding_base": theta,
        "rope_scaling": {"rope_type": "linear", "factor": factor} if factor else None,
        "rope_local_base_freq": local_theta,
        "context_window_size": context,
        "prefill_chunk_size": sizes["prefill_chunk_size"],
        "query_pre_attn_scalar": int(text["query_pre_attn_scalar"]),
        "sliding_window_size": window,
        "sliding_window_pattern": int(text["sliding_window_pattern"]),
        "layer_types": kinds,
        "final_logit_softcapping": text.get("final_logit_softcapping"),
        "vocab_size": int(text["vocab_size"]),
    }
    return {
        "text_config": text_config,
        "vocab_size": text_config["vocab_size"],
        **sizes,
        "sliding_window_size": -1,
        "attention_sink_size": -1,
        "is_text_model": model_type == "gemma3_text",
    }
