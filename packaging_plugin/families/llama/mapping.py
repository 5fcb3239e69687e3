"""The llama family's checkpoint tensors -> MLC parameters, in the packed order."""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.mapping import (
    ParamPlan,
    embedding,
    fused,
    gated_mlp,
    layer_norms,
)
from packaging_plugin.families.llama.config import VARIANTS


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    variant = VARIANTS[model_type]
    attention_bias = variant.attention_bias_key and bool(model_config.get("attention_bias"))
    plans = [embedding("model.embed_tokens.weight", "model.embed_tokens.weight")]
    for i in range(model_config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        qkv = tuple(f"{layer}.self_attn.{p}_proj" for p in "qkv")
        plans.append(fused(f"{layer}.self_attn.{variant.qkv_name}", qkv))
        if variant.qkv_bias or attention_bias:
            plans.append(fused(f"{layer}.self_attn.{variant.qkv_name}", qkv, "bias"))
        o_proj = f"{layer}.self_attn.o_proj"
        plans.append(fused(o_proj, (o_proj,)))
        if attention_bias:
            plans.append(fused(o_proj, (o_proj,), "bias"))
        if variant.qk_norm:  # after o_proj, as in MLC's qwen3 (the packed order)
            plans += layer_norms(layer, layer, ("self_attn.q_norm", "self_attn.k_norm"))
        plans += gated_mlp(layer, layer)
        plans += layer_norms(layer, layer, ("input_layernorm", "post_attention_layernorm"))
    plans += layer_norms("model", "model", ("norm",))
    if not model_config.get("tie_word_embeddings", False):  # MLC writes none for Mistral
        plans.append(ParamPlan("lm_head.weight", ("lm_head.weight",), True))
    return plans
