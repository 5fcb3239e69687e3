"""The phi family's rules without TVM, and its HF configs: `phi` and the legacy `phi-msft`.

MLC knows two spellings of one architecture. `phi` is transformers' PhiForCausalLM (Phi-2,
Phi-1.5), whose config.json MLC keeps in transformers' words (`hidden_size`,
`num_hidden_layers`, `partial_rotary_factor`, `layer_norm_eps`, ...). `phi-msft` is the older
remote-code checkpoint with MLC's own words (`n_embd`, `n_layer`, `n_head`, `n_head_kv`,
`rotary_dim`, `n_inner`, `n_positions`, `layer_norm_epsilon`). `PHI_KEYS` pairs them: the model
reads either, whatever the model_type says, so an MLC model of either spelling compiles.
"""

from __future__ import annotations

from typing import Any

from packaging_plugin.families.base.config import (
    ConvertError,
    ModelTypeRules,
    hf_activation,
    hf_rope,
    hf_sizes,
    hf_tied,
    need,
    refuse_flags,
)

FAMILY = "phi"
MODEL_TYPES: dict[str, ModelTypeRules] = {
    "phi": ModelTypeRules("phi"),
    "phi-msft": ModelTypeRules("phi-msft"),
}
# gelu_new is GELU's tanh approximation, which the model computes (as MLC's does).
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5  # transformers' and MLC's default
DEFAULT_PARTIAL_ROTARY = 0.5  # transformers' PhiConfig default (Phi-2 sets 0.4)
# (phi spelling, phi-msft spelling) of each size.
PHI_KEYS: dict[str, tuple[str, str]] = {
    "hidden": ("hidden_size", "n_embd"),
    "layers": ("num_hidden_layers", "n_layer"),
    "heads": ("num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads", "n_head_kv"),
    "inner": ("intermediate_size", "n_inner"),
    "eps": ("layer_norm_eps", "layer_norm_epsilon"),
}


def read_key(cfg: dict[str, Any], what: str) -> Any:
    """The value of `what` (a PHI_KEYS name) in either spelling, or None."""
    for key in PHI_KEYS[what]:
        if cfg.get(key) not in (None, 0):
            return cfg[key]
    return None


def num_layers(cfg: dict[str, Any]) -> int:
    layers = read_key(cfg, "layers")
    if layers is None:
        raise ValueError("phi model_config lacks num_hidden_layers (or n_layer)")
    return int(layers)


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's model_config for `phi` (transformers' keys) or `phi-msft` (MLC's) from config.json."""
    if model_type == "phi-msft":
        return _msft_model_config(hf)
    hf_activation(hf, ACTIVATIONS, "hidden_act")
    refuse_flags(hf, model_type, "qk_layernorm")
    if hf_tied(hf):
        raise ConvertError("config.json: phi with tie_word_embeddings is not supported")
    theta, scaling, partial = hf_rope(hf)
    if scaling is not None:
        raise ConvertError("config.json: rope scaling is not supported for phi")
    hidden, heads = int(need(hf, "hidden_size")), int(need(hf, "num_attention_heads"))
    # transformers 4 and 5 default the factor to 0.5 when config.json has none.
    if "partial_rotary_factor" not in hf and "partial_rotary_factor" not in (
        hf.get("rope_parameters") or {}
    ):
        partial = DEFAULT_PARTIAL_ROTARY
    context = int(need(hf, "max_position_embeddings"))
    return {
        "vocab_size": int(need(hf, "vocab_size")),
        "hidden_size": hidden,
        "intermediate_size": int(hf.get("intermediate_size") or 4 * hidden),
        "num_hidden_layers": int(need(hf, "num_hidden_layers")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(hf.get("num_key_value_heads") or heads),
        "head_dim": int(hf.get("head_dim") or hidden // heads),
        "layer_norm_eps": float(hf.get("layer_norm_eps") or LAYER_NORM_EPS),
        "position_embedding_base": theta,
        "partial_rotary_factor": partial,
        **hf_sizes(MODEL_TYPES[model_type], context),
    }


def _msft_model_config(hf: dict[str, Any]) -> dict[str, Any]:
    hf_activation(hf, ACTIVATIONS, "activation_function")
    hidden, heads = int(need(hf, "n_embd")), int(need(hf, "n_head"))
    n_positions = int(need(hf, "n_positions"))
    return {
        "vocab_size": int(need(hf, "vocab_size")),
        "n_positions": n_positions,
        "n_embd": hidden,
        "n_layer": int(need(hf, "n_layer")),
        "n_inner": int(hf.get("n_inner") or 4 * hidden),
        "n_head": heads,
        "n_head_kv": int(hf.get("n_head_kv") or heads),
        "head_dim": hidden // heads,
        "rotary_dim": int(need(hf, "rotary_dim")),
        "position_embedding_base": float(hf.get("rope_theta") or 10000.0),
        "layer_norm_epsilon": float(hf.get("layer_norm_epsilon") or LAYER_NORM_EPS),
        **hf_sizes(MODEL_TYPES["phi-msft"], n_positions),
    }
