"""What every family's `config.py` shares, without TVM: size rules, defaults and HF config reading.

A family states its rules once, as one `ModelTypeRules` per `model_type`. Every reader asks them:
the package-config checker (sliding-window overrides), the chat-config normaliser (`fill_sizes`,
which fills the sizes the way MLC's config dataclasses do in `__post_init__`), the converter
(`hf_sizes`) and the model in the compile child (`model_sizes`, which applies the same
`fill_sizes`: a request's model_config is filled already, so it reads the sizes back, unless the
model bounds them first, as gpt2 bounds its context window by `n_positions`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging_plugin.errors import PackagingError

DEFAULT_PREFILL_CHUNK_CAP = 8192  # MLC's cap on the default prefill chunk for most families
NO_VALUE = (None, 0)  # MLC's config classes treat 0 as "not given"
# Keys a context window is taken from when model_config has none, in MLC's order.
_CONTEXT_SOURCES = ("max_position_embeddings", "max_sequence_length", "n_positions")

Report = Callable[[str, str, str], None]  # (JSON path, what is wrong, what is expected)


class ConvertError(PackagingError, ValueError):
    """The checkpoint cannot be converted; the message says what is wrong and where."""


@dataclass(frozen=True)
class ModelTypeRules:
    """The size rules of one `model_type`, as MLC's config dataclass of the family applies them."""

    model_type: str
    # The default prefill_chunk_size is min(context window, this cap).
    prefill_chunk_cap: int = DEFAULT_PREFILL_CHUNK_CAP
    # Attention may have a sliding window (mistral): sliding_window_size and attention_sink_size
    # mean something. Elsewhere both are -1, and MLC ignores the two overrides.
    sliding_window: bool = False
    # gemma2: a positive `sliding_window` bounds the context window (MLC uses it as the context).
    sliding_window_bounds_context: bool = False
    # gpt2: the rows of the learned position embedding, fixed when the weights were converted.
    position_rows_key: str | None = None
    # gemma3: the model_config path of a per-layer sliding window W; prefill chunks are kept
    # to W - 1 tokens. TVM 0.27's paged KV cache does not window a sliding layer within one
    # chunk, and a chunk of W or more after cached tokens gives NaN (measured on llvm).
    prefill_bound_path: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerRope:
    """The rotary embedding of one layer, applied by the model (the KV cache applies none)."""

    theta: float
    factor: float = 1.0  # linear scaling: positions are divided by it


@dataclass(frozen=True)
class ModelSizes:
    """The sizes `_metadata` reports and memory planning bounds."""

    hidden_size: int
    context_window_size: int  # -1: unbounded (the sliding window bounds the cache)
    prefill_chunk_size: int
    sliding_window_size: int  # -1: off
    attention_sink_size: int  # -1: off
    max_batch_size: int


def fill_sizes(rules: ModelTypeRules, config: dict[str, Any], problem: Report) -> None:
    """Fill the sizes of a model_config in place, as MLC's config dataclasses do in __post_init__.

    Idempotent: a config it filled comes back unchanged. Problems go to `problem`.
    """
    _fill_windows(rules, config)
    if config.get("context_window_size") in NO_VALUE:
        if rules.sliding_window and config["sliding_window_size"] != -1:
            config["context_window_size"] = -1  # bounded by the sliding window instead
        else:
            for name in _CONTEXT_SOURCES:
                if config.get(name) not in NO_VALUE:
                    config["context_window_size"] = config[name]
                    break
            else:
                problem(
                    "model_config.context_window_size",
                    "missing, and there is no max_position_embeddings to take it from",
                    "a positive integer in model_config (or a context_window_size override)",
                )
                return
    if config.get("max_batch_size") is None:
        config["max_batch_size"] = 1

    def size(key: str, *, zero_ok: bool = False, off_ok: bool = True) -> bool:
        value = config[key]
        if is_int(value) and (value > 0 or (off_ok and value == -1) or (zero_ok and value == 0)):
            return True
        problem(f"model_config.{key}", shown(value), "a positive integer" + (", or -1" * off_ok))
        return False

    windows_ok = size("context_window_size") & size("sliding_window_size")
    size("attention_sink_size", zero_ok=True)
    size("max_batch_size", off_ok=False)
    if windows_ok:
        _fill_prefill_chunk(rules, config, problem)


def _fill_windows(rules: ModelTypeRules, config: dict[str, Any]) -> None:
    """sliding_window_size and attention_sink_size, and gemma2's context bound."""
    if rules.sliding_window:
        sliding = config.get("sliding_window_size")
        if sliding in NO_VALUE:
            # HF configs spell it "sliding_window"; null there means no sliding window.
            sliding = config.get("sliding_window")
        config["sliding_window_size"] = -1 if sliding in NO_VALUE else sliding
        if config.get("attention_sink_size") is None:
            config["attention_sink_size"] = 4  # MistralConfig's default
    else:
        config["sliding_window_size"] = -1
        config["attention_sink_size"] = -1

    window = config.get("sliding_window")
    if rules.sliding_window_bounds_context and is_int(window) and window > 0:
        # MLC's Gemma2Config makes the sliding window the context window (within it, the local
        # and global layers see the same tokens). A smaller context, which phones want, is kept:
        # MLC would silently replace it by the window.
        context = config.get("context_window_size")
        config["context_window_size"] = (
            min(context, window) if is_int(context) and context > 0 else window
        )


def _fill_prefill_chunk(rules: ModelTypeRules, config: dict[str, Any], problem: Report) -> None:
    context = config["context_window_size"]
    sliding = config["sliding_window_size"]
    if context == -1 and sliding == -1:
        problem(
            "model_config.context_window_size",
            "-1 with no sliding window, so the sequence length is unbounded",
            "a positive integer",
        )
        return
    cap = rules.prefill_chunk_cap
    bound = _prefill_bound(rules, config)
    prefill = config.get("prefill_chunk_size")
    if prefill in NO_VALUE:
        config["prefill_chunk_size"] = min(*(s for s in (context, sliding, bound) if s > 0), cap)
    elif not is_int(prefill) or prefill < 1:
        problem("model_config.prefill_chunk_size", shown(prefill), "a positive integer")
    elif not rules.sliding_window and prefill > context:
        # MLC's rule (not applied to mistral): a chunk larger than the window is cut down.
        config["prefill_chunk_size"] = min(context, cap, *((bound,) if bound > 0 else ()))
    elif 0 < bound < prefill:
        config["prefill_chunk_size"] = bound


def _prefill_bound(rules: ModelTypeRules, config: dict[str, Any]) -> int:
    """The largest prefill chunk a per-layer sliding window allows (gemma3), or 0: no bound."""
    value: Any = config
    for key in rules.prefill_bound_path:
        value = value.get(key) if isinstance(value, dict) else None
    return max(value - 1, 1) if rules.prefill_bound_path and is_int(value) and value > 0 else 0


def model_sizes(rules: ModelTypeRules, cfg: dict[str, Any], hidden_size: int) -> ModelSizes:
    """The sizes of a model_config (overrides applied), filled by `fill_sizes`; ValueError names
    what is wrong. A compile request's model_config is filled already: this reads it back."""
    filled = dict(cfg)
    problems: list[str] = []
    fill_sizes(rules, filled, lambda where, what, expected: problems.append(f"{where}: {what}"))
    if problems:
        raise ValueError(f"{rules.model_type} model_config: {'; '.join(problems)}")
    for key in ("tensor_parallel_shards", "pipeline_parallel_stages"):
        if int(cfg.get(key) or 1) != 1:
            raise ValueError(f"{key}={cfg[key]}: only 1 is supported on a single device")
    return ModelSizes(
        hidden_size=hidden_size,
        context_window_size=int(filled["context_window_size"]),
        prefill_chunk_size=int(filled["prefill_chunk_size"]),
        sliding_window_size=int(filled["sliding_window_size"]),
        attention_sink_size=int(filled["attention_sink_size"]),
        max_batch_size=int(filled["max_batch_size"]),
    )


def hf_sizes(rules: ModelTypeRules, context: int, sliding: int = -1) -> dict[str, int]:
    """The size keys MLC's gen_config writes into a converted model_config."""
    return {
        "context_window_size": context,
        "prefill_chunk_size": min(c for c in (context, sliding, rules.prefill_chunk_cap) if c > 0),
        "tensor_parallel_shards": 1,
        "max_batch_size": 1,
    }


# ----------------------------------------------------------------------------------------------
# Reading an MLC model_config (the model side)


def require(model_type: str, cfg: dict[str, Any], key: str) -> Any:
    """`cfg[key]`, or a ValueError naming the family and the missing key."""
    if cfg.get(key) is None:
        raise ValueError(f"{model_type} model_config lacks {key!r}")
    return cfg[key]


def read_heads(model_type: str, cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(num_attention_heads, num_key_value_heads, head_dim), checked."""
    heads = int(require(model_type, cfg, "num_attention_heads"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or int(require(model_type, cfg, "hidden_size")) // heads)
    if heads % kv_heads:
        raise ValueError(
            f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})"
        )
    return heads, kv_heads, head_dim


def rope_theta(cfg: dict[str, Any]) -> float:
    """MLC calls it position_embedding_base for some families and rope_theta for others."""
    params = cfg.get("rope_parameters") or {}
    return float(
        cfg.get("position_embedding_base")
        or cfg.get("rope_theta")
        or params.get("rope_theta")
        or 10000.0
    )


# ----------------------------------------------------------------------------------------------
# Reading a Hugging Face config.json (the converter side)


def need(hf: dict[str, Any], key: str) -> Any:
    if hf.get(key) is None:
        raise ConvertError(f"config.json lacks {key!r}")
    return hf[key]


def hf_rope(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None, float]:
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


def hf_heads(hf: dict[str, Any]) -> dict[str, int]:
    hidden, heads = int(need(hf, "hidden_size")), int(need(hf, "num_attention_heads"))
    return {
        "num_attention_heads": heads,
        "num_key_value_heads": int(hf.get("num_key_value_heads") or heads),
        "head_dim": int(hf.get("head_dim") or hidden // heads),
    }


def hf_common(hf: dict[str, Any], default_eps: float) -> dict[str, Any]:
    """The keys llama-shaped families share; `default_eps`: transformers' default rms_norm_eps."""
    return {
        "hidden_size": int(need(hf, "hidden_size")),
        "intermediate_size": int(need(hf, "intermediate_size")),
        "num_hidden_layers": int(need(hf, "num_hidden_layers")),
        "rms_norm_eps": float(hf.get("rms_norm_eps") or default_eps),
        "vocab_size": int(need(hf, "vocab_size")),
        **hf_heads(hf),
    }


def refuse_flags(hf: dict[str, Any], model_type: str, *keys: str) -> None:
    for key in keys:
        if hf.get(key):
            raise ConvertError(f"config.json: {key}={hf[key]!r} is not supported for {model_type}")


def hf_activation(hf: dict[str, Any], allowed: tuple[str, ...], *keys: str) -> str:
    act = next((hf[k] for k in keys if hf.get(k)), allowed[0])
    if act not in allowed:
        raise ConvertError(
            f"config.json: {keys[0]} {act!r} is not supported (expected {' or '.join(allowed)})"
        )
    return str(act)


def hf_tied(hf: dict[str, Any], default: bool = False) -> bool:
    return bool(hf.get("tie_word_embeddings", default))


# ----------------------------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shown(value: Any) -> str:
    """A value in a problem line: `missing`, or its JSON (cut at 60 characters) `is not valid`."""
    if value is None:
        return "missing"
    text = json.dumps(value)
    return f"{text[:60]}... is not valid" if len(text) > 60 else f"{text} is not valid"
