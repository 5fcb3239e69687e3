"""The phi family's checkpoint tensors -> MLC parameters, in the packed order.

MLC's names: `transformer.embd`, `transformer.h.{i}.{ln, mixer.Wqkv, mixer.out_proj, mlp.fc1,
mlp.fc2}` and `lm_head.{ln, linear}`, every LayerNorm and linear with a bias. A `phi` checkpoint
(transformers) has separate q/k/v projections, fused here into `Wqkv`; a `phi-msft` checkpoint
already uses MLC's names, but for its embedding (`transformer.embd.wte`).
"""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.mapping import ParamPlan, embedding, fused
from packaging_plugin.families.phi.config import num_layers


def _norm(mlc: str, hf: str) -> list[ParamPlan]:
    return [ParamPlan(f"{mlc}.{p}", (f"{hf}.{p}",), False) for p in ("weight", "bias")]


def _linear(mlc: str, hf_parts: tuple[str, ...]) -> list[ParamPlan]:
    return [fused(mlc, hf_parts), fused(mlc, hf_parts, "bias")]


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    msft = model_type == "phi-msft"
    embed = "transformer.embd.wte.weight" if msft else "model.embed_tokens.weight"
    plans = [embedding("transformer.embd.weight", embed)]
    for i in range(num_layers(model_config)):
        mlc = f"transformer.h.{i}"
        hf = mlc if msft else f"model.layers.{i}"
        attn = f"{hf}.mixer" if msft else f"{hf}.self_attn"
        qkv = (f"{attn}.Wqkv",) if msft else tuple(f"{attn}.{p}_proj" for p in "qkv")
        plans += _norm(f"{mlc}.ln", f"{hf}.ln" if msft else f"{hf}.input_layernorm")
        plans += _linear(f"{mlc}.mixer.Wqkv", qkv)
        plans += _linear(
            f"{mlc}.mixer.out_proj", (f"{attn}.out_proj" if msft else f"{attn}.dense",)
        )
        plans += _linear(f"{mlc}.mlp.fc1", (f"{hf}.mlp.fc1",))
        plans += _linear(f"{mlc}.mlp.fc2", (f"{hf}.mlp.fc2",))
    plans += _norm("lm_head.ln", "lm_head.ln" if msft else "model.final_layernorm")
    plans += _linear("lm_head.linear", ("lm_head.linear" if msft else "lm_head",))
    return plans
