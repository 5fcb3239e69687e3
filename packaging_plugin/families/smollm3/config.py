"""The smollm3 family's rules without TVM, and its HF config -> MLC model_config.

MLC has no smollm3: the model_config uses llama's spelling (`position_embedding_base`,
`rope_scaling`, `tie_word_embeddings`, ...) plus `no_rope_layers`, transformers' per-layer list
(1: the layer applies RoPE, 0: it does not), always written out in full, and
`no_rope_layer_interval`, which it is derived from where config.json has no list.
"""

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
    is_int,
    need,
    refuse_flags,
)

FAMILY = "smollm3"
MODEL_TYPES: dict[str, ModelTypeRules] = {"smollm3": ModelTypeRules("smollm3")}
RMS_NORM_EPS = 1e-6  # transformers' default
ROPE_THETA = 2000000.0  # transformers' default for SmolLM3Config
NO_ROPE_LAYER_INTERVAL = 4  # transformers' default


def rope_layers(num_layers: int, listed: Any, interval: Any, where: str) -> list[int]:
    """Per layer, 1 where the layer applies RoPE: `listed`, or every `interval`-th layer left out
    (layer i has none when (i + 1) % interval == 0), as transformers derives it."""
    if listed is None:
        step = NO_ROPE_LAYER_INTERVAL if interval is None else interval
        if not is_int(step) or step < 1:
            raise ValueError(f"{where}no_rope_layer_interval {step!r} is not a positive integer")
        return [int((i + 1) % step != 0) for i in range(num_layers)]
    if not isinstance(listed, list) or any(v not in (0, 1) for v in listed):
        raise ValueError(f"{where}no_rope_layers must be a list of 0 and 1, not {listed!r}")
    if len(listed) < num_layers:
        raise ValueError(f"{where}no_rope_layers has {len(listed)} entries for {num_layers} layers")
    return [int(v) for v in listed[:num_layers]]


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC-style (llama-spelled) model_config of smollm3 from config.json."""
    hf_activation(hf, ("silu",), "hidden_act")
    refuse_flags(hf, model_type, "attention_bias", "mlp_bias", "use_sliding_window")
    theta, scaling, partial = hf_rope(hf)
    if partial != 1.0:
        raise ConvertError(f"config.json: partial_rotary_factor is not supported for {model_type}")
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        raise ConvertError(f"config.json: rope scaling {kind!r} is not supported for {model_type}")
    cfg = hf_common(hf, RMS_NORM_EPS)
    try:
        layers = rope_layers(
            cfg["num_hidden_layers"],
            hf.get("no_rope_layers"),
            hf.get("no_rope_layer_interval"),
            "config.json: ",
        )
    except ValueError as err:
        raise ConvertError(str(err)) from None
    has_theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta")
    return {
        **cfg,
        "tie_word_embeddings": hf_tied(hf, default=True),
        "position_embedding_base": theta if has_theta else ROPE_THETA,
        "rope_scaling": None,
        "no_rope_layers": layers,
        "no_rope_layer_interval": int(hf.get("no_rope_layer_interval") or NO_ROPE_LAYER_INTERVAL),
        "pipeline_parallel_stages": 1,
        **hf_sizes(MODEL_TYPES[model_type], int(need(hf, "max_position_embeddings"))),
    }
