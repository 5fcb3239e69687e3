"""The gpt2 family's checkpoint tensors -> MLC parameters, in the packed order."""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.mapping import ParamPlan, embedding


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    def with_bias(name: str, *, conv1d: bool = True) -> list[ParamPlan]:
        # GPT-2's Conv1D stores [in, out]: written as [out, in].
        weight = ParamPlan(f"{name}.weight", (f"{name}.weight",), conv1d, transposed=conv1d)
        return [weight, ParamPlan(f"{name}.bias", (f"{name}.bias",), False)]

    plans = [
        embedding("transformer.wte.weight", "transformer.wte.weight"),
        embedding("transformer.wpe.weight", "transformer.wpe.weight"),
    ]
    for i in range(model_config["n_layer"]):
        layer = f"transformer.h.{i}"
        plans += with_bias(f"{layer}.ln_1", conv1d=False)
        plans += with_bias(f"{layer}.attn.c_attn") + with_bias(f"{layer}.attn.c_proj")
        plans += with_bias(f"{layer}.ln_2", conv1d=False)
        plans += with_bias(f"{layer}.mlp.c_fc") + with_bias(f"{layer}.mlp.c_proj")
    plans += with_bias("transformer.ln_f", conv1d=False)
    # MLC keeps an lm_head of its own, a copy of the (tied) token embeddings.
    plans.append(ParamPlan("lm_head.weight", ("transformer.wte.weight",), True))
    return plans
