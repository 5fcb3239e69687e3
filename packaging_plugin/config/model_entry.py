"""The checks of one model_list entry: its keys, and its `model`, `model_id`,
`estimated_vram_bytes`, `bundle_weight`, `model_lib` and `quantization`. Its `overrides` are
checked by overrides.py, and where its model comes from by model_source.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from packaging_plugin.config.draft import _Draft
from packaging_plugin.config.model_source import _HF_EXAMPLE, _SourceChecker
from packaging_plugin.config.names import (
    APP_CONFIG_NAME,
    ENTRY_KEYS,
    PACKAGE_NODE_NAME,
    TOP_LEVEL_KEYS,
)
from packaging_plugin.config.overrides import OVERRIDE_KEYS, _check_overrides
from packaging_plugin.config.problems import (
    _IDENTIFIER,
    _check_keys,
    _describe,
    _join,
    _misplaced,
    _Problems,
    did_you_mean,
)
from packaging_plugin.quantization.schemes import SUPPORTED_QUANTIZATIONS

_MAX_NAME_BYTES = 255  # longest file name on common file systems (the bundle folder)


def _check_entry(
    problems: _Problems, item: Mapping[str, Any], draft: _Draft, sources: _SourceChecker
) -> _Draft:
    where = draft.where
    misplaced = {
        **_misplaced(OVERRIDE_KEYS, '"overrides"', '"overrides": {"<key>": <value>}'),
        **_misplaced(
            TOP_LEVEL_KEYS,
            "the top level of the config",
            'one "<key>" at the top level, next to "model_list"',
        ),
    }
    suggested = _check_keys(problems, item, where, ENTRY_KEYS, misplaced)

    def required(key: str, expected: str) -> bool:
        if key in item:
            return True
        if key not in suggested:
            problems.add(_join(where, key), "missing", expected)
        return False

    model_expected = f"{_HF_EXAMPLE}, or the path of a local model directory"
    if required("model", model_expected):
        model = item["model"]
        if isinstance(model, str) and model.strip():
            draft.model = model
        else:
            what = "is empty" if isinstance(model, str) else _describe(model)
            problems.add(_join(where, "model"), what, model_expected)

    if required("model_id", "a non-empty string naming the model in the app"):
        _check_model_id_value(problems, item["model_id"], draft)

    vram_expected = "a non-negative whole number of bytes the model needs, e.g. 3000000000"
    if required("estimated_vram_bytes", vram_expected):
        draft.estimated_vram_bytes = _check_vram(problems, item["estimated_vram_bytes"], draft)

    if "bundle_weight" in item:
        bundle_weight = item["bundle_weight"]
        if isinstance(bundle_weight, bool):
            draft.bundle_weight = bundle_weight
        else:
            problems.add(_join(where, "bundle_weight"), _describe(bundle_weight), "true or false")

    if "overrides" in item:
        draft.overrides = _check_overrides(problems, item["overrides"], _join(where, "overrides"))

    if item.get("model_lib") is not None:  # null: no model_lib, as in MLC
        draft.model_lib = _check_model_lib_value(
            problems, item["model_lib"], _join(where, "model_lib")
        )

    if "quantization" in item:
        draft.quantization = _check_quantization_value(
            problems, item["quantization"], _join(where, "quantization")
        )

    if draft.model is not None:
        sources.check(draft, item)
    return draft


def _check_model_id_value(problems: _Problems, model_id: Any, draft: _Draft) -> None:
    where = _join(draft.where, "model_id")
    usable = (
        'a name usable as a pytest node name and a folder name (bundle/<model_id>): no "/", '
        '"\\" or "::", not "." or "..", no spaces at either end'
    )
    if not isinstance(model_id, str):
        problems.add(where, _describe(model_id), "a non-empty string")
        return
    if not model_id:
        problems.add(where, "is empty", "a non-empty string naming the model in the app")
        return
    if model_id == PACKAGE_NODE_NAME:
        problems.add(
            where,
            f'"{PACKAGE_NODE_NAME}" is reserved: it names the node of the package-level '
            f"steps (<config>::{PACKAGE_NODE_NAME}::library, ...)",
            "another model_id",
        )
        return
    if model_id == APP_CONFIG_NAME:
        problems.add(
            where,
            f'"{APP_CONFIG_NAME}" would clash with the app config in the bundle folder',
            "another model_id",
        )
        return
    reason = _unusable_name_reason(model_id)
    if reason is not None:
        problems.add(where, f"{json.dumps(model_id)} {reason}", usable)
        return
    draft.model_id = model_id


def _check_vram(problems: _Problems, value: Any, draft: _Draft) -> int | None:
    where = _join(draft.where, "estimated_vram_bytes")
    expected = "a non-negative whole number of bytes, e.g. 3000000000"
    number: int | None = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(where, _describe(value), expected)
        return None
    if isinstance(value, float):
        # 3e9 parses as a float: accept whole values, and hand the app an int.
        if not math.isfinite(value) or not value.is_integer():
            problems.add(where, f"{value!r} is not a whole number", expected)
            return None
        number = int(value)
    else:
        number = value
    if number < 0:
        problems.add(where, f"{number} is negative", expected)
        return None
    return number


def _check_model_lib_value(problems: _Problems, model_lib: Any, where: str) -> str | None:
    expected = (
        'letters, digits, "_" and "-", not starting with a digit, e.g. "qwen2_q4f16_1" (with '
        "- read as _, it is the model's system-library prefix, a C identifier)"
    )
    if not isinstance(model_lib, str):
        problems.add(where, _describe(model_lib), expected)
        return None
    if not _IDENTIFIER.fullmatch(model_lib.replace("-", "_")):
        what = "is empty" if not model_lib else f"{json.dumps(model_lib)} is not usable"
        problems.add(where, what, expected)
        return None
    return model_lib


def _check_quantization_value(problems: _Problems, quantization: Any, where: str) -> str | None:
    expected = f"one of: {', '.join(SUPPORTED_QUANTIZATIONS)}"
    if isinstance(quantization, str) and quantization in SUPPORTED_QUANTIZATIONS:
        return quantization
    if isinstance(quantization, str):
        suggestion = did_you_mean(quantization, SUPPORTED_QUANTIZATIONS)
        hint = f' (did you mean "{suggestion}"?)' if suggestion else ""
        what = f"{json.dumps(quantization)} is not a supported quantization{hint}"
    else:
        what = _describe(quantization)
    problems.add(where, what, expected)
    return None


def _unusable_name_reason(name: str) -> str | None:
    """Why a model_id cannot be a pytest node name and a folder name, or None."""
    if name != name.strip():
        return "has spaces at its start or end"
    if name in (".", ".."):
        return "is not a usable folder name"
    for bad in ("::", "/", "\\"):
        if bad in name:
            return f'contains "{bad}"'
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "contains a control character"
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        return f"is longer than {_MAX_NAME_BYTES} bytes"
    return None
