"""The gemma family's rules without TVM: gemma and gemma2, and their HF configs."""

from __future__ import annotations

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

FAMILY = "gemma"
MODEL_TYPES: dict[str, ModelTypeRules] = {
    "gemma": ModelTypeRules("gemma"),
    "gemma2": ModelTypeRules("gemma2", sliding_window_bounds_context=True),
}
# All computed as GELU-tanh, as in MLC.
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "gelu_tanh")
RMS_NORM_EPS = 1e-6  # transformers' and MLC's default


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's model_config of gemma or gemma2 (its config dataclass's keys) from config.json."""
    refuse_flags(hf, model_type, "attention_bias")
    if not hf_tied(hf, default=True):
        raise ConvertError(f"config.json: {model_type} with an untied lm_head is not supported")
    theta, scaling, _ = hf_rope(hf)
    if scaling is not None:
        raise ConvertError(f"config.json: rope scaling is not supported for {model_type}")
    context = int(need(hf, "max_position_embeddings"))
    cfg: dict[str, Any] = {
        **hf_common(hf, RMS_NORM_EPS),
        "attention_bias": False,
        "hidden_activation": hf_activation(hf, ACTIVATIONS, "hidden_activation", "hidden_act"),
        "position_embedding_base": theta,
    }
    rules = MODEL_TYPES[model_type]
    if model_type == "gemma2":
        window = int(hf.get("sliding_window") or 0)
        # MLC uses the sliding window as the context window: within it, transformers' local
        # and global layers attend to the same tokens.
        if window and rules.sliding_window_bounds_context:
            context = min(context, window)
        cfg.update(
            attn_logit_softcapping=hf.get("attn_logit_softcapping"),
            final_logit_softcapping=hf.get("final_logit_softcapping"),
            query_pre_attn_scalar=int(need(hf, "query_pre_attn_scalar")),
            sliding_window=window or None,
        )
    cfg.update(hf_sizes(rules, context))
    return cfg
