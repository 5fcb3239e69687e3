"""Checking mlc-package-config.json and mlc-chat-config.json (packaging_plugin/config/).

Every test writes its files in tmp_path: a config, and tiny model directories holding only an
mlc-chat-config.json (or a Hugging Face config.json).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from packaging_plugin.config.chat_config import (
    build_compile_request,
    default_model_lib,
    read_chat_config,
)
from packaging_plugin.config.names import PACKAGE_NODE_NAME
from packaging_plugin.config.package_config import PackageConfig, load_package_config
from packaging_plugin.config.problems import ConfigError
from packaging_plugin.families import SUPPORTED_MODEL_TYPES
from packaging_plugin.quantization.schemes import SUPPORTED_QUANTIZATIONS

CONFIG_NAME = "mlc-package-config.json"

LLAMA_MODEL_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "rms_norm_eps": 1e-05,
    "vocab_size": 256,
    "position_embedding_base": 10000.0,
    "context_window_size": 512,
    "prefill_chunk_size": 128,
    "max_batch_size": 128,
}


def chat_config(model_type: str = "llama", quantization: str = "q4f16_1", **top: Any) -> dict:
    """A minimal mlc-chat-config.json as MLC's gen_config writes it."""
    config: dict[str, Any] = {
        "version": "0.1.0",
        "model_type": model_type,
        "quantization": quantization,
        "model_config": dict(LLAMA_MODEL_CONFIG),
        "vocab_size": 256,
        "context_window_size": 512,
        "sliding_window_size": -1,
        "prefill_chunk_size": 128,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "temperature": 0.6,
        "conv_template": {"name": "llama-3"},
    }
    config.update(top)
    return config


def make_model(directory: Path, config: dict | None = None) -> Path:
    """A fake MLC model directory: just its mlc-chat-config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mlc-chat-config.json").write_text(json.dumps(config or chat_config()))
    return directory


def local_entry(model: str = "./models/tiny", model_id: str = "tiny", **extra: Any) -> dict:
    return {
        "model": model,
        "model_id": model_id,
        "estimated_vram_bytes": 1000,
        "bundle_weight": True,
        **extra,
    }


def hf_entry(
    model_id: str = "qwen", repo: str = "mlc-ai/Qwen2.5-0.5B-Instruct-q4f16_1-MLC", **extra
):
    return {
        "model": f"HF://{repo}",
        "model_id": model_id,
        "estimated_vram_bytes": 1000000000,
        **extra,
    }


def write_config(tmp_path: Path, data: Any, name: str = CONFIG_NAME) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def load(tmp_path: Path, data: Any) -> PackageConfig:
    return load_package_config(write_config(tmp_path, data), cwd=tmp_path)


def problems(tmp_path: Path, data: Any, *, cwd: Path | None = None) -> list[str]:
    """The lines of the ConfigError that loading `data` raises."""
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_package_config(path, cwd=cwd or tmp_path)
    lines = str(caught.value).splitlines()
    assert lines == list(caught.value.problems)
    return lines


def only_problem(tmp_path: Path, data: Any, **kwargs: Any) -> str:
    lines = problems(tmp_path, data, **kwargs)
    assert len(lines) == 1, "\n".join(lines)
    return lines[0]


def config_with(*entries: dict, device: str = "android", **top: Any) -> dict:
    return {"device": device, "model_list": list(entries), **top}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_model(tmp_path / "models" / "tiny")


# -- the happy path -----------------------------------------------------------------------------


def test_a_valid_config_loads_every_entry_with_its_fields_resolved(tmp_path: Path, tiny: Path):
    config = load(
        tmp_path,
        config_with(
            hf_entry(overrides={"prefill_chunk_size": 128}),
            local_entry(model_lib="tiny_llama_q4f16_1", overrides={"context_window_size": 256}),
        ),
    )
    assert config.path == tmp_path / CONFIG_NAME
    assert config.device == "android"
    assert config.prebuilt_libs == {}
    hf, local = config.models
    assert (hf.index, hf.model_id, hf.hf_repo, hf.hf_revision, hf.local_dir) == (
        0,
        "qwen",
        "mlc-ai/Qwen2.5-0.5B-Instruct-q4f16_1-MLC",
        None,
        None,
    )
    assert hf.overrides == {"prefill_chunk_size": 128}
    assert hf.bundle_weight is False and hf.model_lib is None and hf.quantization is None
    assert local.index == 1 and local.local_dir == tiny.resolve() and local.hf_repo is None
    assert local.bundle_weight is True and local.model_lib == "tiny_llama_q4f16_1"
    assert local.estimated_vram_bytes == 1000 and local.is_local and not hf.is_local


def test_mlcs_own_example_config_with_gemma2_and_phi3_repositories_loads(tmp_path: Path):
    # The model_type of an HF:// entry is unknown until it is downloaded, so the config alone
    # must load even for families this packager cannot compile (yet).
    example = {
        "device": "android",
        "model_list": [
            {
                "model": "HF://mlc-ai/gemma-2-2b-it-q4f16_1-MLC",
                "model_id": "gemma-2-2b-q4f16_1-MLC",
                "estimated_vram_bytes": 3000000000,
                "overrides": {"prefill_chunk_size": 128},
            },
            {
                "model": "HF://mlc-ai/Phi-3.5-mini-instruct-q4f16_1-MLC",
                "model_id": "Phi-3.5-mini-instruct-q4f16_1-MLC",
                "estimated_vram_bytes": 4250586449,
                "overrides": {"prefill_chunk_size": 128},
            },
            {
                "model": "HF://mlc-ai/Llama-3.2-3B-Instruct-q4f16_0-MLC",
                "model_id": "Llama-3.2-3B-Instruct-q4f16_0-MLC",
                "estimated_vram_bytes": 4679979417,
                "bundle_weight": False,
            },
        ],
        "model_lib_path_for_prepare_libs": {},
    }
    config = load(tmp_path, example)
    assert [entry.model_id for entry in config.models] == [
        "gemma-2-2b-q4f16_1-MLC",
        "Phi-3.5-mini-instruct-q4f16_1-MLC",
        "Llama-3.2-3B-Instruct-q4f16_0-MLC",
    ]
    assert config.models[1].hf_repo == "mlc-ai/Phi-3.5-mini-instruct-q4f16_1-MLC"


@pytest.mark.parametrize("device", ["iphone", "macabi", "android", "linux"])
def test_every_supported_device_is_accepted(tmp_path: Path, device: str):
    assert load(tmp_path, config_with(hf_entry(), device=device)).device == device


def test_a_config_loads_the_same_from_any_working_directory(tmp_path: Path, tiny: Path):
    path = write_config(tmp_path, config_with(local_entry()))
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    assert load_package_config(path, cwd=elsewhere).models[0].local_dir == tiny.resolve()


# -- reading the file ---------------------------------------------------------------------------


def test_a_missing_config_file_is_reported_with_its_path(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nope\.json: file not found; expected the path of"):
        load_package_config(tmp_path / "nope.json")


def test_invalid_json_is_reported_with_the_file_line_and_column(tmp_path: Path):
    text = '{\n  "device": "android",\n  "model_list": [,]\n}\n'
    message = only_problem(tmp_path, text)
    assert message.startswith(f"{tmp_path / CONFIG_NAME}: line 3, column 18: invalid JSON")
    assert "expected valid JSON" in message


def test_a_trailing_comma_is_reported_with_a_hint_about_json_syntax(tmp_path: Path):
    message = only_problem(tmp_path, '{"device": "android",}')
    assert "line 1, column 22" in message and "no comments or trailing commas" in message


def test_an_empty_config_file_is_reported_as_empty(tmp_path: Path):
    assert "the file is empty" in only_problem(tmp_path, "  \n")


def test_a_top_level_that_is_not_an_object_is_rejected(tmp_path: Path):
    message = only_problem(tmp_path, [{"model": "x"}])
    assert message == (
        f"{tmp_path / CONFIG_NAME}: top level: is a list; expected a JSON object like "
        '{"device": "android", "model_list": [...]}'
    )


def test_a_byte_order_mark_written_by_some_editors_is_tolerated(tmp_path: Path):
    path = tmp_path / CONFIG_NAME
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(config_with(hf_entry())).encode())
    assert load_package_config(path, cwd=tmp_path).device == "android"


# -- top level ----------------------------------------------------------------------------------


def test_a_missing_device_is_reported_with_the_supported_devices(tmp_path: Path):
    message = only_problem(tmp_path, {"model_list": [hf_entry()]})
    assert message == (
        f"{tmp_path / CONFIG_NAME}: device: missing; "
        "expected one of: android, iphone, macabi, linux"
    )


def test_an_unknown_device_is_reported_with_a_hint_for_ios(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(), device="ios"))
    assert 'device: "ios" is not a supported device (did you mean "iphone"?)' in message
    assert "expected one of: android, iphone, macabi, linux" in message


def test_a_device_in_the_wrong_case_suggests_the_right_one(tmp_path: Path):
    assert '(did you mean "android"?)' in only_problem(
        tmp_path, config_with(hf_entry(), device="Android")
    )


def test_a_device_that_is_not_a_string_is_rejected(tmp_path: Path):
    assert "device: 3 is a number; expected one of:" in only_problem(
        tmp_path, config_with(hf_entry(), device=3)
    )


def test_a_missing_model_list_is_reported(tmp_path: Path):
    message = only_problem(tmp_path, {"device": "android"})
    assert "model_list: missing; expected a non-empty list of models" in message


def test_an_empty_model_list_is_reported(tmp_path: Path):
    message = only_problem(tmp_path, {"device": "android", "model_list": []})
    assert (
        "model_list: is empty, so there is nothing to package; expected a non-empty list" in message
    )


def test_a_model_list_that_is_not_a_list_is_rejected(tmp_path: Path):
    message = only_problem(tmp_path, {"device": "android", "model_list": hf_entry()})
    assert "model_list: is an object; expected a non-empty list of models" in message


def test_a_model_list_item_that_is_not_an_object_is_rejected(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(), "HF://mlc-ai/x"))
    assert 'model_list[1]: "HF://mlc-ai/x" is a string; expected an object with model' in message


def test_model_lib_path_for_prepare_libs_must_be_an_object(tmp_path: Path):
    message = only_problem(
        tmp_path, config_with(hf_entry(), model_lib_path_for_prepare_libs=["lib.tar"])
    )
    assert "model_lib_path_for_prepare_libs: is a list; expected an object mapping" in message


def test_model_lib_path_for_prepare_libs_values_must_be_strings(tmp_path: Path):
    data = config_with(
        hf_entry(model_lib="qwen_lib"), model_lib_path_for_prepare_libs={"qwen_lib": 7}
    )
    message = only_problem(tmp_path, data)
    assert "model_lib_path_for_prepare_libs.qwen_lib: 7 is a number; expected the path" in message


def test_an_unknown_top_level_key_suggests_the_closest_known_key(tmp_path: Path):
    data = {"device": "android", "model_list": [hf_entry()], "model_lib_paths_for_prepare_libs": {}}
    message = only_problem(tmp_path, data)
    assert message == (
        f"{tmp_path / CONFIG_NAME}: model_lib_paths_for_prepare_libs: unknown key (did you mean "
        '"model_lib_path_for_prepare_libs"?); expected one of: device, model_list, '
        "model_lib_path_for_prepare_libs"
    )


def test_a_misspelt_required_key_is_reported_once_with_a_suggestion_not_also_as_missing(
    tmp_path: Path,
):
    message = only_problem(tmp_path, {"devices": "android", "model_list": [hf_entry()]})
    assert 'devices: unknown key (did you mean "device"?)' in message


def test_an_entry_key_at_the_top_level_says_where_it_belongs(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(), bundle_weight=True))
    assert "bundle_weight: belongs in each model_list entry, not here" in message
    assert 'expected "model_list": [{"bundle_weight": true}]' in message


def test_an_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(), comment="my app"))
    assert message.endswith(
        "comment: unknown key; expected one of: device, model_list, model_lib_path_for_prepare_libs"
    )


def test_a_key_written_twice_in_one_object_is_reported(tmp_path: Path):
    text = (
        '{"device": "android", "device": "iphone", "model_list": [{"model": "HF://a/b", '
        '"model_id": "b", "model_id": "c", "estimated_vram_bytes": 1}]}'
    )
    lines = problems(tmp_path, text)
    assert len(lines) == 2
    assert (
        "device: written more than once in the same object (JSON keeps only the last)" in lines[0]
    )
    assert "model_list[0].model_id: written more than once" in lines[1]


# -- entries ------------------------------------------------------------------------------------


def test_missing_required_entry_keys_are_each_reported(tmp_path: Path):
    lines = problems(tmp_path, config_with({"bundle_weight": False}))
    assert [line.split(": ")[1] for line in lines] == [
        "model_list[0].model",
        "model_list[0].model_id",
        "model_list[0].estimated_vram_bytes",
    ]
    assert all(": missing; expected " in line for line in lines)


def test_a_misspelt_entry_key_suggests_the_closest_and_is_not_also_reported_missing(
    tmp_path: Path,
):
    entry = hf_entry()
    entry["modelid"] = entry.pop("model_id")
    message = only_problem(tmp_path, config_with(entry))
    assert (
        'model_list[0].modelid: unknown key (did you mean "model_id"?); expected one of: model,'
        in message
    )


def test_an_override_written_in_the_entry_says_it_belongs_in_overrides(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(context_window_size=2048)))
    assert message.endswith(
        'model_list[0].context_window_size: belongs in "overrides", not here; '
        'expected "overrides": {"context_window_size": 2048}'
    )


def test_the_device_written_in_an_entry_says_it_belongs_at_the_top_level(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(device="iphone")))
    assert "model_list[0].device: belongs in the top level of the config, not here" in message


def test_a_model_that_is_not_a_string_is_rejected(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(model=["HF://a/b"])))
    assert "model_list[0].model: is a list; expected HF://mlc-ai/" in message


def test_an_empty_model_id_is_rejected(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(model_id="")))
    assert "model_list[0].model_id: is empty; expected a non-empty string" in message


def test_a_model_id_that_is_not_a_string_is_rejected(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(model_id=7)))
    assert "model_list[0].model_id: 7 is a number; expected a non-empty string" in message


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (True, "true is a boolean"),
        (1.5, "1.5 is not a whole number"),
        ("3000000000", '"3000000000" is a string'),
        (-1, "-1 is negative"),
        (None, "is null"),
    ],
)
def test_estimated_vram_bytes_must_be_a_non_negative_whole_number(
    tmp_path: Path, value: Any, what: str
):
    message = only_problem(tmp_path, config_with(hf_entry(estimated_vram_bytes=value)))
    assert message.endswith(
        f"model_list[0].estimated_vram_bytes: {what}; expected a non-negative whole number of "
        "bytes, e.g. 3000000000"
    )


def test_estimated_vram_bytes_accepts_a_whole_float_like_3e9_and_stores_an_int(tmp_path: Path):
    text = '{"device": "android", "model_list": [{"model": "HF://a/b", "model_id": "b", '
    config = load(tmp_path, text + '"estimated_vram_bytes": 3e9}]}')
    value = config.models[0].estimated_vram_bytes
    assert value == 3000000000 and type(value) is int


def test_estimated_vram_bytes_may_be_zero(tmp_path: Path):
    entry = load(tmp_path, config_with(hf_entry(estimated_vram_bytes=0))).models[0]
    assert entry.estimated_vram_bytes == 0


def test_bundle_weight_must_be_a_boolean(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(bundle_weight="yes")))
    assert 'model_list[0].bundle_weight: "yes" is a string; expected true or false' in message


def test_overrides_must_be_an_object(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(overrides="prefill_chunk_size=128")))
    assert "model_list[0].overrides: " in message
    assert 'expected an object like {"prefill_chunk_size": 128}' in message


@pytest.mark.parametrize("model_lib", ["qwen2_q4f16_1", "tiny-llama", "_x", "Llama_3-2"])
def test_a_model_lib_that_is_a_c_identifier_once_dashes_become_underscores_is_accepted(
    tmp_path: Path, model_lib: str
):
    assert (
        load(tmp_path, config_with(hf_entry(model_lib=model_lib))).models[0].model_lib == model_lib
    )


@pytest.mark.parametrize("model_lib", ["9lives", "tiny.llama", "tiny llama", "", "qwen/2"])
def test_a_model_lib_that_is_no_c_identifier_is_rejected(tmp_path: Path, model_lib: str):
    message = only_problem(tmp_path, config_with(hf_entry(model_lib=model_lib)))
    assert "model_list[0].model_lib: " in message
    assert 'expected letters, digits, "_" and "-", not starting with a digit' in message
    assert "system-library prefix" in message


def test_a_null_model_lib_means_none_as_in_mlc(tmp_path: Path):
    assert load(tmp_path, config_with(hf_entry(model_lib=None))).models[0].model_lib is None


def test_a_model_lib_that_is_not_a_string_is_rejected(tmp_path: Path):
    assert "model_list[0].model_lib: 12 is a number; expected letters" in only_problem(
        tmp_path, config_with(hf_entry(model_lib=12))
    )


# -- model_id rules -----------------------------------------------------------------------------


def test_duplicate_model_ids_name_both_entries(tmp_path: Path):
    data = config_with(
        hf_entry("same"), hf_entry("other", repo="a/b"), hf_entry("same", repo="c/d")
    )
    message = only_problem(tmp_path, data)
    assert message.endswith(
        'model_list[2].model_id: "same" is also the model_id of model_list[0]; expected a unique '
        "model_id (it names the model in the app, its pytest node and its bundle folder)"
    )


def test_model_ids_that_differ_only_in_case_are_rejected_as_their_folders_would_clash(
    tmp_path: Path,
):
    message = only_problem(tmp_path, config_with(hf_entry("Tiny"), hf_entry("tiny", repo="a/b")))
    assert (
        'model_list[1].model_id: "tiny" differs from model_list[0].model_id "Tiny" only in case'
        in message
    )
    assert "case-insensitive file systems" in message


def test_the_model_id_package_is_rejected_because_it_would_clash_with_the_package_node(
    tmp_path: Path,
):
    message = only_problem(tmp_path, config_with(hf_entry(PACKAGE_NODE_NAME)))
    assert PACKAGE_NODE_NAME == "package"
    assert message.endswith(
        'model_list[0].model_id: "package" is reserved: it names the node of the package-level '
        "steps (<config>::package::library, ...); expected another model_id"
    )


@pytest.mark.parametrize(
    ("model_id", "reason"),
    [
        ("org/model", 'contains "/"'),
        ("a::b", 'contains "::"'),
        ("a\\b", 'contains "\\"'),
        (".", "is not a usable folder name"),
        ("..", "is not a usable folder name"),
        (" tiny", "has spaces at its start or end"),
        ("tiny ", "has spaces at its start or end"),
        ("ti\nny", "contains a control character"),
        ("x" * 256, "is longer than 255 bytes"),
    ],
)
def test_a_model_id_unusable_as_a_node_or_folder_name_is_rejected_with_the_reason(
    tmp_path: Path, model_id: str, reason: str
):
    message = only_problem(tmp_path, config_with(hf_entry(model_id)))
    assert f"model_list[0].model_id: {json.dumps(model_id)} {reason}; " in message
    assert "expected a name usable as a pytest node name and a folder name" in message


def test_the_model_id_of_the_app_config_file_is_rejected(tmp_path: Path):
    assert "would clash with the app config" in only_problem(
        tmp_path, config_with(hf_entry("mlc-app-config.json"))
    )


# -- model_lib shared between entries -----------------------------------------------------------


def test_one_model_lib_for_two_different_models_is_an_error_naming_both(tmp_path: Path):
    data = config_with(
        hf_entry("a", repo="mlc-ai/A-MLC", model_lib="shared"),
        hf_entry("b", repo="mlc-ai/B-MLC", model_lib="shared"),
    )
    message = only_problem(tmp_path, data)
    assert (
        'model_list[1].model_lib: "shared" is also the model_lib of model_list[0], but the '
        in message
    )
    assert "compile different libraries" in message
    assert "expected a distinct model_lib per distinct library, or no model_lib" in message


def test_one_model_lib_for_the_same_model_with_different_overrides_is_an_error(tmp_path: Path):
    data = config_with(
        hf_entry("a", model_lib="shared", overrides={"prefill_chunk_size": 128}),
        hf_entry("b", model_lib="shared", overrides={"prefill_chunk_size": 256}),
    )
    assert "model_list[1].model_lib:" in only_problem(tmp_path, data)


def test_one_model_lib_for_the_same_model_and_overrides_is_fine(tmp_path: Path):
    data = config_with(
        hf_entry("a", model_lib="shared", overrides={"prefill_chunk_size": 128}),
        hf_entry("b", model_lib="shared", overrides={"prefill_chunk_size": 128}),
    )
    assert [entry.model_lib for entry in load(tmp_path, data).models] == ["shared", "shared"]


def test_model_libs_that_are_equal_once_dashes_become_underscores_clash(tmp_path: Path):
    data = config_with(
        hf_entry("a", repo="mlc-ai/A-MLC", model_lib="tiny-llama"),
        hf_entry("b", repo="mlc-ai/B-MLC", model_lib="tiny_llama"),
    )
    message = only_problem(tmp_path, data)
    assert '"tiny_llama" and "tiny-llama" of model_list[0] are the same library prefix' in message


def test_two_local_fine_tunes_of_one_architecture_may_share_a_model_lib(tmp_path: Path):
    make_model(tmp_path / "models" / "base")
    make_model(tmp_path / "models" / "tuned", chat_config(temperature=0.2))
    data = config_with(
        local_entry("./models/base", "base", model_lib="llama_tiny"),
        local_entry("./models/tuned", "tuned", model_lib="llama_tiny"),
    )
    assert len(load(tmp_path, data).models) == 2


def test_two_local_models_of_different_sizes_may_not_share_a_model_lib(tmp_path: Path):
    make_model(tmp_path / "models" / "small")
    bigger = chat_config()
    bigger["model_config"]["num_hidden_layers"] = 4
    make_model(tmp_path / "models" / "big", bigger)
    data = config_with(
        local_entry("./models/small", "small", model_lib="llama_tiny"),
        local_entry("./models/big", "big", model_lib="llama_tiny"),
    )
    assert "model_list[1].model_lib:" in only_problem(tmp_path, data)


# -- overrides ----------------------------------------------------------------------------------


def test_every_override_mlc_understands_is_accepted(tmp_path: Path):
    overrides = {
        "context_window_size": 4096,
        "sliding_window_size": -1,
        "prefill_chunk_size": 128,
        "attention_sink_size": -1,
        "max_batch_size": 1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "opt": "O2",
    }
    assert (
        load(tmp_path, config_with(hf_entry(overrides=overrides))).models[0].overrides == overrides
    )


def test_null_override_values_mean_no_override_as_in_mlc(tmp_path: Path):
    entry = hf_entry(overrides={"context_window_size": None, "prefill_chunk_size": 64})
    assert load(tmp_path, config_with(entry)).models[0].overrides == {"prefill_chunk_size": 64}


@pytest.mark.parametrize(
    ("key", "value", "what", "expected"),
    [
        ("context_window_size", 0, "0 is out of range", "a positive integer"),
        ("context_window_size", -1, "-1 is out of range", "a positive integer"),
        ("context_window_size", "4096", '"4096" is a string', "a positive integer"),
        ("context_window_size", 4096.0, "4096.0 is a number", "a positive integer"),
        ("prefill_chunk_size", True, "true is a boolean", "a positive integer"),
        ("max_batch_size", 0, "0 is out of range", "a positive integer"),
        (
            "sliding_window_size",
            0,
            "0 is out of range",
            "a positive integer, or -1 for no sliding window",
        ),
        (
            "sliding_window_size",
            -2,
            "-2 is out of range",
            "a positive integer, or -1 for no sliding window",
        ),
        (
            "attention_sink_size",
            -2,
            "-2 is out of range",
            "a non-negative integer, or -1 for no attention sink",
        ),
    ],
)
def test_override_values_out_of_their_range_are_rejected(
    tmp_path: Path, key: str, value: Any, what: str, expected: str
):
    message = only_problem(tmp_path, config_with(hf_entry(overrides={key: value})))
    assert message.endswith(f"model_list[0].overrides.{key}: {what}; expected {expected}")


@pytest.mark.parametrize(
    ("key", "value"), [("sliding_window_size", 4096), ("attention_sink_size", 0)]
)
def test_sliding_window_overrides_accept_sizes_for_hf_models(tmp_path: Path, key: str, value: int):
    assert load(tmp_path, config_with(hf_entry(overrides={key: value}))).models[0].overrides == {
        key: value
    }


@pytest.mark.parametrize("key", ["tensor_parallel_shards", "pipeline_parallel_stages"])
def test_parallelism_other_than_one_is_an_error_that_says_a_phone_has_one_gpu(
    tmp_path: Path, key: str
):
    message = only_problem(tmp_path, config_with(hf_entry(overrides={key: 2})))
    assert message.endswith(
        f"model_list[0].overrides.{key}: 2 is not possible: an on-device package runs the model "
        "on one GPU, without tensor or pipeline parallelism; expected 1 (or no such key)"
    )


def test_an_unknown_override_suggests_the_closest_one(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(overrides={"prefil_chunk_size": 128})))
    assert (
        "model_list[0].overrides.prefil_chunk_size: "
        'unknown key (did you mean "prefill_chunk_size"?)' in message
    )
    assert "expected one of: context_window_size, sliding_window_size" in message


def test_an_entry_key_inside_overrides_says_it_belongs_next_to_them(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(overrides={"model_lib": "x"})))
    assert "model_list[0].overrides.model_lib: belongs in the model_list entry, not here" in message


@pytest.mark.parametrize(
    "opt",
    [
        "O0",
        "O1",
        "O2",
        "O3",
        "flashinfer=0;cublas_gemm=1",
        "cudagraph=1;",
        "ipc_allreduce_strategy=AUTO",
        "",
    ],
)
def test_opt_accepts_mlc_presets_and_flag_lists(tmp_path: Path, opt: str):
    assert load(tmp_path, config_with(hf_entry(overrides={"opt": opt}))).models[0].overrides == {
        "opt": opt
    }


@pytest.mark.parametrize(
    ("opt", "what"),
    [
        ("O4", '"O4" is not a preset'),
        ("o2", '"o2" is not a preset (did you mean "O2"?)'),
        ("flashinfer", '"flashinfer" has no =value'),
        ("flashinfer=yes", "flashinfer=yes: the value must be 0 or 1"),
        ("ipc_allreduce_strategy=SOME", "ipc_allreduce_strategy=SOME: the value must be one of"),
        ("flashinfr=1", 'unknown flag "flashinfr" (did you mean "flashinfer"?)'),
        (2, "2 is a number"),
    ],
)
def test_opt_rejects_unknown_presets_flags_and_values(tmp_path: Path, opt: Any, what: str):
    message = only_problem(tmp_path, config_with(hf_entry(overrides={"opt": opt})))
    assert f"model_list[0].overrides.opt: {what}" in message
    assert "expected a preset (O0, O1, O2, O3) or flag=value pairs separated by ; like" in message


def test_a_sliding_window_override_on_a_model_without_sliding_windows_is_an_error(
    tmp_path: Path, tiny: Path
):
    message = only_problem(
        tmp_path, config_with(local_entry(overrides={"sliding_window_size": 1024}))
    )
    assert (
        'model_list[0].overrides.sliding_window_size: model_type "llama" has no sliding-window'
        in message
    )


# -- where the model comes from -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "repo", "revision"),
    [
        (
            "HF://mlc-ai/Llama-3.2-1B-Instruct-q4f16_1-MLC",
            "mlc-ai/Llama-3.2-1B-Instruct-q4f16_1-MLC",
            None,
        ),
        ("hf://mlc-ai/model", "mlc-ai/model", None),
        ("HF://mlc-ai/model@v1.0", "mlc-ai/model", "v1.0"),
        ("HF://mlc-ai/model@4c1e9a7d", "mlc-ai/model", "4c1e9a7d"),
        ("HF://mlc-ai/model@refs/pr/3", "mlc-ai/model", "refs/pr/3"),
    ],
)
def test_a_hugging_face_uri_gives_the_repository_and_revision(
    tmp_path: Path, model: str, repo: str, revision: str | None
):
    entry = load(tmp_path, config_with(hf_entry(model=model))).models[0]
    assert (entry.hf_repo, entry.hf_revision, entry.local_dir, entry.model) == (
        repo,
        revision,
        None,
        model,
    )


@pytest.mark.parametrize(
    "model",
    [
        "HF://",
        "HF://mlc-ai",
        "HF://mlc-ai/model/extra",
        "HF://mlc-ai/model@",
        "HF://mlc ai/model",
        "HF://mlc-ai/mo--del",
        "HF:///model",
    ],
)
def test_a_malformed_hugging_face_uri_is_rejected_with_the_expected_form(
    tmp_path: Path, model: str
):
    message = only_problem(tmp_path, config_with(hf_entry(model=model)))
    assert message.endswith(
        f"model_list[0].model: {json.dumps(model)} is not a Hugging Face model; expected "
        "HF://<org>/<repo> or HF://<org>/<repo>@<revision>, e.g. "
        "HF://mlc-ai/Qwen2.5-0.5B-Instruct-q4f16_1-MLC"
    )


def test_a_hugging_face_web_address_suggests_the_hf_form(tmp_path: Path):
    message = only_problem(
        tmp_path, config_with(hf_entry(model="https://huggingface.co/mlc-ai/Qwen-MLC/"))
    )
    assert message.endswith(
        'model_list[0].model: "https://huggingface.co/mlc-ai/Qwen-MLC/" is a web address; '
        'expected the Hugging Face form "HF://mlc-ai/Qwen-MLC"'
    )


def test_an_unsupported_uri_scheme_is_rejected(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(model="s3://bucket/model")))
    assert 'model_list[0].model: "s3://bucket/model" uses an unsupported scheme' in message


def test_a_hugging_face_entry_may_name_a_quantization_as_it_is_unknown_before_download(
    tmp_path: Path,
):
    entry = load(tmp_path, config_with(hf_entry(quantization="q4f16_1"))).models[0]
    assert entry.quantization == "q4f16_1"


def test_an_unsupported_quantization_value_is_rejected_with_a_suggestion(tmp_path: Path):
    message = only_problem(tmp_path, config_with(hf_entry(quantization="q4f16-1")))
    assert (
        'model_list[0].quantization: "q4f16-1" is not a supported quantization (did you mean '
        in message
    )
    assert "expected one of: q0f16, q0f32, q3f16_0, q3f16_1, q4f16_0, q4f16_1, q4f32_1" in message


def test_a_relative_model_path_resolves_against_the_config_folder_first(tmp_path: Path):
    config_dir = tmp_path / "app"
    in_config_dir = make_model(config_dir / "models" / "tiny")
    make_model(tmp_path / "cwd" / "models" / "tiny")
    path = write_config(config_dir, config_with(local_entry()))
    entry = load_package_config(path, cwd=tmp_path / "cwd").models[0]
    assert entry.local_dir == in_config_dir.resolve()


def test_a_relative_model_path_falls_back_to_the_current_directory_as_in_mlc(tmp_path: Path):
    config_dir = tmp_path / "app"
    config_dir.mkdir()
    in_cwd = make_model(tmp_path / "cwd" / "models" / "tiny")
    path = write_config(config_dir, config_with(local_entry()))
    assert load_package_config(path, cwd=tmp_path / "cwd").models[0].local_dir == in_cwd.resolve()


def test_an_absolute_model_path_is_used_as_it_is(tmp_path: Path):
    model = make_model(tmp_path / "elsewhere" / "tiny")
    entry = load(tmp_path, config_with(local_entry(model=str(model)))).models[0]
    assert entry.local_dir == model.resolve()


def test_a_missing_model_directory_names_both_places_tried(tmp_path: Path):
    config_dir = tmp_path / "app"
    config_dir.mkdir()
    path = write_config(config_dir, config_with(local_entry()))
    with pytest.raises(ConfigError) as caught:
        load_package_config(path, cwd=tmp_path)
    assert str(caught.value) == (
        f'{path}: model_list[0].model: directory "./models/tiny" not found (looked at '
        f"{config_dir / 'models' / 'tiny'} and {tmp_path / 'models' / 'tiny'}); expected a model "
        "directory, relative to the config file's folder, or HF://<org>/<repo>"
    )


def test_a_model_path_to_the_chat_config_file_points_to_its_folder(tmp_path: Path, tiny: Path):
    entry = local_entry(model="./models/tiny/mlc-chat-config.json")
    message = only_problem(tmp_path, config_with(entry))
    assert f"is a file, not a directory; point to its folder {tiny.resolve()}" in message


def test_a_directory_without_a_chat_config_or_hf_config_is_rejected(tmp_path: Path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    message = only_problem(tmp_path, config_with(local_entry()))
    assert "has neither mlc-chat-config.json (an MLC model) nor config.json" in message
    assert "expected a model directory: one converted by MLC" in message


def test_invalid_json_in_the_chat_config_names_that_file_with_line_and_column(tmp_path: Path):
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "mlc-chat-config.json").write_text(
        '{\n  "model_type": "llama"\n  "quantization": 1\n}'
    )
    message = only_problem(tmp_path, config_with(local_entry()))
    assert message.startswith(
        f"{model.resolve() / 'mlc-chat-config.json'}: line 3, column 3: invalid JSON"
    )


def test_an_unsupported_model_type_names_the_chat_config_and_lists_the_supported_ones(
    tmp_path: Path,
):
    model = make_model(tmp_path / "models" / "tiny", chat_config(model_type="mamba"))
    message = only_problem(tmp_path, config_with(local_entry()))
    assert message == (
        f'{model.resolve() / "mlc-chat-config.json"}: model_type: "mamba" is not supported by '
        'this packager (model_list[0], "./models/tiny"); expected one of: '
        + ", ".join(SUPPORTED_MODEL_TYPES)
    )


def test_an_unsupported_quantization_names_the_chat_config_and_lists_the_supported_ones(
    tmp_path: Path,
):
    model = make_model(tmp_path / "models" / "tiny", chat_config(quantization="q4f16_2"))
    message = only_problem(tmp_path, config_with(local_entry()))
    assert message.startswith(f"{model.resolve() / 'mlc-chat-config.json'}: quantization: ")
    assert message.endswith(f"expected one of: {', '.join(SUPPORTED_QUANTIZATIONS)}")


def test_a_quantization_key_on_an_mlc_model_is_an_error_because_its_quantization_is_fixed(
    tmp_path: Path, tiny: Path
):
    message = only_problem(tmp_path, config_with(local_entry(quantization="q4f32_1")))
    assert message.endswith(
        "model_list[0].quantization: the model is already converted by MLC: its quantization "
        f'("q4f16_1") is fixed by {tiny.resolve() / "mlc-chat-config.json"}; expected no '
        '"quantization" key (it is only for Hugging Face checkpoints)'
    )


def test_a_hugging_face_checkpoint_directory_needs_a_quantization(tmp_path: Path):
    checkpoint = tmp_path / "models" / "tiny"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(
        json.dumps({"model_type": "llama", **LLAMA_MODEL_CONFIG})
    )
    message = only_problem(tmp_path, config_with(local_entry()))
    assert "model_list[0]: " in message
    assert "is a Hugging Face checkpoint (config.json, no mlc-chat-config.json)" in message
    assert f'expected "quantization": one of {", ".join(SUPPORTED_QUANTIZATIONS)}' in message
    entry = load(tmp_path, config_with(local_entry(quantization="q4f16_1"))).models[0]
    assert entry.quantization == "q4f16_1" and entry.local_dir == checkpoint.resolve()


def test_a_hugging_face_checkpoint_of_an_unsupported_family_is_rejected(tmp_path: Path):
    checkpoint = tmp_path / "models" / "tiny"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    message = only_problem(tmp_path, config_with(local_entry(quantization="q4f16_1")))
    assert message.startswith(f'{checkpoint.resolve() / "config.json"}: model_type: "mamba"')


def test_a_local_model_without_bundle_weight_is_rejected_as_in_mlc(tmp_path: Path, tiny: Path):
    message = only_problem(tmp_path, config_with(local_entry(bundle_weight=False)))
    assert (
        "model_list[0].bundle_weight: the model is a local directory but its weights are not"
        in message
    )
    assert 'expected "bundle_weight": true, or an HF:// model that the app downloads' in message


def test_a_chat_config_that_cannot_give_a_context_window_is_reported_before_any_compile(
    tmp_path: Path,
):
    config = chat_config()
    del config["context_window_size"]
    del config["model_config"]["context_window_size"]
    model = make_model(tmp_path / "models" / "tiny", config)
    message = only_problem(tmp_path, config_with(local_entry()))
    assert message.startswith(
        f"{model.resolve() / 'mlc-chat-config.json'}: model_config.context_window_size: missing"
    )


# -- model_lib_path_for_prepare_libs ------------------------------------------------------------


def test_prebuilt_library_paths_resolve_against_the_config_folder(tmp_path: Path):
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "qwen.tar").write_bytes(b"")
    data = config_with(
        hf_entry(model_lib="qwen_lib"),
        model_lib_path_for_prepare_libs={"qwen_lib": "libs/qwen.tar"},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = load_package_config(write_config(tmp_path, data), cwd=elsewhere)
    assert config.prebuilt_libs == {"qwen_lib": (tmp_path / "libs" / "qwen.tar").resolve()}


def test_a_missing_prebuilt_library_names_both_places_tried(tmp_path: Path):
    data = config_with(
        hf_entry(model_lib="qwen_lib"),
        model_lib_path_for_prepare_libs={"qwen_lib": "libs/qwen.tar"},
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    message = only_problem(tmp_path, data, cwd=cwd)
    assert message.endswith(
        f'model_lib_path_for_prepare_libs.qwen_lib: library "libs/qwen.tar" not found (looked at '
        f"{tmp_path / 'libs' / 'qwen.tar'} and {cwd / 'libs' / 'qwen.tar'}); expected the path of "
        "a model library (.tar), relative to the config file's folder"
    )


def test_a_prebuilt_library_that_no_entry_uses_suggests_the_closest_model_lib(tmp_path: Path):
    (tmp_path / "qwen.tar").write_bytes(b"")
    data = config_with(
        hf_entry(model_lib="qwen2_q4f16_1"),
        model_lib_path_for_prepare_libs={"qwen2_q4f16-1": "qwen.tar"},
    )
    message = only_problem(tmp_path, data)
    assert message.endswith(
        '["qwen2_q4f16-1"]: no model_list entry has this model_lib (did you mean '
        '"qwen2_q4f16_1"?), so the library would never be loaded; expected the "model_lib" of an '
        "entry of model_list"
    )


# -- reporting ----------------------------------------------------------------------------------


def test_every_problem_in_a_file_is_reported_at_once_one_per_line(tmp_path: Path):
    data = {
        "device": "ios",
        "model_list": [
            hf_entry("a", estimated_vram_bytes=1.5),
            hf_entry("a", repo="x/y", overrides={"max_batch_size": 0}),
        ],
        "extra": True,
    }
    lines = problems(tmp_path, data)
    file = str(tmp_path / CONFIG_NAME)
    assert len(lines) == 5
    assert all(line.startswith(f"{file}: ") and "; expected " in line for line in lines)
    where = [line[len(file) + 2 :].split(":")[0] for line in lines]
    assert where == [
        "extra",
        "device",
        "model_list[0].estimated_vram_bytes",
        "model_list[1].overrides.max_batch_size",
        "model_list[1].model_id",
    ]


def test_a_config_error_survives_pickling_for_xdist_workers():
    error = ConfigError("a: b: c; expected d", "e: f: g; expected h")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.problems == error.problems


def test_reading_a_config_imports_neither_tvm_nor_numpy():
    code = (
        "import sys, packaging_plugin.config.package_config, packaging_plugin.config.chat_config; "
        "heavy = ('tvm', 'tvm_ffi', 'numpy', 'huggingface_hub'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# -- chat_config: the compile request -----------------------------------------------------------


def test_the_compile_request_has_the_top_level_values_over_model_config_and_overrides_win():
    config = chat_config(context_window_size=1024, prefill_chunk_size=256)
    request = build_compile_request(config, {"prefill_chunk_size": 64, "opt": "O3"}, "android")
    assert set(request) == {"device", "model_config", "model_type", "quantization"}
    assert (request["model_type"], request["quantization"], request["device"]) == (
        "llama",
        "q4f16_1",
        "android",
    )
    model_config = request["model_config"]
    assert model_config["context_window_size"] == 1024  # top level over model_config's 512
    assert model_config["prefill_chunk_size"] == 64  # the override wins
    assert model_config["max_batch_size"] == 128  # model_config's own value is kept
    assert "opt" not in model_config and "temperature" not in model_config


def test_the_compile_request_ignores_settings_that_do_not_change_the_library():
    base = build_compile_request(chat_config(), {}, "iphone")
    other = chat_config(temperature=0.1, conv_template={"name": "chatml"}, top_p=0.5)
    assert build_compile_request(other, {}, "iphone") == base


def test_the_compile_request_serializes_identically_whatever_the_key_order():
    config = chat_config()
    reordered = json.loads(json.dumps(config, sort_keys=True))
    reordered["model_config"] = dict(reversed(list(config["model_config"].items())))
    first = build_compile_request(config, {"prefill_chunk_size": 64}, "android")
    second = build_compile_request(reordered, {"prefill_chunk_size": 64}, "android")
    assert json.dumps(first) == json.dumps(second)
    assert list(first["model_config"]) == sorted(first["model_config"])


def test_the_compile_request_does_not_modify_the_chat_config():
    config = chat_config()
    before = json.dumps(config, sort_keys=True)
    build_compile_request(config, {"context_window_size": 64}, "android")
    assert json.dumps(config, sort_keys=True) == before


def test_the_context_window_comes_from_max_position_embeddings_when_absent():
    config = {
        "model_type": "llama",
        "quantization": "q4f16_1",
        "model_config": {**LLAMA_MODEL_CONFIG, "max_position_embeddings": 131072},
    }
    del config["model_config"]["context_window_size"]
    del config["model_config"]["prefill_chunk_size"]
    model_config = build_compile_request(config, {}, "android")["model_config"]
    assert model_config["context_window_size"] == 131072
    assert model_config["prefill_chunk_size"] == 8192  # llama's cap


def test_the_default_prefill_chunk_is_capped_at_2048_for_qwen2():
    config = chat_config(model_type="qwen2", context_window_size=32768)
    del config["prefill_chunk_size"]
    del config["model_config"]["prefill_chunk_size"]
    assert (
        build_compile_request(config, {}, "android")["model_config"]["prefill_chunk_size"] == 2048
    )


def test_the_default_prefill_chunk_is_the_context_window_when_that_is_smaller():
    config = chat_config(context_window_size=300)
    del config["prefill_chunk_size"]
    del config["model_config"]["prefill_chunk_size"]
    assert build_compile_request(config, {}, "android")["model_config"]["prefill_chunk_size"] == 300


def test_a_prefill_chunk_larger_than_the_context_window_is_cut_down_as_in_mlc():
    request = build_compile_request(chat_config(), {"prefill_chunk_size": 4096}, "android")
    assert request["model_config"]["prefill_chunk_size"] == 512


def test_max_batch_size_defaults_to_one_when_the_model_config_has_none():
    config = chat_config()
    del config["model_config"]["max_batch_size"]
    assert build_compile_request(config, {}, "android")["model_config"]["max_batch_size"] == 1


def test_the_compile_request_always_has_one_shard_and_one_pipeline_stage():
    config = chat_config(tensor_parallel_shards=2, pipeline_parallel_stages=2)
    model_config = build_compile_request(config, {}, "android")["model_config"]
    assert model_config["tensor_parallel_shards"] == 1
    assert model_config["pipeline_parallel_stages"] == 1


def test_families_without_sliding_windows_always_get_minus_one_for_both_window_settings():
    model_config = build_compile_request(chat_config(), {}, "android")["model_config"]
    assert model_config["sliding_window_size"] == -1
    assert model_config["attention_sink_size"] == -1


def test_mistral_takes_its_sliding_window_from_the_hugging_face_spelling():
    config = {
        "model_type": "mistral",
        "quantization": "q4f16_1",
        "model_config": {**LLAMA_MODEL_CONFIG, "sliding_window": 4096},
    }
    del config["model_config"]["context_window_size"]
    del config["model_config"]["prefill_chunk_size"]
    model_config = build_compile_request(config, {}, "android")["model_config"]
    assert model_config["sliding_window_size"] == 4096
    assert model_config["context_window_size"] == -1  # bounded by the sliding window
    assert model_config["attention_sink_size"] == 4
    assert model_config["prefill_chunk_size"] == 4096


def test_a_chat_config_without_a_context_window_is_a_config_error_naming_the_file(tmp_path: Path):
    config = {"model_type": "llama", "quantization": "q4f16_1", "model_config": {"hidden_size": 8}}
    with pytest.raises(ConfigError) as caught:
        build_compile_request(config, {}, "android", source=tmp_path / "mlc-chat-config.json")
    assert str(caught.value).startswith(
        f"{tmp_path / 'mlc-chat-config.json'}: model_config.context_window_size: missing"
    )


def test_an_unsupported_model_type_in_a_compile_request_is_a_config_error():
    with pytest.raises(ConfigError, match=r'model_type: "mamba" is not valid; expected one of'):
        build_compile_request(chat_config(model_type="mamba"), {}, "android")


def test_the_default_model_lib_is_mlcs_automatic_prefix_with_dashes_as_underscores():
    request = build_compile_request(chat_config(model_type="qwen2"), {}, "android")
    assert default_model_lib(request, "ab-12") == "qwen2_q4f16_1_ab_12"


def test_read_chat_config_names_the_file_when_its_json_is_invalid(tmp_path: Path):
    (tmp_path / "mlc-chat-config.json").write_text('{"model_type": }')
    with pytest.raises(ConfigError) as caught:
        read_chat_config(tmp_path)
    assert str(caught.value).startswith(
        f"{tmp_path / 'mlc-chat-config.json'}: line 1, column 16: invalid JSON"
    )


def test_read_chat_config_of_a_directory_without_one_says_what_a_model_directory_holds(
    tmp_path: Path,
):
    with pytest.raises(
        ConfigError, match=r"mlc-chat-config\.json: file not found; expected an MLC"
    ):
        read_chat_config(tmp_path)


def test_read_chat_config_turns_a_hugging_face_checkpoint_into_a_compilable_chat_config(
    tmp_path: Path,
):
    hf_config = {"model_type": "qwen2", "max_position_embeddings": 4096, "rope_theta": 1e6}
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    chat = read_chat_config(tmp_path, quantization="q0f16")
    assert chat == {"model_type": "qwen2", "quantization": "q0f16", "model_config": hf_config}
    request = build_compile_request(chat, {}, "linux")
    assert request["model_config"]["context_window_size"] == 4096
    assert request["model_config"]["prefill_chunk_size"] == 2048


def test_gemma2_keeps_a_smaller_context_override_and_is_otherwise_its_sliding_window():
    chat = chat_config(model_type="gemma2", context_window_size=4096)
    chat["model_config"] |= {"sliding_window": 4096, "context_window_size": 4096}
    # MLC replaces every context by the window; a phone's smaller one must survive.
    small = build_compile_request(chat, {"context_window_size": 1024}, "android")
    assert small["model_config"]["context_window_size"] == 1024
    large = build_compile_request(chat, {"context_window_size": 8192}, "android")
    assert large["model_config"]["context_window_size"] == 4096
    assert build_compile_request(chat, {}, "android")["model_config"]["context_window_size"] == 4096


def test_gpt2_position_rows_stay_as_converted_when_the_context_is_overridden():
    chat = chat_config(model_type="gpt2", context_window_size=1024)
    chat["model_config"] = {
        "n_embd": 64,
        "n_head": 4,
        "n_layer": 2,
        "vocab_size": 256,
        "context_window_size": 1024,
    }
    request = build_compile_request(chat, {"context_window_size": 256}, "android")
    assert request["model_config"]["context_window_size"] == 256
    assert request["model_config"]["n_positions"] == 1024
