"""The phi3 family's rules without TVM: Phi-3, Phi-3.5 and Phi-4-mini, and their HF configs."""

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
)

FAMILY = "phi3"
MODEL_TYPES: dict[str, ModelTypeRules] = {"phi3": ModelTypeRules("phi3")}
RMS_NORM_EPS = 1e-5  # transformers' and MLC's default


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's Phi3Config keys from config.json, longrope scaling included."""
    hf_activation(hf, ("silu",), "hidden_act")
    theta, scaling, partial = hf_rope(hf)
    max_positions = int(need(hf, "max_position_embeddings"))
    original = int(
        hf.get("original_max_position_embeddings")
        or (scaling or {}).get("original_max_position_embeddings")
        or max_positions
    )
    mlc_scaling = None
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in ("longrope", "su"):
            raise ConvertError(f"config.json: rope scaling {kind!r} is not supported for phi3")
        # MLC's Phi3Config form: both type keys, and the two lengths the factor comes from.
        mlc_scaling = {
            "type": "longrope",
            "rope_type": "longrope",
            "long_factor": [float(v) for v in need(scaling, "long_factor")],
            "short_factor": [float(v) for v in need(scaling, "short_factor")],
            "max_position_embeddings": max_positions,
            "original_max_position_embeddings": original,
            **{k: scaling[k] for k in ("factor", "attention_factor") if scaling.get(k)},
        }
    return {
        "model_type": model_type,
        **hf_common(hf, RMS_NORM_EPS),
        "max_position_embeddings": max_positions,
        "position_embedding_base": theta,
        "rope_scaling": mlc_scaling,
        "original_max_position_embeddings": original,
        "tie_word_embeddings": hf_tied(hf),
        "partial_rotary_factor": partial,
        **hf_sizes(MODEL_TYPES[model_type], max_positions),
    }
