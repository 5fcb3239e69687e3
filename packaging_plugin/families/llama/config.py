"""The llama family's rules without TVM: llama, mistral, qwen2 and qwen3, and their HF configs.

| model_type | fused QKV            | QKV bias       | q/k norm | sliding window | rope key   |
|------------|----------------------|----------------|----------|----------------|------------|
| llama      | `self_attn.qkv_proj` | no             | no       | no             | pos_base * |
| mistral    | `self_attn.qkv_proj` | no             | no       | yes (runtime)  | pos_base * |
| qwen2      | `self_attn.c_attn`   | yes            | no       | no             | rope_theta |
| qwen3      | `self_attn.c_attn`   | attention_bias | yes      | no             | rope_theta |

(* position_embedding_base)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packaging_plugin.families.base.config import (
    ConvertError,
    ModelTypeRules,
    hf_activation,
    hf_common,
    hf_rope,
    hf_sizes,
    hf_tied,
    need,
    refuse_flags,
)

FAMILY = "llama"
# transformers' default rms_norm_eps, for a config.json that has none (MLC's own default differs:
# each variant's `mlc_rms_norm_eps`, for an MLC model_config that has none).
HF_RMS_NORM_EPS = 1e-6


@dataclass(frozen=True)
class LlamaVariant:
    """What distinguishes one model_type of the family."""

    rules: ModelTypeRules
    qkv_name: str  # attribute (and parameter name part) of the fused QKV projection
    qkv_bias: bool  # always a QKV bias (qwen2); else only with model_config attention_bias
    rope_key: str  # the model_config key MLC uses for HF's rope_theta
    mlc_rms_norm_eps: float  # MLC's default when model_config has no rms_norm_eps
    qk_norm: bool = False  # per-head RMSNorm of q and k before RoPE (qwen3)
    attention_bias_key: bool = False  # model_config `attention_bias` adds c_attn and o_proj biases


VARIANTS: dict[str, LlamaVariant] = {
    "llama": LlamaVariant(
        ModelTypeRules("llama"), "qkv_proj", False, "position_embedding_base", 1e-5
    ),
    "mistral": LlamaVariant(
        ModelTypeRules("mistral", sliding_window=True),
        "qkv_proj",
        False,
        "position_embedding_base",
        1e-5,
    ),
    "qwen2": LlamaVariant(
        ModelTypeRules("qwen2", prefill_chunk_cap=2048), "c_attn", True, "rope_theta", 1e-6
    ),
    "qwen3": LlamaVariant(
        ModelTypeRules("qwen3", prefill_chunk_cap=2048),
        "c_attn",
        False,
        "rope_theta",
        1e-6,
        qk_norm=True,
        attention_bias_key=True,
    ),
}
MODEL_TYPES: dict[str, ModelTypeRules] = {name: v.rules for name, v in VARIANTS.items()}
_QWEN = ("qwen2", "qwen3")


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's model_config of the variant (its config dataclass's keys) from config.json."""
    variant = VARIANTS[model_type]
    hf_activation(hf, ("silu",), "hidden_act")
    refuse_flags(hf, model_type, "mlp_bias")
    if not (variant.qkv_bias or variant.attention_bias_key):
        refuse_flags(hf, model_type, "attention_bias")
    if model_type in _QWEN:
        refuse_flags(hf, model_type, "use_sliding_window")
    theta, scaling, partial = hf_rope(hf)
    if partial != 1.0:
        raise ConvertError(f"config.json: partial_rotary_factor is not supported for {model_type}")
    kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
    if scaling is not None and (kind != "llama3" or model_type in _QWEN):
        raise ConvertError(
            f"config.json: rope scaling {kind!r} is not supported for {model_type}"
            + (" (llama3 only)" if model_type in ("llama", "mistral") else "")
        )

    sliding = -1
    if variant.rules.sliding_window and hf.get("sliding_window"):
        # Measured against transformers (tests/test_equivalence.py): a query there sees the last
        # `sliding_window` tokens including itself, while TVM's paged KV cache keeps
        # `sliding_window_size` earlier tokens and adds the query's own, so the window is one
        # smaller here. No attention sinks: Mistral has none (MLC's default of 4 sinks, and its
        # unreduced window, make tokens past the window differ from transformers).
        sliding = int(hf["sliding_window"]) - 1
    # A sliding-window model's context is unbounded (the cache keeps only the window), as in the
    # configs MLC writes for Mistral; prefill chunks are then capped by the window.
    context = -1 if sliding != -1 else int(need(hf, "max_position_embeddings"))
    cfg: dict[str, Any] = {
        **hf_common(hf, HF_RMS_NORM_EPS),
        "tie_word_embeddings": hf_tied(hf),
        variant.rope_key: theta,
        **hf_sizes(variant.rules, context, sliding),
    }
    if model_type in _QWEN:
        cfg["hidden_act"] = "silu"
        # transformers 5 writes `dtype`, 4 wrote `torch_dtype`.
        cfg["dtype"] = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
        if variant.attention_bias_key:
            cfg["attention_bias"] = bool(hf.get("attention_bias", False))
    else:
        cfg["rope_scaling"] = scaling
        cfg["pipeline_parallel_stages"] = 1
    if variant.rules.sliding_window:
        cfg["sliding_window_size"] = sliding
        cfg["attention_sink_size"] = 0 if sliding != -1 else -1
    return cfg
