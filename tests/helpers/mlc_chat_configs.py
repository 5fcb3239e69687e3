"""mlc-chat-config.json as MLC's gen_config writes it for the models of MLC's example apps.

Real sizes (hidden sizes, layers, heads, vocabularies, context windows): each model compiles at
the shape the app ships, and its parameters have MLC's real shapes. No weights are needed for
either. `chat_config(repo)` takes the repository name under `mlc-ai/` (`<model>-<quant>-MLC`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]


def _sizes(context: int, prefill: int) -> dict[str, Any]:
    """The size keys gen_config repeats inside model_config."""
    return {
        "context_window_size": context,
        "prefill_chunk_size": prefill,
        "tensor_parallel_shards": 1,
        "max_batch_size": 80,
    }


def _conv_template(name: str, stop_token_ids: list[int]) -> dict[str, Any]:
    """A small conversation template: the packager passes it through, the app reads it."""
    return {
        "name": name,
        "system_template": "{system_message}",
        "system_message": "",
        "roles": {"user": "user", "assistant": "assistant"},
        "seps": ["\n"],
        "role_content_sep": ": ",
        "role_empty_sep": ":",
        "stop_str": [],
        "stop_token_ids": stop_token_ids,
        "messages": [],
    }


def _wrap(
    model_type: str,
    model_config: dict[str, Any],
    *,
    template: str,
    bos: int,
    eos: int | list[int],
    pad: int = 0,
    sliding_window: int = -1,
    attention_sink: int = -1,
) -> dict[str, Any]:
    """The top level gen_config writes around a model_config (quantization set by the caller)."""
    stops = eos if isinstance(eos, list) else [eos]
    return {
        "version": "0.1.0",
        "model_type": model_type,
        "quantization": "",
        "model_config": model_config,
        "vocab_size": model_config.get("vocab_size"),
        "context_window_size": model_config["context_window_size"],
        "sliding_window_size": sliding_window,
        "prefill_chunk_size": model_config["prefill_chunk_size"],
        "attention_sink_size": attention_sink,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": 0.6,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "top_p": 0.9,
        "tokenizer_files": list(TOKENIZER_FILES),
        "tokenizer_info": {
            "token_postproc_method": "byte_level",
            "prepend_space_in_encode": False,
            "strip_space_in_decode": False,
        },
        "conv_template": _conv_template(template, stops),
        "pad_token_id": pad,
        "bos_token_id": bos,
        "eos_token_id": eos,
    }


def _llama3(hidden: int, inter: int, layers: int, heads: int, context: int, **extra: Any) -> dict:
    model_config = {
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "rms_norm_eps": 1e-05,
        "vocab_size": 128256,
        "position_embedding_base": 500000.0,
        "num_key_value_heads": 8,
        "head_dim": 128,
        **_sizes(context, 8192),  # MLC's llama default: min(context window, 8192)
        "pipeline_parallel_stages": 1,
        **extra,
    }
    return _wrap("llama", model_config, template="llama-3", bos=128000, eos=[128001, 128009])


def llama3_8b() -> dict[str, Any]:
    """Llama-3-8B-Instruct."""
    return _llama3(4096, 14336, 32, 32, 8192, tie_word_embeddings=False)


def llama32_3b() -> dict[str, Any]:
    """Llama-3.2-3B-Instruct: tied embeddings, llama3 rope scaling."""
    scaling = {
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    }
    return _llama3(3072, 8192, 28, 24, 131072, tie_word_embeddings=True, rope_scaling=scaling)


def mistral_7b_v03() -> dict[str, Any]:
    """Mistral-7B-Instruct-v0.3: config.json's sliding_window is null, which MLC's mistral config
    turns into -1 (none; an app override may set one), with its default attention sink of 4."""
    model_config = {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "rms_norm_eps": 1e-05,
        "vocab_size": 32768,
        "position_embedding_base": 1000000.0,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "sliding_window_size": -1,
        "attention_sink_size": 4,
        **_sizes(32768, 8192),
    }
    return _wrap(
        "mistral", model_config, template="mistral_default", bos=1, eos=2, attention_sink=4
    )


def _qwen3(hidden: int, inter: int) -> dict[str, Any]:
    model_config = {
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "attention_bias": False,
        "num_attention_heads": 16,
        "num_hidden_layers": 28,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "head_dim": 128,
        **_sizes(40960, 2048),
    }
    return _wrap("qwen3", model_config, template="qwen2", bos=151643, eos=[151645, 151643])


def qwen3_06b() -> dict[str, Any]:
    return _qwen3(1024, 3072)


def qwen3_17b() -> dict[str, Any]:
    return _qwen3(2048, 6144)


def gemma2_2b() -> dict[str, Any]:
    """gemma-2-2b-it: soft-capped logits, a sliding window on alternate layers."""
    model_config = {
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "attention_bias": False,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "num_hidden_layers": 26,
        "rms_norm_eps": 1e-06,
        "vocab_size": 256000,
        "hidden_activation": "gelu_pytorch_tanh",
        "position_embedding_base": 10000.0,
        **_sizes(4096, 2048),
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
    }
    return _wrap("gemma2", model_config, template="gemma_instruction", bos=2, eos=[1, 107])


def phi35_mini() -> dict[str, Any]:
    """Phi-3.5-mini-instruct: longrope factors (made up here, 48 = head_dim 96 / 2)."""
    factors = [1.0 + 0.05 * i for i in range(48)]
    model_config = {
        "model_type": "phi3",
        "hidden_size": 3072,
        "vocab_size": 32064,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "intermediate_size": 8192,
        "rms_norm_eps": 1e-05,
        "num_key_value_heads": 32,
        "max_position_embeddings": 131072,
        "position_embedding_base": 10000.0,
        "rope_scaling": {
            "long_factor": [2 * f for f in factors],
            "short_factor": factors,
            "type": "longrope",
            "rope_type": "longrope",
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
        },
        "original_max_position_embeddings": 4096,
        **_sizes(131072, 2048),
        "head_dim": 96,
        "tie_word_embeddings": False,
        "partial_rotary_factor": 1.0,
    }
    return _wrap("phi3", model_config, template="phi-3", bos=1, eos=[32007, 32001, 32000])


def phi2() -> dict[str, Any]:
    """phi-2, its model_config in MLC's older spelling (n_embd, n_layer, ...)."""
    model_config = {
        "vocab_size": 51200,
        "n_positions": 2048,
        "n_embd": 2560,
        "n_layer": 32,
        "n_inner": 10240,
        "n_head": 32,
        "n_head_kv": 32,
        "rotary_dim": 32,
        "position_embedding_base": 10000,
        "layer_norm_epsilon": 1e-05,
        "head_dim": 80,
        **_sizes(2048, 2048),
    }
    return _wrap("phi", model_config, template="phi-2", bos=50256, eos=50256)


# model name (the repository name without the quantization) -> its chat config
_MODELS: dict[str, Callable[[], dict[str, Any]]] = {
    "Llama-3-8B-Instruct": llama3_8b,
    "Llama-3.2-3B-Instruct": llama32_3b,
    "Mistral-7B-Instruct-v0.3": mistral_7b_v03,
    "Qwen3-0.6B": qwen3_06b,
    "Qwen3-1.7B": qwen3_17b,
    "gemma-2-2b-it": gemma2_2b,
    "Phi-3.5-mini-instruct": phi35_mini,
    "phi-2": phi2,
}


def chat_config(repo: str) -> dict[str, Any]:
    """The chat config of `mlc-ai/<repo>` (`<model>-<quantization>-MLC`)."""
    model, _, rest = repo.removesuffix("-MLC").rpartition("-")
    if model not in _MODELS:
        raise KeyError(f"no chat config written for {repo!r}; known models: {sorted(_MODELS)}")
    chat = copy.deepcopy(_MODELS[model]())
    chat["quantization"] = rest
    return chat
