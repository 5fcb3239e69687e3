"""Generate the tiny demo MLC model directories under configs/models/<name>/.

Each directory is what MLC-LLM's weight converter writes: `mlc-chat-config.json`,
`tensor-cache.json` and `params_shard_*.bin`, with MLC's parameter names and quantized layouts,
and deterministic random weights, so re-running gives identical bytes. Two kinds:

- `DEMO_MODELS` (llama, mistral, qwen2, qwen3): written here directly from seeded numpy
  weights (the numpy references of tests/test_compiler.py read them); no torch or TVM needed.
- `CHECKPOINT_DEMOS` (gemma, gemma2, phi3, gpt2, and a q4f16_0 llama): a random checkpoint made by
  transformers (torch seeded; torch is pinned in the test extra), converted by
  `packaging_plugin.sources.convert`, the same way the equivalence tests make theirs.
- `HF_CHECKPOINT_DEMO` (qwen2): such a checkpoint kept unconverted, which the demo configs
  package with a `"quantization"` key.

Every model has a byte-level BPE `tokenizer.json` with exactly its vocabulary size (trained on a
fixed text by the `tokenizers` library), so a smoke run shows its random tokens as text.

    python scripts/make_demo_models.py [--out configs/models]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from packaging_plugin.quantization.packing import quantize_groups  # noqa: E402
from packaging_plugin.quantization.schemes import get_quantization  # noqa: E402
from tests.helpers.hf_models import TINY_CONFIG  # noqa: E402

SHARD_CAP_BYTES = 32 << 20  # MLC's shard limit


@dataclass(frozen=True)
class DemoModel:
    name: str
    model_type: str
    quantization: str
    seed: int
    vocab_size: int
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    context_window_size: int = 512
    prefill_chunk_size: int = 128
    sliding_window_size: int = -1
    attention_sink_size: int = -1
    max_batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)
    explicit_head_dim: int = 0  # 0: hidden_size // num_attention_heads (qwen3 may differ)

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden_size // self.num_attention_heads


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        "tiny-llama-q4f16_1", "llama", "q4f16_1", seed=1, vocab_size=512, num_key_value_heads=2
    ),
    # Llama-3.2 style: tied embeddings and llama3 RoPE scaling.
    DemoModel(
        "tiny-llama-q0f32",
        "llama",
        "q0f32",
        seed=2,
        vocab_size=256,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling={
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 64,
            "rope_type": "llama3",
        },
    ),
    DemoModel(
        "tiny-mistral-q4f32_1",
        "mistral",
        "q4f32_1",
        seed=3,
        vocab_size=384,
        num_key_value_heads=2,
        context_window_size=-1,
        prefill_chunk_size=64,
        sliding_window_size=64,
        attention_sink_size=4,
    ),
    DemoModel(
        "tiny-qwen2-q0f16",
        "qwen2",
        "q0f16",
        seed=4,
        vocab_size=384,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
    ),
    DemoModel(
        "tiny-qwen2-q4f32_1",
        "qwen2",
        "q4f32_1",
        seed=5,
        vocab_size=512,
        num_key_value_heads=2,
        rope_theta=1000000.0,
    ),
    # Qwen3 style: per-head q/k norms, head_dim 32 != 64 / 4 heads, untied lm_head. The same
    # float weights (same seed) in both quantizations: f16 for the GPUs, f32 for the CPU.
    *(
        DemoModel(
            f"tiny-qwen3-{quantization}",
            "qwen3",
            quantization,
            seed=6,
            vocab_size=512,
            num_key_value_heads=2,
            rope_theta=1000000.0,
            explicit_head_dim=32,
        )
        for quantization in ("q4f16_1", "q4f32_1")
    ),
)

# ------------------------------------------------------------------------------------------------
# Parameters: MLC's names and order (the order of the packed parameter tuple)


@dataclass(frozen=True)
class ParamSpec:
    name: str  # unquantized name, ending in ".weight" or ".bias"
    shape: tuple[int, ...]
    kind: str  # "linear" | "embedding" (quantizable) | "norm" | "bias"


def param_specs(m: DemoModel) -> list[ParamSpec]:
    """Unquantized parameters of the llama family, in MLC's order."""
    h, d = m.hidden_size, m.head_dim
    qkv_out = (m.num_attention_heads + 2 * m.num_key_value_heads) * d
    qkv = "c_attn" if m.model_type in ("qwen2", "qwen3") else "qkv_proj"
    specs = [ParamSpec("model.embed_tokens.weight", (m.vocab_size, h), "embedding")]
    for i in range(m.num_hidden_layers):
        p = f"model.layers.{i}"
        specs.append(ParamSpec(f"{p}.self_attn.{qkv}.weight", (qkv_out, h), "linear"))
        if m.model_type == "qwen2":
            specs.append(ParamSpec(f"{p}.self_attn.{qkv}.bias", (qkv_out,), "bias"))
        specs.append(
            ParamSpec(f"{p}.self_attn.o_proj.weight", (h, m.num_attention_heads * d), "linear")
        )
        if m.model_type == "qwen3":  # after o_proj, MLC's order (no attention_bias here)
            specs += [
                ParamSpec(f"{p}.self_attn.q_norm.weight", (d,), "norm"),
                ParamSpec(f"{p}.self_attn.k_norm.weight", (d,), "norm"),
            ]
        specs += [
            ParamSpec(f"{p}.mlp.gate_up_proj.weight", (2 * m.intermediate_size, h), "linear"),
            ParamSpec(f"{p}.mlp.down_proj.weight", (h, m.intermediate_size), "linear"),
            ParamSpec(f"{p}.input_layernorm.weight", (h,), "norm"),
            ParamSpec(f"{p}.post_attention_layernorm.weight", (h,), "norm"),
        ]
    specs.append(ParamSpec("model.norm.weight", (h,), "norm"))
    if not m.tie_word_embeddings:
        specs.append(ParamSpec("lm_head.weight", (m.vocab_size, h), "linear"))
    return specs


def make_weights(m: DemoModel) -> dict[str, np.ndarray]:
    """Float32 weights (before quantization), from a generator seeded per model."""
    rng = np.random.default_rng(m.seed)
    weights: dict[str, np.ndarray] = {}
    for spec in param_specs(m):
        if spec.kind == "norm":
            w = 1.0 + 0.1 * rng.standard_normal(spec.shape)
        elif spec.kind == "bias":
            w = 0.1 * rng.standard_normal(spec.shape)
        elif spec.kind == "embedding":  # small enough that tied-embedding logits stay O(1)
            w = 0.3 * rng.standard_normal(spec.shape)
        else:  # fan-in scaled, so activations stay O(1) through the layers
            w = rng.standard_normal(spec.shape) / np.sqrt(spec.shape[1])
        weights[spec.name] = w.astype(np.float32)
    return weights


def stored_params(m: DemoModel) -> list[tuple[str, np.ndarray]]:
    """The parameters as MLC stores them for m.quantization, in packed order."""
    quant = get_quantization(m.quantization)
    dtype = np.dtype(quant.model_dtype)
    out: list[tuple[str, np.ndarray]] = []
    weights = make_weights(m)
    for spec in param_specs(m):
        w = weights[spec.name]
        if quant.group_quantized and spec.kind in ("linear", "embedding"):
            # KN quantizations (q4f16_0, q3f16_0) store linear weights transposed, embeddings NK.
            transposed = quant.linear_transposed and spec.kind == "linear"
            q_weight, q_scale = quantize_groups(w, dtype, quant.layout, transposed=transposed)
            base = spec.name.removesuffix(".weight")
            out += [(f"{base}.q_weight", q_weight), (f"{base}.q_scale", q_scale)]
        else:
            out.append((spec.name, w.astype(dtype)))
    return out


# ------------------------------------------------------------------------------------------------
# Files


def model_config(m: DemoModel) -> dict[str, Any]:
    """model_config with the fields MLC's config dataclass of the family writes."""
    common = {
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "num_attention_heads": m.num_attention_heads,
        "num_hidden_layers": m.num_hidden_layers,
        "rms_norm_eps": 1e-6 if m.model_type in ("qwen2", "qwen3") else 1e-5,
        "vocab_size": m.vocab_size,
    }
    if m.model_type in ("qwen2", "qwen3"):
        return {
            "hidden_act": "silu",
            **common,
            **({"attention_bias": False} if m.model_type == "qwen3" else {}),
            "num_key_value_heads": m.num_key_value_heads,
            "rope_theta": m.rope_theta,
            "tie_word_embeddings": m.tie_word_embeddings,
            "context_window_size": m.context_window_size,
            "prefill_chunk_size": m.prefill_chunk_size,
            "tensor_parallel_shards": 1,
            "head_dim": m.head_dim,
            "dtype": "float32",
            "max_batch_size": m.max_batch_size,
        }
    if m.model_type == "mistral":
        return {
            **common,
            "position_embedding_base": m.rope_theta,
            "num_key_value_heads": m.num_key_value_heads,
            "head_dim": m.head_dim,
            "context_window_size": m.context_window_size,
            "sliding_window_size": m.sliding_window_size,
            "prefill_chunk_size": m.prefill_chunk_size,
            "attention_sink_size": m.attention_sink_size,
            "tensor_parallel_shards": 1,
            "max_batch_size": m.max_batch_size,
        }
    return {
        **common,
        "tie_word_embeddings": m.tie_word_embeddings,
        "position_embedding_base": m.rope_theta,
        "rope_scaling": m.rope_scaling,
        "context_window_size": m.context_window_size,
        "prefill_chunk_size": m.prefill_chunk_size,
        "num_key_value_heads": m.num_key_value_heads,
        "head_dim": m.head_dim,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "max_batch_size": m.max_batch_size,
        "disaggregation": False,
    }


# The text the demo tokenizers learn their merges from; any fixed text does.
TOKENIZER_TEXT = (
    "A package is only good if the app can link it and the model runs. The tiny models here "
    "have random weights: what they say means nothing, but they say it the same way every time, "
    "on every device, from the library the app links. Packaging checks that before the app is "
    "built: the library links, the kernels compile, the weights match their checksums, and the "
    "model generates the same tokens twice. "
)
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2: pad, bos and eos of the chat configs


def write_tokenizer(vocab_size: int, target: Path) -> None:
    """A byte-level BPE tokenizer.json with exactly `vocab_size` tokens.

    Its 256 byte tokens cover any text; the specials come first where there is room for them,
    and ids the merges of the short training text leave over are named `<unused_N>`, so no id the
    model can produce is unknown to the tokenizer, and the tokenizer makes none it cannot read.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = list(SPECIAL_TOKENS) if vocab_size >= len(alphabet) + len(SPECIAL_TOKENS) else []
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator([TOKENIZER_TEXT], trainer)
    unused = vocab_size - tokenizer.get_vocab_size()
    tokenizer.add_tokens([f"<unused_{i}>" for i in range(unused)])
    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(
            f"demo tokenizer has {tokenizer.get_vocab_size()} tokens, not {vocab_size}"
        )
    tokenizer.save(str(target / "tokenizer.json"))


def chat_config(m: DemoModel) -> dict[str, Any]:
    """mlc-chat-config.json as MLC's gen_config writes it, with the byte-level tokenizer."""
    return {
        "version": "0.1.0",
        "model_type": m.model_type,
        "quantization": m.quantization,
        "model_config": model_config(m),
        "vocab_size": m.vocab_size,
        "context_window_size": m.context_window_size,
        "sliding_window_size": m.sliding_window_size,
        "prefill_chunk_size": m.prefill_chunk_size,
        "attention_sink_size": m.attention_sink_size,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": 0.7,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "top_p": 0.95,
        "tokenizer_files": ["tokenizer.json"],
        "tokenizer_info": {
            "token_postproc_method": "byte_level",
            "prepend_space_in_encode": False,
            "strip_space_in_decode": False,
        },
        "conv_template": {
            "name": "tiny-demo",
            "system_template": "{system_message}",
            "system_message": "",
            "system_prefix_token_ids": [1],
            "add_role_after_system_message": True,
            "roles": {"user": "USER", "assistant": "ASSISTANT"},
            "role_templates": {
                "user": "{user_message}",
                "assistant": "{assistant_message}",
                "tool": "{tool_message}",
            },
            "messages": [],
            "seps": ["\n"],
            "role_content_sep": ": ",
            "role_empty_sep": ":",
            "stop_str": [],
            "stop_token_ids": [2],
            "function_string": "",
            "use_function_calling": False,
        },
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


def tensor_cache(
    params: list[tuple[str, np.ndarray]], logical_size: int
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """tensor-cache.json content and the shard files, raw format, shards <= 32 MiB."""
    shards: list[tuple[str, bytes]] = []
    records: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    data = bytearray()

    def flush() -> None:
        if not current:
            return
        path = f"params_shard_{len(shards)}.bin"
        shards.append((path, bytes(data)))
        records.append(
            {
                "dataPath": path,
                "format": "raw-shard",
                "nbytes": len(data),
                "records": list(current),
                "md5sum": hashlib.md5(data).hexdigest(),
            }
        )
        current.clear()
        data.clear()

    total = 0
    for name, array in params:
        blob = np.ascontiguousarray(array).tobytes()
        if data and len(data) + len(blob) > SHARD_CAP_BYTES:
            flush()
        current.append(
            {
                "name": name,
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "format": "raw",
                "nbytes": len(blob),
                "byteOffset": len(data),
            }
        )
        data += blob
        total += len(blob)
    flush()
    meta = {
        "ParamSize": logical_size,
        "ParamBytes": total,
        "BitsPerParam": round(8.0 * total / logical_size, 4),
    }
    return {"metadata": meta, "records": records}, shards


def write_model(m: DemoModel, out_dir: Path) -> Path:
    target = out_dir / m.name
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("params_shard_*.bin"):
        stale.unlink()
    params = stored_params(m)
    logical = sum(int(np.prod(s.shape)) for s in param_specs(m))
    cache, shards = tensor_cache(params, logical)
    for path, blob in shards:
        (target / path).write_bytes(blob)
    (target / "tensor-cache.json").write_text(json.dumps(cache, indent=4) + "\n")
    (target / "mlc-chat-config.json").write_text(json.dumps(chat_config(m), indent=2) + "\n")
    write_tokenizer(m.vocab_size, target)
    return target


@dataclass(frozen=True)
class CheckpointDemo:
    """A demo model made from a transformers checkpoint and converted."""

    name: str
    config_class: str
    model_class: str
    quantization: str
    seed: int
    config: dict[str, Any]
    legacy_phi_msft: bool = False  # written in the old remote-code names (model_type phi-msft)


_TINY_HF = {**TINY_CONFIG, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
# Gemma-2 shape: head_dim 32 != 64 / 4, query_pre_attn_scalar and logit soft-capping.
_GEMMA2 = {**_TINY_HF, "vocab_size": 512, "head_dim": 32, "query_pre_attn_scalar": 32}
# Phi-3.5 shape: longrope scaling (short factors below 256 positions).
_PHI3 = {
    **_TINY_HF,
    "vocab_size": 384,
    "original_max_position_embeddings": 256,
    "rope_scaling": {
        "type": "longrope",
        "short_factor": [1.0, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0, 2.5],
        "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
    },
}

_PHI = {**_TINY_HF, "vocab_size": 352, "partial_rotary_factor": 0.4}
_G3 = {
    **_TINY_HF,
    "num_hidden_layers": 3,
    "head_dim": 32,
    "query_pre_attn_scalar": 24,
    "sliding_window": 16,
    "sliding_window_pattern": 3,
    "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    },
}

CHECKPOINT_DEMOS: tuple[CheckpointDemo, ...] = (
    # The same float weights (same seed) per family: f16 quantizations for the GPUs, f32 for
    # the CPU (float16 on x86 is software-emulated).
    *(
        CheckpointDemo(f"tiny-gemma2-{q}", "Gemma2Config", "Gemma2ForCausalLM", q, 7, _GEMMA2)
        for q in ("q4f16_1", "q4f32_1")
    ),
    *(
        CheckpointDemo(f"tiny-phi3-{q}", "Phi3Config", "Phi3ForCausalLM", q, 8, _PHI3)
        for q in ("q4f16_1", "q4f32_1")
    ),
    CheckpointDemo(
        "tiny-gemma-q4f16_1",
        "GemmaConfig",
        "GemmaForCausalLM",
        "q4f16_1",
        9,
        {**_TINY_HF, "vocab_size": 256, "head_dim": 16},
    ),
    *(
        CheckpointDemo(
            f"tiny-gpt2-{q}",
            "GPT2Config",
            "GPT2LMHeadModel",
            q,
            11,
            {**_TINY_HF, "vocab_size": 320, "n_inner": 192},
        )
        for q in ("q4f16_1", "q4f32_1")
    ),
    # Phi-2 shape: parallel attention and MLP, rotary on 0.4 of each head, biases everywhere.
    *(
        CheckpointDemo(f"tiny-phi-{q}", "PhiConfig", "PhiForCausalLM", q, 13, _PHI)
        for q in ("q4f16_1", "q4f32_1")
    ),
    CheckpointDemo(
        "tiny-phi-msft-q4f16_1", "PhiConfig", "PhiForCausalLM", "q4f16_1", 13, _PHI, True
    ),
    # Pythia shape: parallel residual, RoPE on a quarter of each head, per-head fused QKV rows.
    *(
        CheckpointDemo(
            f"tiny-gpt-neox-{q}",
            "GPTNeoXConfig",
            "GPTNeoXForCausalLM",
            q,
            15,
            {**_TINY_HF, "vocab_size": 256, "rotary_pct": 0.25, "use_parallel_residual": True},
        )
        for q in ("q4f16_1", "q4f32_1")
    ),
    # Gemma-3 shape: sliding and full layers (pattern 3), each kind with its own RoPE base, the
    # full ones linearly scaled; a window of 16 (prefill chunks of 15).
    *(
        CheckpointDemo(f"tiny-gemma3-text-{q}", "Gemma3TextConfig", "Gemma3ForCausalLM", q, 16, _G3)
        for q in ("q4f16_1", "q4f32_1")
    ),
    # Gemma-3 4B+'s checkpoint layout: the text model nested in text_config, a vision tower
    # beside it that is not packaged.
    CheckpointDemo(
        "tiny-gemma3-q4f16_1",
        "Gemma3Config",
        "Gemma3ForConditionalGeneration",
        "q4f16_1",
        17,
        {
            "text_config": _G3,
            "vision_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
            },
            "mm_tokens_per_image": 4,
            "boi_token_index": 253,
            "eoi_token_index": 254,
            "image_token_index": 255,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "vocab_size": 256,
        },
    ),
    # SmolLM3 shape: tied, GQA, RoPE left out of every fourth layer (layer 3 of 4).
    *(
        CheckpointDemo(
            f"tiny-smollm3-{q}",
            "SmolLM3Config",
            "SmolLM3ForCausalLM",
            q,
            18,
            {**_TINY_HF, "num_hidden_layers": 4, "tie_word_embeddings": True},
        )
        for q in ("q4f16_1", "q4f32_1")
    ),
    # 3-bit codes in groups of 40 (MLC's iOS example ships Llama-3-8B so): hidden 64 and
    # intermediate 128 end in padded groups.
    CheckpointDemo(
        "tiny-llama-q3f16_1",
        "LlamaConfig",
        "LlamaForCausalLM",
        "q3f16_1",
        14,
        {**_TINY_HF, "vocab_size": 256, "rope_theta": 500000.0},
    ),
    # MLC's "KN" layout, which MLC's own Android example ships (Llama-3.2 shape: tied).
    CheckpointDemo(
        "tiny-llama-q4f16_0",
        "LlamaConfig",
        "LlamaForCausalLM",
        "q4f16_0",
        10,
        {**_TINY_HF, "vocab_size": 256, "tie_word_embeddings": True, "rope_theta": 500000.0},
    ),
)


def write_checkpoint_demo(demo: CheckpointDemo, out_dir: Path) -> Path:
    import tempfile

    from packaging_plugin.sources.convert import convert_checkpoint
    from tests.helpers.hf_models import make_random_model

    model = make_random_model(demo.config_class, demo.model_class, demo.config, demo.seed)
    with tempfile.TemporaryDirectory(prefix="demo-checkpoint-") as checkpoint:
        model.save_pretrained(checkpoint)
        if demo.legacy_phi_msft:
            _rewrite_as_phi_msft(Path(checkpoint))
        write_tokenizer(demo.config["vocab_size"], Path(checkpoint))  # the converter carries it
        return convert_checkpoint(Path(checkpoint), out_dir / demo.name, demo.quantization)


def _rewrite_as_phi_msft(checkpoint: Path) -> None:
    """A transformers Phi checkpoint rewritten in the legacy `phi-msft` names and config."""
    from safetensors.numpy import load_file, save_file

    from tests.helpers.hf_models import phi_msft_checkpoint

    config = json.loads((checkpoint / "config.json").read_text())
    tensors, msft_config = phi_msft_checkpoint(load_file(checkpoint / "model.safetensors"), config)
    save_file(tensors, checkpoint / "model.safetensors")
    (checkpoint / "config.json").write_text(json.dumps(msft_config, indent=2))


# Kept as the Hugging Face checkpoint itself (config.json + model.safetensors): the demo configs
# package it with a "quantization" key, converted on the fly.
HF_CHECKPOINT_DEMO = CheckpointDemo(
    "tiny-qwen2-hf", "Qwen2Config", "Qwen2ForCausalLM", "", 12, {**_TINY_HF, "vocab_size": 288}
)
DEMO_LICENSE = """Random weights made for testing by scripts/make_demo_models.py.
Licensed under the Apache License, Version 2.0, like the rest of this repository.
"""


def write_hf_checkpoint_demo(demo: CheckpointDemo, out_dir: Path) -> Path:
    from tests.helpers.hf_models import make_random_model

    model = make_random_model(demo.config_class, demo.model_class, demo.config, demo.seed)
    target = out_dir / demo.name
    model.save_pretrained(target)
    write_tokenizer(demo.config["vocab_size"], target)
    # A model's terms travel with its weights into the bundle: the demo shows that too.
    (target / "LICENSE").write_text(DEMO_LICENSE)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "configs" / "models")
    args = parser.parse_args(argv)
    paths = [write_model(m, args.out) for m in DEMO_MODELS]
    paths += [write_checkpoint_demo(demo, args.out) for demo in CHECKPOINT_DEMOS]
    paths.append(write_hf_checkpoint_demo(HF_CHECKPOINT_DEMO, args.out))
    for path in paths:
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"{path}: {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
