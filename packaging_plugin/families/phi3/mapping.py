"""The phi3 family's checkpoint tensors -> MLC parameters, in the packed order (MLC names them
like its older Phi models; the checkpoint's q/k/v and gate/up are already fused)."""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.mapping import ParamPlan, embedding, fused, layer_norms


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    plans = [embedding("transformer.embd.weight", "model.embed_tokens.weight")]
    for i in range(model_config["num_hidden_layers"]):
        hf, mlc = f"model.layers.{i}", f"transformer.h.{i}"
        plans += [
            ParamPlan(f"{mlc}.ln.weight", (f"{hf}.input_layernorm.weight",), False),
            fused(f"{mlc}.mixer.qkv_proj", (f"{hf}.self_attn.qkv_proj",)),
            fused(f"{mlc}.mixer.out_proj", (f"{hf}.self_attn.o_proj",)),
            fused(f"{mlc}.mlp.gate_up_proj", (f"{hf}.mlp.gate_up_proj",)),
            fused(f"{mlc}.mlp.down_proj", (f"{hf}.mlp.down_proj",)),
        ]
        plans += layer_norms(hf, mlc, ("post_attention_layernorm",))
    plans.append(ParamPlan("transformer.norm.weight", ("model.norm.weight",), False))
    if not model_config["tie_word_embeddings"]:
        plans.append(ParamPlan("lm_head.weight", ("lm_head.weight",), True))
    return plans
