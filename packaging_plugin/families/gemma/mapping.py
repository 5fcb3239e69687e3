"""The gemma family's checkpoint tensors -> MLC parameters, in the packed order."""

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
    norms = ["input_layernorm", "post_attention_layernorm"]
    if model_type == "gemma2":
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    plans = [embedding("model.embed_tokens.weight", "model.embed_tokens.weight")]
    for i in range(model_config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        attn = f"{layer}.self_attn"
        plans.append(fused(f"{attn}.qkv_proj", tuple(f"{attn}.{p}_proj" for p in "qkv")))
        plans.append(fused(f"{attn}.o_proj", (f"{attn}.o_proj",)))
        plans += gated_mlp(layer, layer)
        # RMSNorm weights are stored as HF weight + 1, as MLC's loader does.
        plans += layer_norms(layer, layer, tuple(norms), offset=1.0)
    plans += layer_norms("model", "model", ("norm",), offset=1.0)
    return plans
