"""The `overrides` of a model_list entry: MLC's ModelConfigOverride fields, and the `opt` string of
MLC's OptimizationFlags.

chat_config folds the same overrides into the compile request, so the lists of them live here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from packaging_plugin.config.names import ENTRY_KEYS
from packaging_plugin.config.problems import (
    _check_keys,
    _describe,
    _join,
    _misplaced,
    _Problems,
    did_you_mean,
)

# MLC's ModelConfigOverride fields, grouped by what values make sense.
POSITIVE_OVERRIDES = ("context_window_size", "prefill_chunk_size", "max_batch_size")
SLIDING_WINDOW_OVERRIDES = ("sliding_window_size", "attention_sink_size")  # -1 turns them off
SINGLE_DEVICE_OVERRIDES = ("tensor_parallel_shards", "pipeline_parallel_stages")
MODEL_CONFIG_OVERRIDES = (
    "context_window_size",
    "sliding_window_size",
    "prefill_chunk_size",
    "attention_sink_size",
    "max_batch_size",
    "tensor_parallel_shards",
    "pipeline_parallel_stages",
)
OVERRIDE_KEYS = (*MODEL_CONFIG_OVERRIDES, "opt")

# MLC's OptimizationFlags: presets, or "flag=value;flag=value".
OPT_PRESETS = ("O0", "O1", "O2", "O3")
OPT_BOOL_FLAGS = ("flashinfer", "cublas_gemm", "faster_transformer", "cudagraph", "cutlass")
OPT_ALLREDUCE_FLAG = "ipc_allreduce_strategy"
OPT_ALLREDUCE_VALUES = ("NONE", "ONESHOT", "TWOSHOT", "AUTO")


def _check_overrides(
    problems: _Problems, overrides: Any, where: str
) -> dict[str, int | str] | None:
    if not isinstance(overrides, dict):
        problems.add(where, _describe(overrides), 'an object like {"prefill_chunk_size": 128}')
        return None
    misplaced = _misplaced(
        ENTRY_KEYS, "the model_list entry", '"<key>" next to "overrides", not inside it'
    )
    _check_keys(problems, overrides, where, OVERRIDE_KEYS, misplaced)
    valid = True
    result: dict[str, int | str] = {}
    for key, value in overrides.items():
        if key not in OVERRIDE_KEYS or value is None:  # null: no override, as in MLC
            continue
        problem = _override_problem(key, value)
        if problem is not None:
            what, expected = problem
            problems.add(_join(where, key), what, expected)
            valid = False
        else:
            result[key] = value
    return result if valid else None


def _override_problem(key: str, value: Any) -> tuple[str, str] | None:
    """(what is wrong, what is expected) for one override value, or None when it is fine."""
    if key == "opt":
        return _opt_problem(value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    what = _describe(value) if not is_int else f"{value} is out of range"
    if key in SINGLE_DEVICE_OVERRIDES:
        if is_int and value == 1:
            return None
        if is_int:
            what = (
                f"{value} is not possible: an on-device package runs the model on one GPU, "
                "without tensor or pipeline parallelism"
            )
        return what, "1 (or no such key)"
    if key in POSITIVE_OVERRIDES:
        if is_int and value > 0:
            return None
        return what, "a positive integer"
    if key == "sliding_window_size":
        if is_int and (value > 0 or value == -1):
            return None
        return what, "a positive integer, or -1 for no sliding window"
    if key == "attention_sink_size":
        if is_int and value >= -1:
            return None
        return what, "a non-negative integer, or -1 for no attention sink"
    raise AssertionError(f"unhandled override {key}")


def _opt_problem(value: Any) -> tuple[str, str] | None:
    """Check MLC's optimization flags string: a preset, or "flag=value;flag=value"."""
    flags = [*OPT_BOOL_FLAGS, OPT_ALLREDUCE_FLAG]
    expected = (
        f"a preset ({', '.join(OPT_PRESETS)}) or flag=value pairs separated by ; "
        f'like "flashinfer=0;cublas_gemm=1" (flags: {", ".join(flags)})'
    )
    if not isinstance(value, str):
        return _describe(value), expected
    if value in OPT_PRESETS:
        return None
    if re.fullmatch(r"[oO]\d+", value):
        hint = f' (did you mean "{value.upper()}"?)' if value.upper() in OPT_PRESETS else ""
        return f"{json.dumps(value)} is not a preset{hint}", expected
    for item in value.split(";"):
        if not item:  # MLC skips empty items, e.g. after a trailing ;
            continue
        flag, equals, setting = item.partition("=")
        if not equals:
            return f"{json.dumps(item)} has no =value", expected
        if flag in OPT_BOOL_FLAGS:
            if setting not in ("0", "1"):
                return f"{flag}={setting}: the value must be 0 or 1", expected
        elif flag == OPT_ALLREDUCE_FLAG:
            if setting not in OPT_ALLREDUCE_VALUES:
                return (
                    f"{flag}={setting}: the value must be one of {', '.join(OPT_ALLREDUCE_VALUES)}",
                    expected,
                )
        else:
            suggestion = did_you_mean(flag.strip(), flags)
            hint = f' (did you mean "{suggestion}"?)' if suggestion else ""
            return f"unknown flag {json.dumps(flag)}{hint}", expected
    return None
