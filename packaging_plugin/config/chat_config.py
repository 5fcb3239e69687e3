"""`mlc-chat-config.json` -> the compile request: what one model library is compiled from.

No TVM here: the request is built in the pytest process, hashed into the cache key and the
automatic model_lib, and handed to the compile child as JSON.

MLC's semantics (interface/jit.py and the model config dataclasses), which we reproduce:
`model_config` values, then the chat config's top-level values, then the entry's overrides win;
then each family's `__post_init__` fills defaults: here, `fill_sizes` with the rules of the
family's `config.py` (families/base/config.py). Where we differ, on purpose:

- Only top-level keys that change the compiled library are folded into `model_config` (MLC folds
  every one, so editing `temperature` or the conversation template recompiled the library).
- `tensor_parallel_shards` and `pipeline_parallel_stages` are always 1: a phone has one GPU, and a
  chat config converted for multi-GPU serving must still give a library a phone can load.
- Families without sliding-window attention get `sliding_window_size` and `attention_sink_size`
  of -1 (MLC ignores them there), so the runtime's metadata always has both.
- `max_batch_size` defaults to 1, the default of MLC's config classes, which is what MLC packages
  when `model_config` has none. Chat configs written by `mlc_llm gen_config` carry their own
  (often 128); we keep it, as MLC does, and an override can lower it.
- Keys that mean the same (`rope_theta` / `position_embedding_base`) are kept as written, and
  `max_position_embeddings` is kept after filling `context_window_size` from it: the model code
  reads both spellings (notes/mlc-model-lib-abi.md).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging_plugin import families
from packaging_plugin.config.devices import DEVICES
from packaging_plugin.config.names import CHAT_CONFIG_NAME, HF_CONFIG_NAME
from packaging_plugin.config.overrides import MODEL_CONFIG_OVERRIDES, SINGLE_DEVICE_OVERRIDES
from packaging_plugin.config.problems import ConfigError, read_json_file
from packaging_plugin.families import SUPPORTED_MODEL_TYPES
from packaging_plugin.families.base.config import fill_sizes
from packaging_plugin.families.base.config import shown as _shown
from packaging_plugin.quantization.schemes import SUPPORTED_QUANTIZATIONS

# Top-level keys of mlc-chat-config.json that shape the compiled library (MLC copies the top level
# over model_config before compiling). The rest (sampling defaults, conversation template,
# tokenizer) is read by the runtime at load time and must not change the library or its hash.
FOLDED_TOP_LEVEL_KEYS = (
    "vocab_size",
    "active_vocab_size",
    "context_window_size",
    "sliding_window_size",
    "prefill_chunk_size",
    "attention_sink_size",
    "max_batch_size",
)


def read_chat_config(model_dir: Path, *, quantization: str | None = None) -> dict[str, Any]:
    """The model directory's mlc-chat-config.json, as a dict.

    For a Hugging Face checkpoint (config.json, no mlc-chat-config.json) pass the entry's
    `quantization`: the result is then the minimal chat config MLC's gen_config would start from
    ({"model_type", "quantization", "model_config": <config.json>}), enough to compile.
    """
    chat_path = Path(model_dir) / CHAT_CONFIG_NAME
    hf_path = Path(model_dir) / HF_CONFIG_NAME
    if chat_path.is_file():
        chat = read_json_file(chat_path)
        if not isinstance(chat, dict):
            raise ConfigError(f"{chat_path}: top level: is not an object; expected a JSON object")
        return chat
    if quantization is not None and hf_path.is_file():
        hf_config = read_json_file(hf_path)
        if not isinstance(hf_config, dict):
            raise ConfigError(f"{hf_path}: top level: is not an object; expected a JSON object")
        return {
            "model_type": hf_config.get("model_type"),
            "quantization": quantization,
            "model_config": hf_config,
        }
    raise ConfigError(
        f"{chat_path}: file not found; expected an MLC model directory (converted with "
        f"mlc_llm convert_weight and gen_config), or a Hugging Face checkpoint ({HF_CONFIG_NAME}) "
        "with a quantization"
    )


def build_compile_request(
    chat_config: Mapping[str, Any],
    overrides: Mapping[str, Any],
    device: str,
    *,
    source: Path | str | None = None,
) -> dict[str, Any]:
    """{"device", "model_config", "model_type", "quantization"}, normalized (keys sorted at every
    level) so that the same inputs always serialize identically: it is hashed into cache keys.

    `overrides` is a checked config entry's overrides; "opt" is not part of the model config and is
    ignored here. `source` names the chat config in error messages.
    """
    file = str(source) if source is not None else CHAT_CONFIG_NAME
    problems: list[str] = []

    def problem(where: str, what: str, expected: str) -> None:  # a families.base.config.Report
        problems.append(f"{file}: {where}: {what}; expected {expected}")

    model_type = chat_config.get("model_type")
    quantization = chat_config.get("quantization")
    if model_type not in SUPPORTED_MODEL_TYPES:
        problem("model_type", _shown(model_type), f"one of: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if quantization not in SUPPORTED_QUANTIZATIONS:
        problem(
            "quantization", _shown(quantization), f"one of: {', '.join(SUPPORTED_QUANTIZATIONS)}"
        )
    if device not in DEVICES:
        # A programming error rather than a user's (the config checker checks the device).
        problem("device", _shown(device), f"one of: {', '.join(DEVICES)}")
    raw_model_config = chat_config.get("model_config")
    if not isinstance(raw_model_config, dict):
        problem("model_config", _shown(raw_model_config), "an object (the model's configuration)")
    if problems:
        raise ConfigError(*problems)
    assert isinstance(raw_model_config, dict)

    model_config: dict[str, Any] = copy.deepcopy(raw_model_config)
    converted_context = model_config.get("context_window_size")
    rules = families.rules(str(model_type))
    rows_key = rules.position_rows_key
    if rows_key and model_config.get(rows_key) is None and converted_context:
        # A learned position embedding (GPT-2's) has as many rows as the context window the
        # weights were converted with; an override of the context window must not change that.
        model_config[rows_key] = converted_context
    for key in FOLDED_TOP_LEVEL_KEYS:
        if chat_config.get(key) is not None:
            model_config[key] = copy.deepcopy(chat_config[key])
    for key in MODEL_CONFIG_OVERRIDES:
        value = overrides.get(key)
        if value is None:
            continue
        if key in SINGLE_DEVICE_OVERRIDES and value != 1:
            raise ConfigError(
                f"{file}: overrides.{key}: {value} is not possible on a single device; expected 1"
            )
        model_config[key] = value
    for key in SINGLE_DEVICE_OVERRIDES:
        model_config[key] = 1

    fill_sizes(rules, model_config, problem)
    if problems:
        raise ConfigError(*problems)
    return _sorted(
        {
            "device": device,
            "model_config": model_config,
            "model_type": model_type,
            "quantization": quantization,
        }
    )


def default_model_lib(request: Mapping[str, Any], key_hash: str) -> str:
    """MLC's automatic model_lib: `<model_type>_<quantization>_<hash>` with - turned into _."""
    return f"{request['model_type']}_{request['quantization']}_{key_hash}".replace("-", "_")


def _sorted(value: Any) -> Any:
    """The same value with every object's keys in sorted order (a canonical form)."""
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(item) for item in value]
    return value
