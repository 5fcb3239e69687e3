"""The family registry is the one list of supported model_types: the docs and the demo models
agree with it, and every family folder has its three parts."""

from __future__ import annotations

import json
import re

import pytest

from packaging_plugin import families
from packaging_plugin.code_closure import PACKAGE_ROOT
from tests.helpers.paths import REPO


def documented_model_types() -> list[str]:
    """The first column of docs/models.md's family table."""
    text = (REPO / "docs" / "models.md").read_text()
    table = text.split("| `model_type` |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([a-z0-9_-]+)` \|", table, flags=re.M)


def demo_model_types() -> set[str]:
    found = set()
    for folder in (REPO / "configs" / "models").iterdir():
        config = folder / "mlc-chat-config.json"
        if not config.is_file():
            config = folder / "config.json"  # a Hugging Face checkpoint
        found.add(json.loads(config.read_text())["model_type"])
    return found


def test_the_docs_table_lists_exactly_the_registered_model_types_in_order() -> None:
    assert documented_model_types() == list(families.SUPPORTED_MODEL_TYPES)


def test_the_demo_models_cover_every_registered_model_type_and_no_other() -> None:
    assert demo_model_types() == set(families.SUPPORTED_MODEL_TYPES)


def test_every_family_folder_is_registered_and_has_config_mapping_and_model() -> None:
    folders = {
        path.name
        for path in (PACKAGE_ROOT / "families").iterdir()
        if path.is_dir() and (path / "__init__.py").is_file() and path.name != "base"
    }
    assert folders == set(families.FAMILY_NAMES)
    for name in folders:
        for part in ("config.py", "mapping.py", "model.py"):
            assert (PACKAGE_ROOT / "families" / name / part).is_file(), f"{name}/{part}"


@pytest.mark.slow  # imports TVM
def test_every_model_type_has_rules_a_converter_and_a_model() -> None:
    for model_type in families.SUPPORTED_MODEL_TYPES:
        assert families.rules(model_type).model_type == model_type
        module = families.model_module(model_type)
        assert callable(module.create), model_type


@pytest.mark.parametrize("model_type", ["gemma3_text", "gemma3"])
def test_gemma3_prefill_chunks_stay_shorter_than_the_layer_window_and_nothing_slides(
    model_type: str,
) -> None:
    from packaging_plugin.families.base.config import fill_sizes

    problems: list[str] = []
    rules = families.rules(model_type)
    config = {
        "text_config": {"sliding_window_size": 512},
        "context_window_size": 4096,
        "prefill_chunk_size": 2048,  # an override past the window: cut down
        "sliding_window_size": 512,  # as MLC writes it at the top level: the runtime must not slide
        "attention_sink_size": 0,
    }
    fill_sizes(rules, config, lambda where, what, expected: problems.append(where))
    assert not problems
    assert config["prefill_chunk_size"] == 511
    assert (config["sliding_window_size"], config["attention_sink_size"]) == (-1, -1)
    config = {"text_config": {"sliding_window_size": 512}, "context_window_size": 4096}
    fill_sizes(rules, config, lambda where, what, expected: problems.append(where))
    assert config["prefill_chunk_size"] == 511  # the default, too
    config = {**config, "prefill_chunk_size": 128}
    fill_sizes(rules, config, lambda where, what, expected: problems.append(where))
    assert config["prefill_chunk_size"] == 128 and not problems  # a smaller one is kept
