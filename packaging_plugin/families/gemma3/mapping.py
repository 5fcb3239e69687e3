"""The gemma3 family's checkpoint tensors -> MLC parameters, in MLC's packed order.

MLC names both model_types' parameters `language_model.model.*` and keeps q, k and v separate
(`self_attn.q_proj`, `k_proj`, `v_proj`, then `o_proj`, `q_norm`, `k_norm`). A gemma3_text
checkpoint names its tensors `model.*`; a gemma3 one `language_model.model.*` (as transformers
saves Gemma3ForConditionalGeneration), beside the vision tower's, which nothing here reads.
"""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.mapping import (
    ParamPlan,
    embedding,
    fused,
    gated_mlp,
    layer_norms,
)

MLC_PREFIX = "language_model.model"
_HF_PREFIX = {"gemma3_text": "model", "gemma3": "language_model.model"}
_NORMS = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    hf_root, mlc_root = _HF_PREFIX[model_type], MLC_PREFIX
    text = model_config.get("text_config") or model_config
    plans = [embedding(f"{mlc_root}.embed_tokens.weight", f"{hf_root}.embed_tokens.weight")]
    for i in range(text["num_hidden_layers"]):
        hf, mlc = f"{hf_root}.layers.{i}", f"{mlc_root}.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            plans.append(fused(f"{mlc}.self_attn.{proj}", (f"{hf}.self_attn.{proj}",)))
        # RMSNorm weights are stored as HF weight + 1, as MLC's loader does (q/k norms too).
        plans += layer_norms(f"{hf}.self_attn", f"{mlc}.self_attn", ("q_norm", "k_norm"), 1.0)
        plans += gated_mlp(hf, mlc)
        plans += layer_norms(hf, mlc, _NORMS, offset=1.0)
    plans += layer_norms(hf_root, mlc_root, ("norm",), offset=1.0)
    return plans
