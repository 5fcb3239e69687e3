"""packaging_plugin.sources.convert on checkpoints written here (numpy only: no torch, no TVM).

Checkpoints are safetensors files written by a small writer below, so every dtype the converter
must read (bf16 included, which numpy lacks) can be produced exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packaging_plugin.families import hf_model_config, plan_params
from packaging_plugin.quantization.packing import dequantize_groups, quantize_groups
from packaging_plugin.quantization.schemes import Q4
from packaging_plugin.sources import convert
from packaging_plugin.sources.convert import ConvertError, convert_checkpoint
from tests.helpers.runtime import read_tensor_cache

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# Writing checkpoints


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (truncation: exact for values that are bf16 already)."""
    return (np.ascontiguousarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], bf16: bool = False) -> None:
    """A safetensors file (header length, JSON header, data); float32 stored as BF16 if asked."""
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, array in tensors.items():
        if bf16 and array.dtype == np.float32:
            dtype, blob = "BF16", bf16_bits(array).tobytes()
        else:
            dtype = {"float32": "F32", "float16": "F16"}[array.dtype.name]
            blob = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def hf_config(model_type: str = "llama", **overrides: Any) -> dict[str, Any]:
    """config.json as transformers 5 writes it (rope_parameters), small sizes."""
    config = {
        "model_type": model_type,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 80,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    config.update(overrides)
    return config


def hf_tensors(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with transformers' names and shapes for `config`."""
    rng = np.random.default_rng(seed)
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or h // heads

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    out = {"model.embed_tokens.weight": w(config["vocab_size"], h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        if config["model_type"] == "phi3":  # q/k/v and gate/up already fused
            out[f"{p}.self_attn.qkv_proj.weight"] = w((heads + 2 * kv) * d, h)
            out[f"{p}.mlp.gate_up_proj.weight"] = w(2 * inter, h)
        else:
            out |= {
                f"{p}.self_attn.q_proj.weight": w(heads * d, h),
                f"{p}.self_attn.k_proj.weight": w(kv * d, h),
                f"{p}.self_attn.v_proj.weight": w(kv * d, h),
                f"{p}.mlp.gate_proj.weight": w(inter, h),
                f"{p}.mlp.up_proj.weight": w(inter, h),
            }
        out |= {
            f"{p}.self_attn.o_proj.weight": w(h, heads * d),
            f"{p}.mlp.down_proj.weight": w(h, inter),
            f"{p}.input_layernorm.weight": w(h),
            f"{p}.post_attention_layernorm.weight": w(h),
        }
        if config["model_type"] == "gemma2":
            out[f"{p}.pre_feedforward_layernorm.weight"] = w(h)
            out[f"{p}.post_feedforward_layernorm.weight"] = w(h)
        biased = ("qkv" if config["model_type"] == "qwen2" else "") + (
            "qkvo" if config.get("attention_bias") else ""
        )
        for x in dict.fromkeys(biased):
            out[f"{p}.self_attn.{x}_proj.bias"] = w(out[f"{p}.self_attn.{x}_proj.weight"].shape[0])
        if config["model_type"] == "qwen3":
            out[f"{p}.self_attn.q_norm.weight"] = w(d)
            out[f"{p}.self_attn.k_norm.weight"] = w(d)
    out["model.norm.weight"] = w(h)
    if not config["tie_word_embeddings"]:
        out["lm_head.weight"] = w(config["vocab_size"], h)
    return out


def write_checkpoint(
    folder: Path, config: dict[str, Any], *, bf16: bool = False, shards: int = 1
) -> dict[str, np.ndarray]:
    """config.json + weights (one file, or `shards` files with an index); returns the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    tensors = hf_tensors(config)
    if shards == 1:
        write_safetensors(folder / "model.safetensors", tensors, bf16)
    else:
        names = list(tensors)
        weight_map = {}
        for k in range(shards):
            file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = names[k::shards]  # interleaved: a layer's tensors span files
            write_safetensors(folder / file, {n: tensors[n] for n in part}, bf16)
            weight_map |= dict.fromkeys(part, file)
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors


def records(model_dir: Path) -> list[dict[str, Any]]:
    index = json.loads((model_dir / "tensor-cache.json").read_text())
    return [r for shard in index["records"] for r in shard["records"]]


def chat_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "mlc-chat-config.json").read_text())


# ------------------------------------------------------------------------------------------------
# Names, shapes, values


def test_llama_q0f16_names_order_and_fused_values(tmp_path: Path) -> None:
    config = hf_config()
    hf = write_checkpoint(tmp_path / "hf", config)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f16")
    stored = read_tensor_cache(out)
    expected_names = ["model.embed_tokens.weight"]
    for i in range(2):
        p = f"model.layers.{i}"
        expected_names += [
            f"{p}.self_attn.qkv_proj.weight",
            f"{p}.self_attn.o_proj.weight",
            f"{p}.mlp.gate_up_proj.weight",
            f"{p}.mlp.down_proj.weight",
            f"{p}.input_layernorm.weight",
            f"{p}.post_attention_layernorm.weight",
        ]
    expected_names += ["model.norm.weight", "lm_head.weight"]
    assert [r["name"] for r in records(out)] == expected_names
    assert all(r["dtype"] == "float16" and r["format"] == "raw" for r in records(out))

    p = "model.layers.1"
    qkv = np.concatenate([hf[f"{p}.self_attn.{x}_proj.weight"] for x in "qkv"])
    np.testing.assert_array_equal(stored[f"{p}.self_attn.qkv_proj.weight"], qkv.astype(np.float16))
    assert stored[f"{p}.self_attn.qkv_proj.weight"].shape == ((4 + 2 * 2) * 16, 64)
    gate_up = np.concatenate([hf[f"{p}.mlp.gate_proj.weight"], hf[f"{p}.mlp.up_proj.weight"]])
    np.testing.assert_array_equal(
        stored[f"{p}.mlp.gate_up_proj.weight"], gate_up.astype(np.float16)
    )
    np.testing.assert_array_equal(stored["lm_head.weight"], hf["lm_head.weight"].astype(np.float16))


def test_qwen2_q4_tied_with_fused_bias(tmp_path: Path) -> None:
    config = hf_config("qwen2", tie_word_embeddings=True)
    hf = write_checkpoint(tmp_path / "hf", config)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q4f16_1")
    stored = read_tensor_cache(out)
    names = [r["name"] for r in records(out)]
    assert names[:5] == [
        "model.embed_tokens.q_weight",
        "model.embed_tokens.q_scale",
        "model.layers.0.self_attn.c_attn.q_weight",
        "model.layers.0.self_attn.c_attn.q_scale",
        "model.layers.0.self_attn.c_attn.bias",
    ]
    assert not any(n.startswith("lm_head") for n in names)  # tied: logits use the embeddings
    assert names[-1] == "model.norm.weight"
    # Quantized exactly as quantize_groups does on the fused weight (row blocks change nothing).
    p = "model.layers.0.self_attn"
    fused = np.concatenate([hf[f"{p}.{x}_proj.weight"] for x in "qkv"])
    q_weight, q_scale = quantize_groups(fused, np.float16, Q4)
    np.testing.assert_array_equal(stored[f"{p}.c_attn.q_weight"], q_weight)
    np.testing.assert_array_equal(stored[f"{p}.c_attn.q_scale"], q_scale)
    bias = np.concatenate([hf[f"{p}.{x}_proj.bias"] for x in "qkv"])
    np.testing.assert_array_equal(stored[f"{p}.c_attn.bias"], bias.astype(np.float16))
    embed = dequantize_groups(
        stored["model.embed_tokens.q_weight"],
        stored["model.embed_tokens.q_scale"],
        Q4,
        64,
        np.float32,
    )
    scale = np.repeat(stored["model.embed_tokens.q_scale"].astype(np.float32), 32, axis=1)
    assert np.all(np.abs(embed - hf["model.embed_tokens.weight"]) <= scale / 2 + 1e-2)
    assert {r["dtype"] for r in records(out)} == {"uint32", "float16"}


@pytest.mark.parametrize("attention_bias", [False, True])
def test_qwen3_head_dim_qk_norms_and_optional_bias(tmp_path: Path, attention_bias: bool) -> None:
    # head_dim 32 != hidden 64 / 4 heads; transformers 5 config style (rope_parameters, dtype).
    config = hf_config(
        "qwen3",
        head_dim=32,
        attention_bias=attention_bias,
        dtype="bfloat16",
        rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
    )
    hf = write_checkpoint(tmp_path / "hf", config)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32")
    p = "model.layers.0.self_attn"
    names = [r["name"] for r in records(out)]
    layer0 = [n for n in names if n.startswith("model.layers.0.")]
    bias = (lambda name: [name]) if attention_bias else (lambda name: [])
    assert layer0 == [
        f"{p}.c_attn.weight",
        *bias(f"{p}.c_attn.bias"),
        f"{p}.o_proj.weight",
        *bias(f"{p}.o_proj.bias"),
        f"{p}.q_norm.weight",
        f"{p}.k_norm.weight",
        "model.layers.0.mlp.gate_up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
    ]
    assert names == [pl.name for pl in plan_params("qwen3", chat_config(out)["model_config"])]
    stored = read_tensor_cache(out)
    assert stored[f"{p}.c_attn.weight"].shape == ((4 + 2 * 2) * 32, 64)
    assert stored[f"{p}.o_proj.weight"].shape == (64, 4 * 32)
    np.testing.assert_array_equal(stored[f"{p}.q_norm.weight"], hf[f"{p}.q_norm.weight"])
    np.testing.assert_array_equal(stored[f"{p}.k_norm.weight"], hf[f"{p}.k_norm.weight"])
    if attention_bias:
        np.testing.assert_array_equal(stored[f"{p}.o_proj.bias"], hf[f"{p}.o_proj.bias"])
    cfg = chat_config(out)["model_config"]
    assert (cfg["head_dim"], cfg["rope_theta"], cfg["attention_bias"]) == (
        32,
        1000000.0,
        attention_bias,
    )
    assert (cfg["hidden_act"], cfg["dtype"], cfg["prefill_chunk_size"]) == ("silu", "bfloat16", 256)


def test_q4f16_0_stores_linear_weights_kn_and_embeddings_nk(tmp_path: Path) -> None:
    config = hf_config()  # untied: the lm_head is a linear weight, stored KN too
    hf = write_checkpoint(tmp_path / "hf", config)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q4f16_0")
    stored = read_tensor_cache(out)
    shapes = {r["name"]: r["shape"] for r in records(out)}
    assert shapes["model.embed_tokens.q_weight"] == [80, 8]  # NK, as MLC leaves embeddings
    assert shapes["model.embed_tokens.q_scale"] == [80, 2]
    p = "model.layers.0"
    assert shapes[f"{p}.self_attn.qkv_proj.q_weight"] == [8, 128]  # [K/8, N]
    assert shapes[f"{p}.self_attn.qkv_proj.q_scale"] == [2, 128]  # [K/32, N]
    assert shapes[f"{p}.mlp.down_proj.q_weight"] == [12, 64]  # K = 96: three groups
    assert shapes["lm_head.q_weight"] == [8, 80]
    fused = np.concatenate([hf[f"{p}.self_attn.{x}_proj.weight"] for x in "qkv"])
    q_weight, q_scale = quantize_groups(fused, np.float16, Q4)
    np.testing.assert_array_equal(stored[f"{p}.self_attn.qkv_proj.q_weight"], q_weight.T)
    np.testing.assert_array_equal(stored[f"{p}.self_attn.qkv_proj.q_scale"], q_scale.T)
    embed_w, embed_s = quantize_groups(hf["model.embed_tokens.weight"], np.float16, Q4)
    np.testing.assert_array_equal(stored["model.embed_tokens.q_weight"], embed_w)
    np.testing.assert_array_equal(stored["model.embed_tokens.q_scale"], embed_s)
    assert chat_config(out)["quantization"] == "q4f16_0"


def test_plan_matches_the_compiled_parameter_order() -> None:
    # The same list test_equivalence checks against a compiled library's _metadata.
    plans = plan_params("llama", {"num_hidden_layers": 1, "tie_word_embeddings": True})
    assert [p.name for p in plans] == [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.qkv_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight",
    ]


# ------------------------------------------------------------------------------------------------
# Inputs: bf16, shards, config spellings


def test_bf16_input_is_widened_exactly(tmp_path: Path) -> None:
    config = hf_config()
    hf = write_checkpoint(tmp_path / "hf", config, bf16=True)
    stored = read_tensor_cache(convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32"))
    want = (bf16_bits(hf["model.norm.weight"]).astype(np.uint32) << 16).view(np.float32)
    assert stored["model.norm.weight"].dtype == np.float32
    np.testing.assert_array_equal(stored["model.norm.weight"], want)
    np.testing.assert_allclose(stored["model.norm.weight"], hf["model.norm.weight"], rtol=1e-2)


def test_sharded_checkpoint_with_index(tmp_path: Path) -> None:
    config = hf_config()
    hf = write_checkpoint(tmp_path / "hf", config, shards=3)
    stored = read_tensor_cache(convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32"))
    qkv = np.concatenate([hf[f"model.layers.0.self_attn.{x}_proj.weight"] for x in "qkv"])
    np.testing.assert_array_equal(stored["model.layers.0.self_attn.qkv_proj.weight"], qkv)


@pytest.mark.parametrize("style", ["transformers5", "transformers4"])
def test_rope_settings_from_either_config_style(tmp_path: Path, style: str) -> None:
    llama3 = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
        "rope_type": "llama3",
    }
    if style == "transformers5":
        rope = {"rope_parameters": {"rope_theta": 500000.0, **llama3}}
    else:
        rope = {"rope_parameters": None, "rope_theta": 500000.0, "rope_scaling": llama3}
    write_checkpoint(tmp_path / "llama", hf_config(**rope))
    model_config = chat_config(convert_checkpoint(tmp_path / "llama", tmp_path / "a", "q0f32"))[
        "model_config"
    ]
    assert model_config["position_embedding_base"] == 500000.0
    assert "rope_theta" not in model_config
    assert model_config["rope_scaling"]["rope_type"] == "llama3"
    assert model_config["rope_scaling"]["factor"] == 8.0

    # qwen2 keeps the HF key rope_theta.
    qwen_rope = (
        {"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}
        if style == "transformers5"
        else {"rope_parameters": None, "rope_theta": 1e6}
    )
    write_checkpoint(tmp_path / "qwen", hf_config("qwen2", **qwen_rope))
    qwen = chat_config(convert_checkpoint(tmp_path / "qwen", tmp_path / "b", "q0f32"))
    assert qwen["model_config"]["rope_theta"] == 1e6
    assert "position_embedding_base" not in qwen["model_config"]


def test_gemma2_norms_are_stored_plus_one_and_its_window_bounds_the_context(
    tmp_path: Path,
) -> None:
    config = hf_config(
        "gemma2",
        head_dim=32,
        tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=24,
        final_logit_softcapping=30.0,
        sliding_window=128,
    )
    hf = write_checkpoint(tmp_path / "hf", config)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32")
    chat, stored = chat_config(out), read_tensor_cache(out)
    assert list(stored) == [pl.name for pl in plan_params("gemma2", chat["model_config"])]
    layer = "model.layers.1"
    # MLC's order: the four norms after the MLP, then the final norm; no lm_head (tied).
    assert list(stored)[-6:] == [
        f"{layer}.mlp.down_proj.weight",
        f"{layer}.input_layernorm.weight",
        f"{layer}.post_attention_layernorm.weight",
        f"{layer}.pre_feedforward_layernorm.weight",
        f"{layer}.post_feedforward_layernorm.weight",
        "model.norm.weight",
    ]
    for name in ("pre_feedforward_layernorm", "input_layernorm"):
        key = f"{layer}.{name}.weight"
        np.testing.assert_array_equal(stored[key], hf[key] + np.float32(1))
    np.testing.assert_array_equal(stored["model.norm.weight"], hf["model.norm.weight"] + 1)
    # Linear weights are not shifted.
    np.testing.assert_array_equal(
        stored[f"{layer}.self_attn.o_proj.weight"], hf[f"{layer}.self_attn.o_proj.weight"]
    )
    model_config = chat["model_config"]
    assert model_config["context_window_size"] == chat["context_window_size"] == 128
    assert model_config["query_pre_attn_scalar"] == 24
    assert model_config["final_logit_softcapping"] == 30.0
    assert model_config["hidden_activation"] == "gelu_pytorch_tanh"


@pytest.mark.parametrize("style", ["transformers5", "transformers4"])
def test_phi3_takes_fused_tensors_and_longrope_from_either_config_style(
    tmp_path: Path, style: str
) -> None:
    factors = {"short_factor": [1.0, 1.5, 2.0, 2.5], "long_factor": [3.0, 4.0, 5.0, 6.0]}
    if style == "transformers5":
        rope: dict[str, Any] = {
            "rope_parameters": {
                "rope_theta": 10000.0,
                "rope_type": "longrope",
                "partial_rotary_factor": 0.5,
                "original_max_position_embeddings": 64,
                **factors,
            }
        }
    else:  # transformers 4 (and the released Phi-3 configs, which say "su")
        rope = {
            "rope_parameters": None,
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "original_max_position_embeddings": 64,
            "rope_scaling": {"type": "su", **factors},
        }
    hf = write_checkpoint(tmp_path / "hf", hf_config("phi3", **rope))
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32")
    model_config, stored = chat_config(out)["model_config"], read_tensor_cache(out)
    assert model_config["rope_scaling"] == {
        "type": "longrope",
        "rope_type": "longrope",
        **factors,
        "max_position_embeddings": 256,
        "original_max_position_embeddings": 64,
    }
    assert model_config["partial_rotary_factor"] == 0.5
    assert model_config["position_embedding_base"] == 10000.0
    assert list(stored)[:7] == [
        "transformer.embd.weight",
        "transformer.h.0.ln.weight",
        "transformer.h.0.mixer.qkv_proj.weight",
        "transformer.h.0.mixer.out_proj.weight",
        "transformer.h.0.mlp.gate_up_proj.weight",
        "transformer.h.0.mlp.down_proj.weight",
        "transformer.h.0.post_attention_layernorm.weight",
    ]
    assert list(stored)[-2:] == ["transformer.norm.weight", "lm_head.weight"]
    np.testing.assert_array_equal(
        stored["transformer.h.1.mixer.qkv_proj.weight"],
        hf["model.layers.1.self_attn.qkv_proj.weight"],
    )


@pytest.mark.parametrize("style", ["transformers5", "transformers4"])
def test_smollm3_takes_llamas_names_and_its_rope_layers_from_either_config_style(
    tmp_path: Path, style: str
) -> None:
    if style == "transformers5":
        rope: dict[str, Any] = {"rope_parameters": {"rope_theta": 5e6, "rope_type": "default"}}
    else:  # as SmolLM3-3B's config.json (transformers 4.5x) spells it
        rope = {"rope_parameters": None, "rope_theta": 5e6, "rope_scaling": None}
    config = hf_config(
        "smollm3", num_hidden_layers=5, no_rope_layer_interval=2, tie_word_embeddings=True, **rope
    )
    hf = write_checkpoint(tmp_path / "hf", config)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32")
    model_config, stored = chat_config(out)["model_config"], read_tensor_cache(out)
    # transformers' rule: layer i has no RoPE where (i + 1) % interval == 0.
    assert model_config["no_rope_layers"] == [1, 0, 1, 0, 1]
    assert model_config["position_embedding_base"] == 5e6
    assert model_config["tie_word_embeddings"] is True
    assert list(stored) == [pl.name for pl in plan_params("smollm3", model_config)]
    assert "lm_head.weight" not in stored
    qkv = np.concatenate([hf[f"model.layers.3.self_attn.{x}_proj.weight"] for x in "qkv"])
    np.testing.assert_array_equal(stored["model.layers.3.self_attn.qkv_proj.weight"], qkv)

    # An explicit list wins over the interval (SmolLM3-3B writes both).
    listed = hf_model_config({**config, "no_rope_layers": [0, 1, 1, 1, 1, 0]}, "smollm3")
    assert listed["no_rope_layers"] == [0, 1, 1, 1, 1]
    # transformers' defaults: interval 4, base 2e6.
    defaults = {k: v for k, v in config.items() if k not in ("no_rope_layer_interval", *rope)}
    assert hf_model_config(defaults, "smollm3")["no_rope_layers"] == [1, 1, 1, 0, 1]
    assert hf_model_config(defaults, "smollm3")["position_embedding_base"] == 2e6


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_sliding_window": True, "sliding_window": 64}, "use_sliding_window=True"),
        ({"rope_parameters": {"rope_theta": 1e6, "rope_type": "yarn", "factor": 2.0}}, "'yarn'"),
        ({"no_rope_layers": [1, 0]}, "no_rope_layers has 2 entries for 3 layers"),
        ({"no_rope_layers": [1, 2, 1]}, "no_rope_layers must be a list of 0 and 1"),
        ({"no_rope_layer_interval": 0}, "no_rope_layer_interval 0"),
        ({"attention_bias": True}, "attention_bias=True"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ],
)
def test_smollm3_refuses_what_it_does_not_support_naming_the_field(
    overrides: dict[str, Any], message: str
) -> None:
    config = hf_config("smollm3", **{"num_hidden_layers": 3, **overrides})
    with pytest.raises(ConvertError, match=re.escape(message)):
        hf_model_config(config, "smollm3")


GEMMA3_TEXT = {
    "head_dim": 32,
    "tie_word_embeddings": True,
    "hidden_activation": "gelu_pytorch_tanh",
    "query_pre_attn_scalar": 24,
    "sliding_window": 16,
    "num_hidden_layers": 3,
    "rms_norm_eps": 1e-6,
}
GEMMA3_ROPE = {  # as transformers 5 writes it, and as 4 did
    "transformers5": {
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
    },
    "transformers4": {
        "rope_parameters": None,
        "rope_theta": 1e6,
        "rope_local_base_freq": 1e4,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window_pattern": 3,
    },
}


def write_gemma3(folder: Path, config: dict[str, Any], nested: bool) -> dict[str, np.ndarray]:
    """A Gemma-3 checkpoint: gemma3_text's `model.*`, or gemma3's `language_model.model.*` beside
    a vision tower, with config.json nesting the text settings."""
    text = {k: v for k, v in config.items() if k != "model_type"}
    tensors = hf_tensors({**config, "model_type": "gemma2"})  # the four norms per layer
    rng = np.random.default_rng(1)
    for i in range(config["num_hidden_layers"]):
        for norm in ("q_norm", "k_norm"):
            tensors[f"model.layers.{i}.self_attn.{norm}.weight"] = rng.standard_normal(32, "f4")
    if nested:
        tensors = {f"language_model.{name}": value for name, value in tensors.items()}
        tensors["vision_tower.vision_model.post_layernorm.weight"] = np.ones(8, np.float32)
        tensors["multi_modal_projector.mm_input_projection_weight"] = np.ones((8, 64), "f4")
        config = {
            "model_type": "gemma3",
            "text_config": {**text, "model_type": "gemma3_text"},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 8},
            "mm_tokens_per_image": 256,
            "eos_token_id": [1, 106],
        }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors(folder / "model.safetensors", tensors)
    return tensors


@pytest.mark.parametrize("style", ["transformers5", "transformers4"])
def test_gemma3_text_names_norms_windows_and_rope_from_either_config_style(
    tmp_path: Path, style: str
) -> None:
    config = hf_config("gemma3_text", **GEMMA3_TEXT, **GEMMA3_ROPE[style])
    hf = write_gemma3(tmp_path / "hf", config, nested=False)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32")
    chat, stored = chat_config(out), read_tensor_cache(out)
    assert list(stored) == [pl.name for pl in plan_params("gemma3_text", chat["model_config"])]
    # MLC's names and order: q, k, v, o apart, then the q/k norms, the MLP, the four norms.
    layer, hf_layer = "language_model.model.layers.2", "model.layers.2"
    assert list(stored)[-13:] == [
        f"{layer}.self_attn.q_proj.weight",
        f"{layer}.self_attn.k_proj.weight",
        f"{layer}.self_attn.v_proj.weight",
        f"{layer}.self_attn.o_proj.weight",
        f"{layer}.self_attn.q_norm.weight",
        f"{layer}.self_attn.k_norm.weight",
        f"{layer}.mlp.gate_up_proj.weight",
        f"{layer}.mlp.down_proj.weight",
        f"{layer}.input_layernorm.weight",
        f"{layer}.post_attention_layernorm.weight",
        f"{layer}.pre_feedforward_layernorm.weight",
        f"{layer}.post_feedforward_layernorm.weight",
        "language_model.model.norm.weight",
    ]
    assert next(iter(stored)) == "language_model.model.embed_tokens.weight"
    for name in ("self_attn.k_norm", "post_feedforward_layernorm"):  # stored + 1, as MLC does
        got, want = stored[f"{layer}.{name}.weight"], hf[f"{hf_layer}.{name}.weight"]
        np.testing.assert_array_equal(got, want + np.float32(1))
    np.testing.assert_array_equal(
        stored[f"{layer}.self_attn.v_proj.weight"], hf[f"{hf_layer}.self_attn.v_proj.weight"]
    )
    model_config = chat["model_config"]
    text = model_config["text_config"]
    assert text["layer_types"] == ["sliding_attention", "sliding_attention", "full_attention"]
    assert text["position_embedding_base"] == 1e6
    assert text["rope_local_base_freq"] == 1e4
    assert text["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}
    assert text["sliding_window_size"] == 16
    assert text["query_pre_attn_scalar"] == 24
    # The runtime must not slide the cache (the full layers read it whole): the window lives in
    # text_config; prefill chunks stay shorter than it; the context is transformers'.
    assert chat["sliding_window_size"] == model_config["sliding_window_size"] == -1
    assert chat["attention_sink_size"] == -1
    assert chat["prefill_chunk_size"] == model_config["prefill_chunk_size"] == 15
    assert chat["context_window_size"] == 256
    assert model_config["is_text_model"] is True


def test_gemma3_nested_text_config_converts_to_the_same_model_config(tmp_path: Path) -> None:
    config = hf_config("gemma3_text", **GEMMA3_TEXT, **GEMMA3_ROPE["transformers5"])
    hf = write_gemma3(tmp_path / "text", config, nested=False)
    write_gemma3(tmp_path / "vlm", config, nested=True)
    text = chat_config(convert_checkpoint(tmp_path / "text", tmp_path / "a", "q0f32"))
    out = convert_checkpoint(tmp_path / "vlm", tmp_path / "b", "q0f32")
    vlm, stored = chat_config(out), read_tensor_cache(out)
    assert vlm["model_type"] == "gemma3"
    assert vlm["model_config"] == {**text["model_config"], "is_text_model": False}
    # The same parameters, read from language_model.model.*; the vision tower is left out.
    assert list(stored) == [pl.name for pl in plan_params("gemma3_text", text["model_config"])]
    np.testing.assert_array_equal(
        stored["language_model.model.layers.1.self_attn.q_proj.weight"],
        hf["model.layers.1.self_attn.q_proj.weight"],
    )
    assert vlm["eos_token_id"] == [1, 106]


def test_gemma3_fills_what_a_released_config_leaves_out_with_transformers_defaults() -> None:
    # Gemma-3-4B's config.json: the text_config has five keys.
    released = {
        "model_type": "gemma3",
        "text_config": {
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "model_type": "gemma3_text",
            "num_hidden_layers": 34,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "sliding_window": 1024,
        },
    }
    model_config = hf_model_config(released, "gemma3")
    text = model_config["text_config"]
    heads = (text["num_attention_heads"], text["num_key_value_heads"], text["head_dim"])
    assert heads == (8, 4, 256)
    assert text["layer_types"].count("full_attention") == 5  # every sixth of 34
    assert text["layer_types"][5] == "full_attention"
    assert (text["position_embedding_base"], text["rope_local_base_freq"]) == (1e6, 1e4)
    assert text["rope_scaling"]["factor"] == 8.0
    assert model_config["vocab_size"] == 262_208
    assert model_config["context_window_size"] == 131_072
    assert model_config["prefill_chunk_size"] == 1023


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0}}},
            "rope_parameters.full_attention rope_type 'yarn' is not supported (linear only)",
        ),
        (
            {"rope_parameters": {"sliding_attention": {"rope_type": "linear", "factor": 2.0}}},
            "rope_parameters.sliding_attention: scaling the local layers' RoPE",
        ),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling rope_type"),
        ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping=50.0 is not supported"),
        ({"use_bidirectional_attention": True}, "use_bidirectional_attention=True"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings=False: an untied lm_head"),
        ({"layer_types": ["sliding_attention"] * 3}, "has no 'full_attention' layer"),
        ({"layer_types": ["full_attention"]}, "layer_types has 1 entries for 3 layers"),
        ({"layer_types": ["local"] * 3}, "layer_types must list"),
        ({"sliding_window_pattern": 0}, "sliding_window_pattern 0"),
    ],
)
def test_gemma3_refuses_what_it_does_not_support_naming_the_field(
    overrides: dict[str, Any], message: str
) -> None:
    config = hf_config("gemma3_text", **{**GEMMA3_TEXT, **overrides})
    with pytest.raises(ConvertError, match=re.escape(message)):
        hf_model_config(config, "gemma3_text")
    nested = {"model_type": "gemma3", "text_config": config}
    with pytest.raises(ConvertError, match=re.escape("text_config.")):
        hf_model_config(nested, "gemma3")
    with pytest.raises(ConvertError, match="gemma3 has no text_config object"):
        hf_model_config({"model_type": "gemma3"}, "gemma3")


@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_gpt2_conv1d_weights_are_transposed_and_either_naming_is_read(
    tmp_path: Path, prefix: str
) -> None:
    # transformers writes "transformer.h.0..."; GPT-2's original checkpoints say "h.0...".
    config = {
        "model_type": "gpt2",
        "n_embd": 64,
        "n_head": 4,
        "n_layer": 1,
        "n_positions": 128,
        "n_inner": None,
        "vocab_size": 80,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
    }
    rng = np.random.default_rng(3)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    tensors = {"wte.weight": w(80, 64), "wpe.weight": w(128, 64)}
    for name, shape in {
        "ln_1": (64,),
        "attn.c_attn": (64, 192),  # Conv1D: [in, out]
        "attn.c_proj": (64, 64),
        "ln_2": (64,),
        "mlp.c_fc": (64, 256),
        "mlp.c_proj": (256, 64),
    }.items():
        tensors[f"h.0.{name}.weight"] = w(*shape)
        tensors[f"h.0.{name}.bias"] = w(shape[-1])
    tensors |= {"ln_f.weight": w(64), "ln_f.bias": w(64)}
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(config))
    write_safetensors(src / "model.safetensors", {prefix + n: t for n, t in tensors.items()})
    out = convert_checkpoint(src, tmp_path / "mlc", "q0f32")
    stored = read_tensor_cache(out)
    assert list(stored)[:4] == [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_1.bias",
    ]
    assert list(stored)[-1] == "lm_head.weight"
    c_attn = stored["transformer.h.0.attn.c_attn.weight"]
    np.testing.assert_array_equal(c_attn, tensors["h.0.attn.c_attn.weight"].T)
    np.testing.assert_array_equal(stored["lm_head.weight"], tensors["wte.weight"])
    model_config = chat_config(out)["model_config"]
    assert (model_config["n_inner"], model_config["n_positions"]) == (256, 128)
    assert model_config["context_window_size"] == 128


def neox_config(style: str = "transformers5", **overrides: Any) -> dict[str, Any]:
    """A GPT-NeoX config.json in the spelling of transformers 4 or 5; 4 heads of 16 dims."""
    config: dict[str, Any] = {
        "model_type": "gpt_neox",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 80,
        "max_position_embeddings": 256,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "use_parallel_residual": True,
        "attention_bias": True,
        "tie_word_embeddings": False,
    }
    if style == "transformers5":
        config["rope_parameters"] = {
            "rope_theta": 20000.0,
            "partial_rotary_factor": 0.5,
            "rope_type": "default",
        }
    else:
        config |= {"rotary_emb_base": 20000, "rotary_pct": 0.5, "rope_scaling": None}
    config.update(overrides)
    return config


def write_neox_checkpoint(folder: Path, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """config.json + random weights with transformers' GPT-NeoX names; returns the weights."""
    rng = np.random.default_rng(5)
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    tensors = {"gpt_neox.embed_in.weight": w(vocab, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}"
        for name, (rows, cols) in {
            "attention.query_key_value": (3 * h, h),
            "attention.dense": (h, h),
            "mlp.dense_h_to_4h": (inter, h),
            "mlp.dense_4h_to_h": (h, inter),
        }.items():
            tensors[f"{p}.{name}.weight"] = w(rows, cols)
            if name.startswith("mlp") or config.get("attention_bias", True):
                tensors[f"{p}.{name}.bias"] = w(rows)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors |= {f"{p}.{norm}.weight": w(h), f"{p}.{norm}.bias": w(h)}
        tensors[f"{p}.attention.rotary_emb.inv_freq"] = w(4)  # old checkpoints have it: unused
    tensors |= {
        "gpt_neox.final_layer_norm.weight": w(h),
        "gpt_neox.final_layer_norm.bias": w(h),
        "embed_out.weight": w(vocab, h),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors(folder / "model.safetensors", tensors)
    return tensors


def heads_qkv_to_mlc(fused: np.ndarray, heads: int) -> np.ndarray:
    """The checkpoint's per-head [q, k, v] rows as [all q; all k; all v], picked row by row."""
    d = fused.shape[0] // (3 * heads)
    order = [h * 3 * d + part * d + r for part in range(3) for h in range(heads) for r in range(d)]
    return fused[order]


@pytest.mark.parametrize("style", ["transformers5", "transformers4"])
def test_gpt_neox_qkv_rows_are_reordered_and_the_mlp_biases_kept_in_float32(
    tmp_path: Path, style: str
) -> None:
    hf = write_neox_checkpoint(tmp_path / "hf", neox_config(style))
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f16")
    chat, stored = chat_config(out), read_tensor_cache(out)
    model_config = chat["model_config"]
    # MLC's GPTNeoXConfig keys, either spelling read.
    assert model_config == {
        "use_parallel_residual": True,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "layer_norm_eps": 1e-5,
        "vocab_size": 80,
        "rotary_pct": 0.5,
        "position_embedding_base": 20000.0,
        "head_dim": 16,
        "ffn_out_dtype": "float32",
        "hidden_act": "gelu",
        "attention_bias": True,
        "tie_word_embeddings": False,
        "context_window_size": 256,
        "prefill_chunk_size": 256,
        "tensor_parallel_shards": 1,
        "max_batch_size": 1,
    }
    p = "gpt_neox.layers.1"
    assert list(stored)[:1] + [n for n in stored if n.startswith(f"{p}.")] == [
        "gpt_neox.embed_in.weight",
        f"{p}.input_layernorm.weight",
        f"{p}.input_layernorm.bias",
        f"{p}.post_attention_layernorm.weight",
        f"{p}.post_attention_layernorm.bias",
        f"{p}.attention.query_key_value.weight",
        f"{p}.attention.query_key_value.bias",
        f"{p}.attention.dense.weight",
        f"{p}.attention.dense.bias",
        f"{p}.mlp.dense_h_to_4h.weight",
        f"{p}.mlp.dense_h_to_4h.bias",
        f"{p}.mlp.dense_4h_to_h.weight",
        f"{p}.mlp.dense_4h_to_h.bias",
    ]
    assert list(stored)[-3:] == [
        "gpt_neox.final_layer_norm.weight",
        "gpt_neox.final_layer_norm.bias",
        "embed_out.weight",
    ]
    assert list(stored) == [pl.name for pl in plan_params("gpt_neox", model_config)]
    qkv = f"{p}.attention.query_key_value"
    for part in ("weight", "bias"):
        want = heads_qkv_to_mlc(hf[f"{qkv}.{part}"], heads=4).astype(np.float16)
        np.testing.assert_array_equal(stored[f"{qkv}.{part}"], want)
    dtypes = {r["name"]: r["dtype"] for r in records(out)}
    assert {n for n, d in dtypes.items() if d == "float32"} == {
        f"gpt_neox.layers.{i}.mlp.{m}.bias"
        for i in range(2)
        for m in ("dense_h_to_4h", "dense_4h_to_h")
    }
    np.testing.assert_array_equal(
        stored[f"{p}.mlp.dense_4h_to_h.bias"], hf[f"{p}.mlp.dense_4h_to_h.bias"]
    )


def test_gpt_neox_q4_quantizes_the_reordered_qkv_and_may_lack_attention_biases(
    tmp_path: Path,
) -> None:
    config = neox_config(attention_bias=False, use_parallel_residual=False)
    hf = write_neox_checkpoint(tmp_path / "hf", config)
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q4f16_1")
    stored = read_tensor_cache(out)
    names = list(stored)
    assert not any(n.endswith(("query_key_value.bias", "attention.dense.bias")) for n in names)
    assert names == [
        n
        for pl in plan_params("gpt_neox", chat_config(out)["model_config"])
        for n in (
            [pl.name.replace(".weight", ".q_weight"), pl.name.replace(".weight", ".q_scale")]
            if pl.quantizable
            else [pl.name]
        )
    ]
    qkv = "gpt_neox.layers.0.attention.query_key_value"
    q_weight, q_scale = quantize_groups(heads_qkv_to_mlc(hf[f"{qkv}.weight"], 4), np.float16, Q4)
    np.testing.assert_array_equal(stored[f"{qkv}.q_weight"], q_weight)
    np.testing.assert_array_equal(stored[f"{qkv}.q_scale"], q_scale)
    assert stored["gpt_neox.layers.0.mlp.dense_h_to_4h.bias"].dtype == np.float32
    assert stored["embed_out.q_weight"].shape == (80, 8)
    model_config = chat_config(out)["model_config"]
    assert (model_config["attention_bias"], model_config["use_parallel_residual"]) == (False, False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_act": "relu"}, r"hidden_act 'relu' is not supported for gpt_neox"),
        (
            {"rope_parameters": {"rope_theta": 1e4, "rope_type": "linear", "factor": 2.0}},
            r"rope_parameters\.rope_type 'linear' is not supported",
        ),
        (
            {"rope_parameters": None, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
            r"rope_scaling\.rope_type 'dynamic' is not supported",
        ),
        ({"tie_word_embeddings": True}, r"tie_word_embeddings=true is not supported"),
        (
            {"rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.3125}},
            r"rotary_pct 0\.3125 gives 5 rotary dims of head_dim 16",
        ),
        ({"num_attention_heads": 5}, r"hidden_size 64 is not a multiple of num_attention_heads 5"),
    ],
)
def test_gpt_neox_settings_we_cannot_run_are_refused_by_name(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    write_neox_checkpoint(tmp_path / "hf", neox_config(**overrides))
    with pytest.raises(ConvertError, match=message):
        convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32")


def test_gpt_neox_defaults_are_transformers_when_config_json_leaves_them_out(
    tmp_path: Path,
) -> None:
    # An old Pythia-style config.json: no rotary settings, no attention_bias, no residual flag.
    config = neox_config("transformers4")
    for key in ("rotary_emb_base", "rotary_pct", "rope_scaling", "attention_bias"):
        del config[key]
    del config["use_parallel_residual"], config["layer_norm_eps"], config["hidden_act"]
    write_neox_checkpoint(tmp_path / "hf", config)
    model_config = chat_config(convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32"))[
        "model_config"
    ]
    assert model_config["rotary_pct"] == 0.25
    assert model_config["position_embedding_base"] == 10000.0
    assert model_config["use_parallel_residual"] is True
    assert model_config["attention_bias"] is True
    assert (model_config["hidden_act"], model_config["layer_norm_eps"]) == ("gelu", 1e-5)


def test_chat_config_fields_tokens_and_tokenizer_files(tmp_path: Path) -> None:
    src = tmp_path / "hf"
    write_checkpoint(src, hf_config("mistral", sliding_window=32, max_position_embeddings=4096))
    (src / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": [2, 7], "temperature": 0.6})
    )
    (src / "tokenizer.json").write_text(json.dumps({"decoder": {"type": "ByteLevel"}}))
    (src / "tokenizer_config.json").write_text("{}")
    chat = chat_config(convert_checkpoint(src, tmp_path / "mlc", "q4f32_1"))
    assert chat["version"] == "0.1.0"
    assert (chat["model_type"], chat["quantization"]) == ("mistral", "q4f32_1")
    assert chat["vocab_size"] == chat["model_config"]["vocab_size"] == 80
    # One less than transformers' window, no sinks: what matches transformers on TVM's cache.
    assert chat["sliding_window_size"] == chat["model_config"]["sliding_window_size"] == 31
    assert chat["attention_sink_size"] == 0
    assert chat["context_window_size"] == -1
    assert chat["prefill_chunk_size"] == chat["model_config"]["prefill_chunk_size"] == 31
    assert chat["tensor_parallel_shards"] == 1
    assert chat["eos_token_id"] == [2, 7] and chat["bos_token_id"] == 1
    assert chat["temperature"] == 0.6
    assert chat["conv_template"]["stop_token_ids"] == [2, 7]
    assert chat["tokenizer_files"] == ["tokenizer.json", "tokenizer_config.json"]
    assert chat["tokenizer_info"]["token_postproc_method"] == "byte_level"
    assert (tmp_path / "mlc" / "tokenizer.json").read_text() == (src / "tokenizer.json").read_text()

    write_checkpoint(tmp_path / "llama", hf_config())
    llama = chat_config(convert_checkpoint(tmp_path / "llama", tmp_path / "l", "q0f32"))
    assert llama["sliding_window_size"] == -1 and llama["attention_sink_size"] == -1
    assert llama["context_window_size"] == 256 and llama["prefill_chunk_size"] == 256
    assert llama["tokenizer_files"] == []


# ------------------------------------------------------------------------------------------------
# Shards, md5, streaming


def test_shards_respect_the_cap_and_md5_matches(tmp_path: Path) -> None:
    assert convert.SHARD_CAP_BYTES == 32 << 20  # MLC's limit, the default
    write_checkpoint(tmp_path / "hf", hf_config(vocab_size=512))
    cap = 40_000  # embed/lm_head (512 x 64 f32 = 131072 bytes) exceed it: a shard of their own
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32", shard_cap_bytes=cap)
    index = json.loads((out / "tensor-cache.json").read_text())
    shards = index["records"]
    assert len(shards) > 3
    assert sorted(p.name for p in out.glob("params_shard_*.bin")) == sorted(
        s["dataPath"] for s in shards
    )
    for k, shard in enumerate(shards):
        data = (out / shard["dataPath"]).read_bytes()
        assert shard["dataPath"] == f"params_shard_{k}.bin"
        assert shard["format"] == "raw-shard"
        assert shard["nbytes"] == len(data)
        assert shard["md5sum"] == hashlib.md5(data).hexdigest()
        assert len(data) <= cap or len(shard["records"]) == 1
        offset = 0
        for rec in shard["records"]:  # records packed back to back
            assert rec["byteOffset"] == offset
            assert rec["nbytes"] == int(np.prod(rec["shape"])) * np.dtype(rec["dtype"]).itemsize
            offset += rec["nbytes"]
        assert offset == len(data)
    meta = index["metadata"]
    assert meta["ParamBytes"] == sum(s["nbytes"] for s in shards)
    assert meta["BitsPerParam"] == 32.0


@pytest.mark.parametrize("quantization", ["q0f32", "q4f16_1"])
def test_conversion_streams_one_tensor_at_a_time(tmp_path: Path, quantization: str) -> None:
    # 8 MiB embeddings and lm_head, 4 MiB MLP weights: ~56 MiB in all.
    config = hf_config(hidden_size=512, intermediate_size=2048, vocab_size=4096)
    config["num_attention_heads"], config["num_key_value_heads"] = 8, 8
    tensors = write_checkpoint(tmp_path / "hf", config)
    total = sum(t.nbytes for t in tensors.values())
    largest = max(t.nbytes for t in tensors.values())
    del tensors
    tracemalloc.start()
    try:
        convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", quantization)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 6 * largest
    assert peak < 2 * largest, f"peak {peak / 2**20:.1f} MiB, largest {largest / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------------------------
# Errors and the command line


def test_unsupported_model_type_and_missing_pieces(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "gpt", hf_config(model_type="mamba"))
    with pytest.raises(ConvertError, match=r"unsupported model_type 'mamba'; supported: llama"):
        convert_checkpoint(tmp_path / "gpt", tmp_path / "o1", "q0f32")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match=r"has no config\.json"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "o2", "q0f32")
    write_checkpoint(tmp_path / "llama", hf_config())
    with pytest.raises(ConvertError, match="unsupported quantization 'q2f16_1'"):
        convert_checkpoint(tmp_path / "llama", tmp_path / "o3", "q2f16_1")
    (tmp_path / "llama" / "model.safetensors").unlink()
    with pytest.raises(ConvertError, match=r"has no \*.safetensors"):
        convert_checkpoint(tmp_path / "llama", tmp_path / "o4", "q0f32")
    write_checkpoint(tmp_path / "tied", hf_config(tie_word_embeddings=False))
    tensors = hf_tensors(hf_config(tie_word_embeddings=True))
    write_safetensors(tmp_path / "tied" / "model.safetensors", tensors)  # lm_head missing
    with pytest.raises(ConvertError, match=r"lacks tensors: lm_head\.weight"):
        convert_checkpoint(tmp_path / "tied", tmp_path / "o5", "q0f32")
    assert not (tmp_path / "o5" / "mlc-chat-config.json").exists()


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_checkpoint(tmp_path / "hf", hf_config("qwen2"))
    # The real command line once, in a child process as a user runs it.
    done = subprocess.run(
        [sys.executable, "-m", "packaging_plugin.sources.convert", str(tmp_path / "hf"),
         str(tmp_path / "mlc"), "--quantization", "q4f16_1"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "q4f16_1" in done.stdout
    assert chat_config(tmp_path / "mlc")["quantization"] == "q4f16_1"

    write_checkpoint(tmp_path / "gpt", hf_config(model_type="mamba"))
    assert (
        convert.main([str(tmp_path / "gpt"), str(tmp_path / "o"), "--quantization", "q0f32"]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("convert failed: ") and "unsupported model_type 'mamba'" in err
    assert "Traceback" not in err
    assert (
        convert.main([str(tmp_path / "none"), str(tmp_path / "o"), "--quantization", "q0f32"]) == 1
    )
    assert "has no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse: missing --quantization
        convert.main([str(tmp_path / "hf"), str(tmp_path / "o")])
    assert usage.value.code == 2


def test_a_git_lfs_pointer_instead_of_the_weights_is_named_as_such(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "hf", hf_config("llama"))
    (tmp_path / "hf" / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4242\n"
    )
    with pytest.raises(
        ConvertError,
        match=r"model\.safetensors is not a readable safetensors "
        r"file: it is a Git LFS pointer, not the weights \(run `git lfs pull`\)",
    ):
        convert_checkpoint(tmp_path / "hf", tmp_path / "mlc", "q0f32")
