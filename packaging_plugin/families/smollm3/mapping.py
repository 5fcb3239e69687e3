"""The smollm3 family's checkpoint tensors -> MLC parameters (llama's names), packed order."""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.mapping import (
    ParamPlan,
    embedding,
    fused,
    gated_mlp,
    layer_norms,
)


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    plans = [embedding("model.embed_tokens.weight", "model.embed_tokens.weight")]
    for i in range(model_config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        qkv = tuple(f"{layer}.self_attn.{p}_proj" for p in "qkv")
        plans.append(fused(f"{layer}.self_attn.qkv_proj", qkv))
        plans.append(fused(f"{layer}.self_attn.o_proj", (f"{layer}.self_attn.o_proj",)))
        plans += gated_mlp(layer, layer)
        plans += layer_norms(layer, layer, ("input_layernorm", "post_attention_layernorm"))
    plans += layer_norms("model", "model", ("norm",))
    if not model_config.get("tie_word_embeddings", True):
        plans.append(ParamPlan("lm_head.weight", ("lm_head.weight",), True))
    return plans
