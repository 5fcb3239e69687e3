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
    assert meta["kv_cache"]["head_dim"] == chat["model_config"]["head_dim"]
    # Every layer's parameters, in MLC's packed order: the layer index never goes back.
    layers = [int(n.split(".")[2]) for n in params if n.split(".")[1] in ("layers", "h")]
    assert layers == sorted(layers) and layers[-1] == chat["model_config"]["num_hidden_layers"] - 1
