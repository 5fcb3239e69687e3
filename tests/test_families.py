"""Every family the demo configs ship, packaged for each device, read back from the archive.

The demo configs are what a new user packages first (README): each must package all of them
(llama, mistral, qwen2, qwen3, gemma, gemma2, phi3, gpt2, with a q4f16_0 model among them). The
function set each library must export is written out here from the runtime's contract, and each
library's function table and `_metadata` are read from the combined archive's objects.

Then the chat configs MLC itself writes for the models of its example apps (full-size shapes,
no weights needed to compile) compile, and their libraries list the parameters MLC's converter
stores, with MLC's names and quantized shapes.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from packaging_plugin.checks import objects
from packaging_plugin.checks.library_contents import read_library_contents
from packaging_plugin.config.chat_config import build_compile_request, read_chat_config
from packaging_plugin.config.devices import DEVICES
from packaging_plugin.families import FAMILY_NAMES, family_of
from tests.helpers.mlc_chat_configs import chat_config
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.paths import REPO
from tests.helpers.runtime import GPU_SAMPLER_FUNCTIONS, RUNTIME_FUNCTIONS

pytestmark = pytest.mark.slow  # packaging runs of whole demo configs; full-size compiles


@pytest.mark.parametrize("device", ["android", "iphone", "linux"])
def test_the_demo_config_packages_every_family_with_the_runtime_function_set(
    pytester: pytest.Pytester, package_env: Path, device: str
) -> None:
    config = REPO / "configs" / f"demo-{device}.json"
    dist = pytester.path / "dist"
    result = pytester.runpytest_subprocess(
        f"--package-config={config}", f"--package-output={dist}", "-p", "no:randomly"
    )
    entries = json.loads(config.read_text())["model_list"]
    # Every step passes; off linux the bindings are skipped, naming what is missing.
    result.assert_outcomes(**expected_outcomes(config))

    members = objects.read_archive(dist / "lib" / f"libmodel_{device}.a")
    app_config = json.loads((dist / "bundle" / "mlc-app-config.json").read_text())
    assert [m["model_id"] for m in app_config["model_list"]] == [e["model_id"] for e in entries]
    model_types, quantizations = set(), set()
    for app_entry, entry in zip(app_config["model_list"], entries, strict=True):
        model_lib = app_entry["model_lib"]
        own = [m for m in members if m.name.startswith(f"{model_lib}_")]
        contents = read_library_contents(own, model_lib, DEVICES[device])
        expected = RUNTIME_FUNCTIONS | (GPU_SAMPLER_FUNCTIONS if device == "iphone" else set())
        assert expected <= contents.functions, (model_lib, expected - contents.functions)
        # The chat config the app ships (converted, for the checkpoint entry) matches the library.
        chat = read_chat_config(dist / "bundle" / entry["model_id"])
        assert contents.metadata is not None
        assert contents.metadata["model_type"] == chat["model_type"]
        assert contents.metadata["quantization"] == chat["quantization"]
        model_types.add(chat["model_type"])
        quantizations.add(chat["quantization"])
    # Every family, and MLC's two weight layouts at both bit widths.
    assert {family_of(model_type) for model_type in model_types} == set(FAMILY_NAMES)
    assert {"q4f16_0", "q4f16_1", "q3f16_1"} <= quantizations


# ------------------------------------------------------------------------------------------------
# Chat configs as MLC writes them for the models its example apps ship


def redpajama_3b_chat_config() -> dict[str, Any]:
    """mlc-ai/RedPajama-INCITE-Chat-3B-v1-q4f16_1-MLC's mlc-chat-config.json (the shaping fields):
    sequential residual, full rotary embedding, MLP in float32."""
    return {
        "model_type": "gpt_neox",
        "quantization": "q4f16_1",
        "model_config": {
            "use_parallel_residual": False,
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "layer_norm_eps": 1e-05,
            "vocab_size": 50432,
            "rotary_pct": 1.0,
            "position_embedding_base": 10000,
            "context_window_size": 2048,
            "head_dim": 80,
            "prefill_chunk_size": 2048,
            "tensor_parallel_shards": 1,
            "ffn_out_dtype": "float32",
            "max_batch_size": 80,
        },
        "vocab_size": 50432,
        "context_window_size": 2048,
        "sliding_window_size": -1,
        "prefill_chunk_size": 2048,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
    }


def gemma3_1b_chat_config() -> dict[str, Any]:
    """Gemma-3-1B's chat config in the shape MLC's `Gemma3Config` writes it (its dataclass
    fields, the text settings nested in text_config, with the HF keys it keeps beside them):
    no `layer_types` (MLC's pattern is 6) and the window also at the top level."""
    text = {
        "hidden_size": 1152,
        "intermediate_size": 6912,
        "num_hidden_layers": 26,
        "attention_bias": False,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "rms_norm_eps": 1e-06,
        "hidden_activation": "gelu_pytorch_tanh",
        "position_embedding_base": 1000000.0,
        "rope_scaling": None,
        "context_window_size": 8192,
        "prefill_chunk_size": 8192,
        "query_pre_attn_scalar": 256,
        "sliding_window_size": 512,
        "rope_local_base_freq": 10000.0,
        "sliding_window_pattern": 6,
        "max_position_embeddings": 32768,
    }
    return {
        "model_type": "gemma3_text",
        "quantization": "q4f16_1",
        "model_config": {
            "text_config": text,
            "vocab_size": 262144,
            "tensor_parallel_shards": 1,
            "max_batch_size": 128,
            "context_window_size": 8192,
            "sliding_window_size": 512,
            "prefill_chunk_size": 8192,
            "is_text_model": True,
        },
        "vocab_size": 262144,
        "context_window_size": 8192,
        "sliding_window_size": 512,
        "prefill_chunk_size": 8192,
        "attention_sink_size": 0,
        "tensor_parallel_shards": 1,
    }


# (chat config, {MLC parameter: (shape, dtype)} as MLC's q4f16_1 converter stores them)
MLC_EXAMPLES = {
    "gemma-2-2b": (
        partial(chat_config, "gemma-2-2b-it-q4f16_1-MLC"),
        {
            "model.embed_tokens.q_weight": (["vocab_size", 288], "uint32"),
            "model.embed_tokens.q_scale": (["vocab_size", 72], "float16"),
            "model.layers.0.self_attn.qkv_proj.q_weight": ([4096, 288], "uint32"),
            "model.layers.0.self_attn.o_proj.q_weight": ([2304, 256], "uint32"),
            "model.layers.0.mlp.gate_up_proj.q_weight": ([18432, 288], "uint32"),
            "model.layers.0.mlp.down_proj.q_scale": ([2304, 288], "float16"),
            "model.layers.25.pre_feedforward_layernorm.weight": ([2304], "float16"),
            "model.layers.25.post_feedforward_layernorm.weight": ([2304], "float16"),
            "model.norm.weight": ([2304], "float16"),
        },
    ),
    "gemma-3-1b": (
        gemma3_1b_chat_config,
        {
            "language_model.model.embed_tokens.q_weight": (["vocab_size", 144], "uint32"),
            "language_model.model.embed_tokens.q_scale": (["vocab_size", 36], "float16"),
            "language_model.model.layers.0.self_attn.q_proj.q_weight": ([1024, 144], "uint32"),
            "language_model.model.layers.0.self_attn.k_proj.q_weight": ([256, 144], "uint32"),
            "language_model.model.layers.0.self_attn.v_proj.q_scale": ([256, 36], "float16"),
            "language_model.model.layers.0.self_attn.o_proj.q_weight": ([1152, 128], "uint32"),
            "language_model.model.layers.0.self_attn.q_norm.weight": ([256], "float16"),
            "language_model.model.layers.0.mlp.gate_up_proj.q_weight": ([13824, 144], "uint32"),
            "language_model.model.layers.0.mlp.down_proj.q_weight": ([1152, 864], "uint32"),
            "language_model.model.layers.25.post_feedforward_layernorm.weight": (
                [1152],
                "float16",
            ),
            "language_model.model.norm.weight": ([1152], "float16"),
        },
    ),
    "phi-3.5-mini": (
        partial(chat_config, "Phi-3.5-mini-instruct-q4f16_1-MLC"),
        {
            "transformer.embd.q_weight": ([32064, 384], "uint32"),
            "transformer.h.0.ln.weight": ([3072], "float16"),
            "transformer.h.0.mixer.qkv_proj.q_weight": ([9216, 384], "uint32"),
            "transformer.h.0.mixer.out_proj.q_scale": ([3072, 96], "float16"),
            "transformer.h.31.mlp.gate_up_proj.q_weight": ([16384, 384], "uint32"),
            "transformer.h.31.post_attention_layernorm.weight": ([3072], "float16"),
            "transformer.norm.weight": ([3072], "float16"),
            "lm_head.q_weight": (["vocab_size", 384], "uint32"),
        },
    ),
    "redpajama-3b": (
        redpajama_3b_chat_config,
        {
            "gpt_neox.embed_in.q_weight": (["vocab_size", 320], "uint32"),
            "gpt_neox.embed_in.q_scale": (["vocab_size", 80], "float16"),
            "gpt_neox.layers.0.input_layernorm.bias": ([2560], "float16"),
            "gpt_neox.layers.0.attention.query_key_value.q_weight": ([7680, 320], "uint32"),
            "gpt_neox.layers.0.attention.query_key_value.bias": ([7680], "float16"),
            "gpt_neox.layers.0.attention.dense.q_scale": ([2560, 80], "float16"),
            # MLC keeps the MLP biases in ffn_out_dtype (float32), not the model's float16.
            "gpt_neox.layers.0.mlp.dense_h_to_4h.bias": ([10240], "float32"),
            "gpt_neox.layers.31.mlp.dense_4h_to_h.q_weight": ([2560, 1280], "uint32"),
            "gpt_neox.layers.31.mlp.dense_4h_to_h.bias": ([2560], "float32"),
            "gpt_neox.final_layer_norm.weight": ([2560], "float16"),
            "embed_out.q_weight": (["vocab_size", 320], "uint32"),
        },
    ),
}


@pytest.mark.parametrize("example", list(MLC_EXAMPLES))
def test_a_chat_config_written_by_mlc_compiles_with_mlcs_parameters(
    example: str, tmp_path: Path
) -> None:
    make_chat, expected = MLC_EXAMPLES[example]
    request = build_compile_request(make_chat(), {"prefill_chunk_size": 128}, "android")
    from packaging_plugin.compile.pipeline import compile_library

    tar = tmp_path / "lib.tar"
    compile_library({**request, "system_lib_prefix": "mlc_example_"}, tar)
    contents = read_library_contents(
        objects.read_library_tar(tar), "mlc_example", DEVICES["android"]
    )
    assert contents.functions >= RUNTIME_FUNCTIONS
    meta = contents.metadata
    assert meta is not None
    params = {p["name"]: (p["shape"], p["dtype"]) for p in meta["params"]}
    for name, shape_and_dtype in expected.items():
        assert params.get(name) == shape_and_dtype, name
    chat = make_chat()
    assert meta["prefill_chunk_size"] == 128
    assert meta["context_window_size"] == chat["context_window_size"]
    text = chat["model_config"].get("text_config") or chat["model_config"]  # gemma3 nests it
    assert meta["kv_cache"]["head_dim"] == text["head_dim"]
    # Every layer's parameters, in MLC's packed order: the layer index never goes back.
    layers = [
        int(parts[parts.index(key) + 1])
        for parts in (n.split(".") for n in params)
        for key in ("layers", "h")
        if key in parts
    ]
    assert layers == sorted(layers) and layers[-1] == text["num_hidden_layers"] - 1
