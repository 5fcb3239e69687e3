"""The gpt_neox family's checkpoint tensors -> MLC parameters, in the packed order.

The names are the checkpoint's own. Its fused `query_key_value` holds, per head, that head's
q, k and v rows ([heads, 3, head_dim] on the output axis); MLC's converter reorders the rows to
[all q heads; all k heads; all v heads], the order the paged KV cache's fused attention reads,
and so does this plan (weight and bias alike), so MLC's converted weights and ours are the same.
"""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.mapping import ParamPlan, embedding
from packaging_plugin.families.gpt_neox.config import FFN_OUT_DTYPE

QKV_PARTS = 3  # q, k, v


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    heads = int(model_config["num_attention_heads"])
    attention_bias = bool(model_config.get("attention_bias", True))
    ffn_dtype = str(model_config.get("ffn_out_dtype") or FFN_OUT_DTYPE)

    def norm(name: str) -> list[ParamPlan]:
        return [ParamPlan(f"{name}.{p}", (f"{name}.{p}",), False) for p in ("weight", "bias")]

    def linear(
        name: str,
        bias: bool,
        *,
        deinterleave: tuple[int, int] | None = None,
        bias_dtype: str | None = None,
    ) -> list[ParamPlan]:
        def plan(part: str, quantizable: bool, dtype: str | None = None) -> ParamPlan:
            source = (f"{name}.{part}",)
            return ParamPlan(source[0], source, quantizable, deinterleave=deinterleave, dtype=dtype)

        return [plan("weight", True)] + ([plan("bias", False, bias_dtype)] if bias else [])

    plans = [embedding("gpt_neox.embed_in.weight", "gpt_neox.embed_in.weight")]
    for i in range(int(model_config["num_hidden_layers"])):
        layer = f"gpt_neox.layers.{i}"
        # MLC's attribute order: both norms first, then attention, then the MLP.
        plans += norm(f"{layer}.input_layernorm") + norm(f"{layer}.post_attention_layernorm")
        plans += linear(
            f"{layer}.attention.query_key_value",
            attention_bias,
            deinterleave=(heads, QKV_PARTS),
        )
        plans += linear(f"{layer}.attention.dense", attention_bias)
        plans += linear(f"{layer}.mlp.dense_h_to_4h", True, bias_dtype=ffn_dtype)
        plans += linear(f"{layer}.mlp.dense_4h_to_h", True, bias_dtype=ffn_dtype)
    plans += norm("gpt_neox.final_layer_norm")
    plans.append(ParamPlan("embed_out.weight", ("embed_out.weight",), True))
    return plans
