"""How each family's Hugging Face checkpoint maps onto MLC's: model_config and parameters.

`hf_model_config(hf, model_type)` turns a `config.json` (as transformers 4 or 5 writes it) into
the `model_config` MLC's config dataclass of the family writes into mlc-chat-config.json;
`plan_params(model_type, model_config)` lists MLC's parameters in the packed order of the
compiled model, each with the checkpoint tensors it is made of. No TVM, no numpy: plain data
that the converter streams (convert.py) and tests compare against compiled libraries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging_plugin.errors import PackagingError
from packaging_plugin.families import SUPPORTED_MODEL_TYPES


class ConvertError(PackagingError, ValueError):
    """The checkpoint cannot be converted; the message says what is wrong and where."""


@dataclass(frozen=True)
class ParamPlan:
    """One MLC parameter (before quantization) and the HF tensors it is made of."""

    name: str  # MLC name, ending in ".weight" or ".bias"
    sources: tuple[str, ...]  # HF tensor names, concatenated along axis 0
    quantizable: bool  # a linear or embedding weight (q4 turns it into q_weight + q_scale)
    embedding: bool = False  # stored NK even under a KN quantization (q4f16_0), as in MLC
    offset: float = 0.0  # added to every element (Gemma's RMSNorm weights are stored + 1)
    transposed: bool = False  # stored [in, out] (GPT-2's Conv1D): written as [out, in]


def _need(hf: dict[str, Any], key: str) -> Any:
    if hf.get(key) is None:
        raise ConvertError(f"config.json lacks {key!r}")
    return hf[key]


def _rope(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None, float]:
    """(rope_theta, rope scaling or None, partial_rotary_factor) from config.json.

    transformers 4 writes `rope_theta`, `rope_scaling` and `partial_rotary_factor` at the top
    level; 5 writes `rope_parameters: {"rope_theta", "rope_type", ...scaling keys}`.
    """
    params = hf.get("rope_parameters") or {}
    theta = hf.get("rope_theta") or params.get("rope_theta") or 10000.0
    partial = hf.get("partial_rotary_factor") or params.get("partial_rotary_factor") or 1.0
    scaling = hf.get("rope_scaling") or {
        k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")
    }
    kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
    if kind in (None, "default"):
        return float(theta), None, float(partial)
    return float(theta), dict(scaling), float(partial)


def _heads(hf: dict[str, Any]) -> dict[str, int]:
    hidden, heads = int(_need(hf, "hidden_size")), int(_need(hf, "num_attention_heads"))
    return {
        "num_attention_heads": heads,
        "num_key_value_heads": int(hf.get("num_key_value_heads") or heads),
        "head_dim": int(hf.get("head_dim") or hidden // heads),
    }


def _common(hf: dict[str, Any], default_eps: float) -> dict[str, Any]:
    return {
        "hidden_size": int(_need(hf, "hidden_size")),
        "intermediate_size": int(_need(hf, "intermediate_size")),
        "num_hidden_layers": int(_need(hf, "num_hidden_layers")),
        "rms_norm_eps": float(hf.get("rms_norm_eps") or default_eps),
        "vocab_size": int(_need(hf, "vocab_size")),
        **_heads(hf),
    }


def _sizes(context: int, sliding: int, prefill_cap: int) -> dict[str, int]:
    return {
        "context_window_size": context,
        "prefill_chunk_size": min(c for c in (context, sliding, prefill_cap) if c > 0),
        "tensor_parallel_shards": 1,
        "max_batch_size": 1,
    }


def _no_flags(hf: dict[str, Any], model_type: str, *keys: str) -> None:
    for key in keys:
        if hf.get(key):
            raise ConvertError(f"config.json: {key}={hf[key]!r} is not supported for {model_type}")


def _activation(hf: dict[str, Any], allowed: tuple[str, ...], *keys: str) -> str:
    act = next((hf[k] for k in keys if hf.get(k)), allowed[0])
    if act not in allowed:
        raise ConvertError(
            f"config.json: {keys[0]} {act!r} is not supported (expected {' or '.join(allowed)})"
        )
    return str(act)


def _tied(hf: dict[str, Any], default: bool = False) -> bool:
    return bool(hf.get("tie_word_embeddings", default))


# ------------------------------------------------------------------------------------------------
# llama, mistral, qwen2, qwen3


@dataclass(frozen=True)
class _LlamaLike:
    qkv_name: str  # MLC's fused QKV parameter name
    qkv_bias: bool
    rope_key: str  # the model_config key MLC uses for HF's rope_theta
    prefill_cap: int  # MLC's default prefill_chunk_size is min(context window, cap)
    qk_norm: bool = False  # per-head q_norm / k_norm weights (qwen3)
    # config.json `attention_bias` gives c_attn and o_proj biases (qwen3); MLC keeps the flag.
    attention_bias_key: bool = False


_LLAMA_LIKE: dict[str, _LlamaLike] = {
    "llama": _LlamaLike("qkv_proj", False, "position_embedding_base", 8192),
    "mistral": _LlamaLike("qkv_proj", False, "position_embedding_base", 8192),
    "qwen2": _LlamaLike("c_attn", True, "rope_theta", 2048),
    "qwen3": _LlamaLike("c_attn", False, "rope_theta", 2048, qk_norm=True, attention_bias_key=True),
}


def _llama_like_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    fam = _LLAMA_LIKE[model_type]
    _activation(hf, ("silu",), "hidden_act")
    _no_flags(hf, model_type, "mlp_bias")
    if not (fam.qkv_bias or fam.attention_bias_key):
        _no_flags(hf, model_type, "attention_bias")
    if model_type in ("qwen2", "qwen3"):
        _no_flags(hf, model_type, "use_sliding_window")
    theta, scaling, partial = _rope(hf)
    if partial != 1.0:
        raise ConvertError(f"config.json: partial_rotary_factor is not supported for {model_type}")
    kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
    if scaling is not None and (kind != "llama3" or model_type in ("qwen2", "qwen3")):
        raise ConvertError(
            f"config.json: rope scaling {kind!r} is not supported for {model_type}"
            + (" (llama3 only)" if model_type in ("llama", "mistral") else "")
        )

    sliding = -1
    if model_type == "mistral" and hf.get("sliding_window"):
        # Measured against transformers (tests/test_equivalence.py): a query there sees the last
        # `sliding_window` tokens including itself, while TVM's paged KV cache keeps
        # `sliding_window_size` earlier tokens and adds the query's own, so the window is one
        # smaller here. No attention sinks: Mistral has none (MLC's default of 4 sinks, and its
        # unreduced window, make tokens past the window differ from transformers).
        sliding = int(hf["sliding_window"]) - 1
    # A sliding-window model's context is unbounded (the cache keeps only the window), as in the
    # configs MLC writes for Mistral; prefill chunks are then capped by the window.
    context = -1 if sliding != -1 else int(_need(hf, "max_position_embeddings"))
    cfg: dict[str, Any] = {
        **_common(hf, 1e-6),
        "tie_word_embeddings": _tied(hf),
        fam.rope_key: theta,
        **_sizes(context, sliding, fam.prefill_cap),
    }
    if model_type in ("qwen2", "qwen3"):
        cfg["hidden_act"] = "silu"
        # transformers 5 writes `dtype`, 4 wrote `torch_dtype`.
        cfg["dtype"] = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
        if fam.attention_bias_key:
            cfg["attention_bias"] = bool(hf.get("attention_bias", False))
    else:
        cfg["rope_scaling"] = scaling
        cfg["pipeline_parallel_stages"] = 1
    if model_type == "mistral":
        cfg["sliding_window_size"] = sliding
        cfg["attention_sink_size"] = 0 if sliding != -1 else -1
    return cfg


def _layer_norms(hf: str, mlc: str, names: tuple[str, ...], offset: float = 0.0) -> list[ParamPlan]:
    return [
        ParamPlan(f"{mlc}.{n}.weight", (f"{hf}.{n}.weight",), False, offset=offset) for n in names
    ]


def _fused(mlc: str, hf_parts: tuple[str, ...], suffix: str = "weight") -> ParamPlan:
    return ParamPlan(f"{mlc}.{suffix}", tuple(f"{p}.{suffix}" for p in hf_parts), suffix != "bias")


def _llama_like_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    fam = _LLAMA_LIKE[model_type]
    attention_bias = fam.attention_bias_key and bool(model_config.get("attention_bias"))
    plans = [
        ParamPlan("model.embed_tokens.weight", ("model.embed_tokens.weight",), True, embedding=True)
    ]
    for i in range(model_config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        qkv = tuple(f"{layer}.self_attn.{p}_proj" for p in "qkv")
        plans.append(_fused(f"{layer}.self_attn.{fam.qkv_name}", qkv))
        if fam.qkv_bias or attention_bias:
            plans.append(_fused(f"{layer}.self_attn.{fam.qkv_name}", qkv, "bias"))
        o_proj = f"{layer}.self_attn.o_proj"
        plans.append(_fused(o_proj, (o_proj,)))
        if attention_bias:
            plans.append(_fused(o_proj, (o_proj,), "bias"))
        if fam.qk_norm:  # after o_proj, as in MLC's qwen3 (the packed order)
            plans += _layer_norms(layer, layer, ("self_attn.q_norm", "self_attn.k_norm"))
        plans += _mlp(layer, layer)
        plans += _layer_norms(layer, layer, ("input_layernorm", "post_attention_layernorm"))
    plans += _layer_norms("model", "model", ("norm",))
    if not model_config["tie_word_embeddings"]:
        plans.append(ParamPlan("lm_head.weight", ("lm_head.weight",), True))
    return plans


def _mlp(hf_layer: str, mlc_layer: str) -> list[ParamPlan]:
    """`gate_up_proj` ([gate; up]) and `down_proj` from the checkpoint's separate gate and up."""
    parts = (f"{hf_layer}.mlp.gate_proj", f"{hf_layer}.mlp.up_proj")
    return [
        _fused(f"{mlc_layer}.mlp.gate_up_proj", parts),
        _fused(f"{mlc_layer}.mlp.down_proj", (f"{hf_layer}.mlp.down_proj",)),
    ]


# ------------------------------------------------------------------------------------------------
# gemma, gemma2

_GEMMA_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "gelu_tanh")


def _gemma_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    _no_flags(hf, model_type, "attention_bias")
    if not _tied(hf, default=True):
        raise ConvertError(f"config.json: {model_type} with an untied lm_head is not supported")
    theta, scaling, _ = _rope(hf)
    if scaling is not None:
        raise ConvertError(f"config.json: rope scaling is not supported for {model_type}")
    context = int(_need(hf, "max_position_embeddings"))
    cfg: dict[str, Any] = {
        **_common(hf, 1e-6),
        "attention_bias": False,
        "hidden_activation": _activation(hf, _GEMMA_ACTIVATIONS, "hidden_activation", "hidden_act"),
        "position_embedding_base": theta,
    }
    if model_type == "gemma2":
        window = int(hf.get("sliding_window") or 0)
        # MLC uses the sliding window as the context window: within it, transformers' local
        # and global layers attend to the same tokens.
        if window:
            context = min(context, window)
        cfg.update(
            attn_logit_softcapping=hf.get("attn_logit_softcapping"),
            final_logit_softcapping=hf.get("final_logit_softcapping"),
            query_pre_attn_scalar=int(_need(hf, "query_pre_attn_scalar")),
            sliding_window=window or None,
        )
    cfg.update(_sizes(context, -1, 8192))
    return cfg


def _gemma_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    norms = ["input_layernorm", "post_attention_layernorm"]
    if model_type == "gemma2":
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    plans = [
        ParamPlan("model.embed_tokens.weight", ("model.embed_tokens.weight",), True, embedding=True)
    ]
    for i in range(model_config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        attn = f"{layer}.self_attn"
        plans.append(_fused(f"{attn}.qkv_proj", tuple(f"{attn}.{p}_proj" for p in "qkv")))
        plans.append(_fused(f"{attn}.o_proj", (f"{attn}.o_proj",)))
        plans += _mlp(layer, layer)
        plans += _layer_norms(layer, layer, tuple(norms), offset=1.0)
    plans += _layer_norms("model", "model", ("norm",), offset=1.0)
    return plans


# ------------------------------------------------------------------------------------------------
# phi3 (Phi-3, Phi-3.5, Phi-4-mini)


def _phi3_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    _activation(hf, ("silu",), "hidden_act")
    theta, scaling, partial = _rope(hf)
    max_positions = int(_need(hf, "max_position_embeddings"))
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
            "long_factor": [float(v) for v in _need(scaling, "long_factor")],
            "short_factor": [float(v) for v in _need(scaling, "short_factor")],
            "max_position_embeddings": max_positions,
            "original_max_position_embeddings": original,
            **{k: scaling[k] for k in ("factor", "attention_factor") if scaling.get(k)},
        }
    return {
        "model_type": model_type,
        **_common(hf, 1e-5),
        "max_position_embeddings": max_positions,
        "position_embedding_base": theta,
        "rope_scaling": mlc_scaling,
        "original_max_position_embeddings": original,
        "tie_word_embeddings": _tied(hf),
        "partial_rotary_factor": partial,
        **_sizes(max_positions, -1, 8192),
    }


def _phi3_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    plans = [
        ParamPlan("transformer.embd.weight", ("model.embed_tokens.weight",), True, embedding=True)
    ]
    for i in range(model_config["num_hidden_layers"]):
        hf, mlc = f"model.layers.{i}", f"transformer.h.{i}"
        plans += [
            ParamPlan(f"{mlc}.ln.weight", (f"{hf}.input_layernorm.weight",), False),
            _fused(f"{mlc}.mixer.qkv_proj", (f"{hf}.self_attn.qkv_proj",)),
            _fused(f"{mlc}.mixer.out_proj", (f"{hf}.self_attn.o_proj",)),
            _fused(f"{mlc}.mlp.gate_up_proj", (f"{hf}.mlp.gate_up_proj",)),
            _fused(f"{mlc}.mlp.down_proj", (f"{hf}.mlp.down_proj",)),
        ]
        plans += _layer_norms(hf, mlc, ("post_attention_layernorm",))
    plans.append(ParamPlan("transformer.norm.weight", ("model.norm.weight",), False))
    if not model_config["tie_word_embeddings"]:
        plans.append(ParamPlan("lm_head.weight", ("lm_head.weight",), True))
    return plans


# ------------------------------------------------------------------------------------------------
# gpt2


def _gpt2_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    _activation(hf, ("gelu_new", "gelu_pytorch_tanh"), "activation_function")
    hidden, heads = int(_need(hf, "n_embd")), int(_need(hf, "n_head"))
    n_positions = int(_need(hf, "n_positions"))
    inner = hf.get("n_inner")
    return {
        "vocab_size": int(_need(hf, "vocab_size")),
        "n_embd": hidden,
        "n_layer": int(_need(hf, "n_layer")),
        "n_head": heads,
        "layer_norm_epsilon": float(hf.get("layer_norm_epsilon") or 1e-5),
        "n_inner": 4 * hidden if inner in (None, -1) else int(inner),
        "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx")),
        "head_dim": hidden // heads,
        # The rows of the position embedding, kept apart from the context window (models/gpt2.py).
        "n_positions": n_positions,
        **_sizes(n_positions, -1, 8192),
    }


def _gpt2_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    def with_bias(name: str, *, conv1d: bool = True) -> list[ParamPlan]:
        weight = ParamPlan(f"{name}.weight", (f"{name}.weight",), conv1d, transposed=conv1d)
        return [weight, ParamPlan(f"{name}.bias", (f"{name}.bias",), False)]

    plans = [
        ParamPlan("transformer.wte.weight", ("transformer.wte.weight",), True, embedding=True),
        ParamPlan("transformer.wpe.weight", ("transformer.wpe.weight",), True, embedding=True),
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


# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mapping:
    model_config: Callable[[dict[str, Any], str], dict[str, Any]]
    params: Callable[[str, dict[str, Any]], list[ParamPlan]]


_MAPPINGS: dict[str, _Mapping] = {
    **{name: _Mapping(_llama_like_config, _llama_like_params) for name in _LLAMA_LIKE},
    "gemma": _Mapping(_gemma_config, _gemma_params),
    "gemma2": _Mapping(_gemma_config, _gemma_params),
    "phi3": _Mapping(_phi3_config, _phi3_params),
    "gpt2": _Mapping(_gpt2_config, _gpt2_params),
}
assert set(_MAPPINGS) == set(SUPPORTED_MODEL_TYPES), "every compilable family converts"


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's model_config for the family (keys of MLC's config dataclass), from config.json."""
    return _MAPPINGS[model_type].model_config(hf, model_type)


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    """MLC's parameters in the order of the compiled model's packed tuple (`_metadata.params`)."""
    return _MAPPINGS[model_type].params(model_type, model_config)
