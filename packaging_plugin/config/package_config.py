"""Read and check `mlc-package-config.json`, the file MLC-LLM's `mlc_llm package` reads.

The same fields mean the same things as in MLC, so existing configs work unchanged; unlike MLC,
every mistake is reported before any work starts, all at once, one line per problem:

    <file>: <JSON path>: <what is wrong>; expected <what>

This module runs on every pytest start that names a config, so it imports no TVM or numpy.

Decisions where MLC is silent or where we differ on purpose:

- `estimated_vram_bytes`: MLC does not check it and copies it into the app config. We require a
  non-negative whole number. A float with an integral value (`3e9`, which JSON writers and humans
  produce for big numbers) is accepted and stored as an int, so the app config always gets an
  integer; `1.5`, `true` and strings are errors.
- Override values must be JSON integers (no `128.0`): MLC hands them unchecked to the compiler,
  where a float shape fails deep inside TVM. `null` means "no override", as in MLC.
- A local `model` needs `"bundle_weight": true`, as in MLC: an app gets a model's weights either
  from the bundle or by downloading `model_url`, and a local folder has no URL. Accepting it would
  produce an app config whose model can never load, which nobody wants.
- Unknown keys are errors with a "did you mean" hint (MLC ignores them: a misspelt key silently
  loses a setting). Keys that appear twice in one object are errors too (JSON keeps the last).
- `model_lib_path_for_prepare_libs` keys must be the `model_lib` of some entry: a library nobody
  loads is almost always a misspelt `model_lib`, which would silently compile instead.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging_plugin.config.devices import DEVICES
from packaging_plugin.config.draft import _Draft
from packaging_plugin.config.model_source import _HF_EXAMPLE, _SourceChecker
from packaging_plugin.config.names import (
    APP_CONFIG_NAME,
    ENTRY_KEYS,
    PACKAGE_NODE_NAME,
    TOP_LEVEL_KEYS,
)
from packaging_plugin.config.overrides import (
    OVERRIDE_KEYS,
    _check_overrides,
)
from packaging_plugin.config.problems import (
    _IDENTIFIER,
    ConfigError,
    _check_duplicate_keys,
    _check_keys,
    _describe,
    _join,
    _misplaced,
    _or_list,
    _Problems,
    did_you_mean,
    read_json_file,
)
from packaging_plugin.families import SUPPORTED_QUANTIZATIONS

CONFIG_DEVICES: tuple[str, ...] = tuple(DEVICES)

# Names users reach for that mean one of ours.
_DEVICE_ALIASES = {"ios": "iphone", "catalyst": "macabi", "maccatalyst": "macabi"}

_MAX_NAME_BYTES = 255  # longest file name on common file systems (the bundle folder)


@dataclass(frozen=True)
class ModelEntry:
    """One checked `model_list` entry. Exactly one of `hf_repo` and `local_dir` is set."""

    index: int  # position in model_list
    model: str  # as written in the config
    model_id: str
    estimated_vram_bytes: int
    bundle_weight: bool
    overrides: Mapping[str, int | str]  # `null` values dropped; treat as read-only
    model_lib: str | None  # None: derived from the model's config at compile time
    quantization: str | None  # only for Hugging Face checkpoints (our extension)
    hf_repo: str | None  # "org/repo" of HF://org/repo[@revision]
    hf_revision: str | None
    local_dir: Path | None  # absolute model directory

    @property
    def is_local(self) -> bool:
        return self.local_dir is not None


@dataclass(frozen=True)
class PackageConfig:
    """A checked package config."""

    path: Path  # absolute path of the config file
    device: str
    models: tuple[ModelEntry, ...]
    prebuilt_libs: Mapping[str, Path]  # model_lib_path_for_prepare_libs, resolved to absolute paths


def load_package_config(path: Path, cwd: Path | None = None) -> PackageConfig:
    """Read and check a package config; raise ConfigError listing every problem found.

    Relative paths resolve against the config file's folder, falling back to `cwd` (default: the
    current directory) where only that one exists, which is what MLC does with every path.
    """
    path = Path(path)
    display = str(path)
    if path.is_dir():
        raise ConfigError(
            f"{display}: is a directory; expected the path of an mlc-package-config.json file"
        )
    if not path.exists():
        raise ConfigError(
            f"{display}: file not found; expected the path of an mlc-package-config.json file"
        )
    data = read_json_file(path, detect_duplicate_keys=True)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{display}: top level: {_describe(data)}; expected a JSON object like "
            '{"device": "android", "model_list": [...]}'
        )
    checker = _Checker(path, Path(os.getcwd()) if cwd is None else Path(cwd))
    return checker.check(data)


class _Checker:
    def __init__(self, path: Path, cwd: Path) -> None:
        self.path = Path(os.path.abspath(path))
        # abspath, not resolve: a symlinked config resolves paths where the user sees it.
        self.config_dir = self.path.parent
        self.cwd = Path(os.path.abspath(cwd))
        self.problems = _Problems(str(path))

    # -- top level --------------------------------------------------------------------------

    def check(self, data: dict[str, Any]) -> PackageConfig:
        misplaced = {
            **_misplaced(ENTRY_KEYS, "each model_list entry", '"model_list": [{"<key>": <value>}]'),
            **_misplaced(
                OVERRIDE_KEYS,
                'the "overrides" of a model_list entry',
                '"overrides": {"<key>": <value>} inside an entry of model_list',
            ),
        }
        suggested = _check_keys(self.problems, data, "", TOP_LEVEL_KEYS, misplaced)

        device = self._check_device(data, suggested)
        sources = _SourceChecker(self.problems, self.config_dir, self.cwd, device)
        drafts = self._check_model_list(data, suggested, sources)
        prebuilt = self._check_prebuilt_libs(data.get("model_lib_path_for_prepare_libs"), sources)

        self._check_model_ids(drafts)
        self._check_shared_model_libs(drafts)
        self._check_prebuilt_references(prebuilt, drafts)
        self.problems.raise_if_any()

        models = tuple(_entry(draft) for draft in drafts)
        assert device is not None
        return PackageConfig(path=self.path, device=device, models=models, prebuilt_libs=prebuilt)

    def _check_device(self, data: Mapping[str, Any], suggested: set[str]) -> str | None:
        expected = f"one of: {', '.join(CONFIG_DEVICES)}"
        if "device" not in data:
            if "device" not in suggested:
                self.problems.add("device", "missing", expected)
            return None
        device = data["device"]
        if isinstance(device, str) and device in CONFIG_DEVICES:
            return device
        if isinstance(device, str):
            suggestion = _DEVICE_ALIASES.get(device.lower()) or did_you_mean(device, CONFIG_DEVICES)
            hint = f' (did you mean "{suggestion}"?)' if suggestion else ""
            what = f"{json.dumps(device)} is not a supported device{hint}"
        else:
            what = _describe(device)
        self.problems.add("device", what, expected)
        return None

    def _check_model_list(
        self, data: Mapping[str, Any], suggested: set[str], sources: _SourceChecker
    ) -> list[_Draft]:
        expected = (
            f'a non-empty list of models, e.g. [{{"model": "{_HF_EXAMPLE}", '
            '"model_id": "qwen", "estimated_vram_bytes": 1000000000}]'
        )
        if "model_list" not in data:
            if "model_list" not in suggested:
                self.problems.add("model_list", "missing", expected)
            return []
        model_list = data["model_list"]
        if not isinstance(model_list, list):
            self.problems.add("model_list", _describe(model_list), expected)
            return []
        if not model_list:
            self.problems.add("model_list", "is empty, so there is nothing to package", expected)
            return []
        drafts = []
        for index, item in enumerate(model_list):
            where = f"model_list[{index}]"
            if not isinstance(item, dict):
                self.problems.add(
                    where,
                    _describe(item),
                    "an object with model, model_id and estimated_vram_bytes",
                )
                continue
            drafts.append(self._check_entry(item, _Draft(index=index, where=where), sources))
        return drafts

    # -- one model_list entry ---------------------------------------------------------------

    def _check_entry(
        self, item: Mapping[str, Any], draft: _Draft, sources: _SourceChecker
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
        suggested = _check_keys(self.problems, item, where, ENTRY_KEYS, misplaced)

        def required(key: str, expected: str) -> bool:
            if key in item:
                return True
            if key not in suggested:
                self.problems.add(_join(where, key), "missing", expected)
            return False

        model_expected = f"{_HF_EXAMPLE}, or the path of a local model directory"
        if required("model", model_expected):
            model = item["model"]
            if isinstance(model, str) and model.strip():
                draft.model = model
            else:
                what = "is empty" if isinstance(model, str) else _describe(model)
                self.problems.add(_join(where, "model"), what, model_expected)

        if required("model_id", "a non-empty string naming the model in the app"):
            self._check_model_id_value(item["model_id"], draft)

        vram_expected = "a non-negative whole number of bytes the model needs, e.g. 3000000000"
        if required("estimated_vram_bytes", vram_expected):
            draft.estimated_vram_bytes = self._check_vram(item["estimated_vram_bytes"], draft)

        if "bundle_weight" in item:
            bundle_weight = item["bundle_weight"]
            if isinstance(bundle_weight, bool):
                draft.bundle_weight = bundle_weight
            else:
                self.problems.add(
                    _join(where, "bundle_weight"), _describe(bundle_weight), "true or false"
                )

        if "overrides" in item:
            draft.overrides = _check_overrides(
                self.problems, item["overrides"], _join(where, "overrides")
            )

        if item.get("model_lib") is not None:  # null: no model_lib, as in MLC
            draft.model_lib = self._check_model_lib_value(
                item["model_lib"], _join(where, "model_lib")
            )

        if "quantization" in item:
            draft.quantization = self._check_quantization_value(
                item["quantization"], _join(where, "quantization")
            )

        if draft.model is not None:
            sources.check(draft, item)
        return draft

    def _check_model_id_value(self, model_id: Any, draft: _Draft) -> None:
        where = _join(draft.where, "model_id")
        usable = (
            'a name usable as a pytest node name and a folder name (bundle/<model_id>): no "/", '
            '"\\" or "::", not "." or "..", no spaces at either end'
        )
        if not isinstance(model_id, str):
            self.problems.add(where, _describe(model_id), "a non-empty string")
            return
        if not model_id:
            self.problems.add(where, "is empty", "a non-empty string naming the model in the app")
            return
        if model_id == PACKAGE_NODE_NAME:
            self.problems.add(
                where,
                f'"{PACKAGE_NODE_NAME}" is reserved: it names the node of the package-level '
                f"steps (<config>::{PACKAGE_NODE_NAME}::library, ...)",
                "another model_id",
            )
            return
        if model_id == APP_CONFIG_NAME:
            self.problems.add(
                where,
                f'"{APP_CONFIG_NAME}" would clash with the app config in the bundle folder',
                "another model_id",
            )
            return
        reason = _unusable_name_reason(model_id)
        if reason is not None:
            self.problems.add(where, f"{json.dumps(model_id)} {reason}", usable)
            return
        draft.model_id = model_id

    def _check_vram(self, value: Any, draft: _Draft) -> int | None:
        where = _join(draft.where, "estimated_vram_bytes")
        expected = "a non-negative whole number of bytes, e.g. 3000000000"
        number: int | None = None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problems.add(where, _describe(value), expected)
            return None
        if isinstance(value, float):
            # 3e9 parses as a float: accept whole values, and hand the app an int.
            if not math.isfinite(value) or not value.is_integer():
                self.problems.add(where, f"{value!r} is not a whole number", expected)
                return None
            number = int(value)
        else:
            number = value
        if number < 0:
            self.problems.add(where, f"{number} is negative", expected)
            return None
        return number

    def _check_model_lib_value(self, model_lib: Any, where: str) -> str | None:
        expected = (
            'letters, digits, "_" and "-", not starting with a digit, e.g. "qwen2_q4f16_1" (with '
            "- read as _, it is the model's system-library prefix, a C identifier)"
        )
        if not isinstance(model_lib, str):
            self.problems.add(where, _describe(model_lib), expected)
            return None
        if not _IDENTIFIER.fullmatch(model_lib.replace("-", "_")):
            what = "is empty" if not model_lib else f"{json.dumps(model_lib)} is not usable"
            self.problems.add(where, what, expected)
            return None
        return model_lib

    def _check_quantization_value(self, quantization: Any, where: str) -> str | None:
        expected = f"one of: {', '.join(SUPPORTED_QUANTIZATIONS)}"
        if isinstance(quantization, str) and quantization in SUPPORTED_QUANTIZATIONS:
            return quantization
        if isinstance(quantization, str):
            suggestion = did_you_mean(quantization, SUPPORTED_QUANTIZATIONS)
            hint = f' (did you mean "{suggestion}"?)' if suggestion else ""
            what = f"{json.dumps(quantization)} is not a supported quantization{hint}"
        else:
            what = _describe(quantization)
        self.problems.add(where, what, expected)
        return None

    # -- model_lib_path_for_prepare_libs ----------------------------------------------------

    def _check_prebuilt_libs(self, value: Any, sources: _SourceChecker) -> dict[str, Path]:
        where = "model_lib_path_for_prepare_libs"
        expected = (
            'an object mapping a model_lib to its library, like {"qwen2_q4f16_1": "libs/qwen.tar"}'
        )
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.add(where, _describe(value), expected)
            return {}
        _check_duplicate_keys(self.problems, value, where)
        result: dict[str, Path] = {}
        for model_lib, lib_path in value.items():
            key_where = _join(where, model_lib)
            if self._check_model_lib_value(model_lib, key_where) is None:
                continue
            if not isinstance(lib_path, str) or not lib_path.strip():
                what = "is empty" if isinstance(lib_path, str) else _describe(lib_path)
                self.problems.add(
                    key_where, what, "the path of a model library (.tar), relative to the config"
                )
                continue
            found, tried = sources.resolve(lib_path)
            if found is None:
                self.problems.add(
                    key_where,
                    f"library {json.dumps(lib_path)} not found (looked at {_or_list(tried)})",
                    "the path of a model library (.tar), relative to the config file's folder",
                )
            elif not found.is_file():
                self.problems.add(
                    key_where,
                    f"{found} is not a file",
                    "the path of a model library (.tar) built with the system-lib prefix "
                    f'"{model_lib.replace("-", "_")}_"',
                )
            else:
                result[model_lib] = found
        return result

    # -- checks across entries --------------------------------------------------------------

    def _check_model_ids(self, drafts: Iterable[_Draft]) -> None:
        first: dict[str, _Draft] = {}
        for draft in drafts:
            if draft.model_id is None:
                continue
            # casefold: bundle/<model_id> folders clash on case-insensitive file systems.
            other = first.setdefault(draft.model_id.casefold(), draft)
            if other is draft:
                continue
            where = _join(draft.where, "model_id")
            if other.model_id == draft.model_id:
                what = f"{json.dumps(draft.model_id)} is also the model_id of {other.where}"
                expected = "a unique model_id (it names the model in the app, its pytest node "
                expected += "and its bundle folder)"
            else:
                what = (
                    f"{json.dumps(draft.model_id)} differs from {other.where}.model_id "
                    f"{json.dumps(other.model_id)} only in case, and their bundle folders would "
                    "clash on case-insensitive file systems (macOS, Windows)"
                )
                expected = "model_ids that differ in more than case"
            self.problems.add(where, what, expected)

    def _check_shared_model_libs(self, drafts: Iterable[_Draft]) -> None:
        """Entries may share a model_lib only when they compile to the same library: the runtime
        opens a library by its prefix, and two libraries with one prefix cannot be linked."""
        first: dict[str, _Draft] = {}
        for draft in drafts:
            if draft.model_lib is None:
                continue
            prefix = draft.model_lib.replace("-", "_")  # what the runtime and linker see
            other = first.setdefault(prefix, draft)
            if other is draft or _same_library(other, draft):
                continue
            assert other.model_lib is not None
            same = (
                f"{json.dumps(draft.model_lib)} is also the model_lib of {other.where}"
                if other.model_lib == draft.model_lib
                else f"{json.dumps(draft.model_lib)} and {json.dumps(other.model_lib)} of "
                f"{other.where} are the same library prefix ({prefix}_, as - becomes _)"
            )
            self.problems.add(
                _join(draft.where, "model_lib"),
                f"{same}, but the entries compile different libraries (different models or "
                "overrides)",
                "a distinct model_lib per distinct library, or no model_lib (one is derived "
                "from the model's config)",
            )

    def _check_prebuilt_references(
        self, prebuilt: Mapping[str, Path], drafts: list[_Draft]
    ) -> None:
        used = [draft.model_lib for draft in drafts if draft.model_lib is not None]
        for model_lib in prebuilt:
            if model_lib in used:
                continue
            suggestion = did_you_mean(model_lib, used)
            hint = f' (did you mean "{suggestion}"?)' if suggestion else ""
            self.problems.add(
                _join("model_lib_path_for_prepare_libs", model_lib),
                f"no model_list entry has this model_lib{hint}, so the library would never be "
                "loaded",
                'the "model_lib" of an entry of model_list',
            )


def _same_library(a: _Draft, b: _Draft) -> bool:
    """Whether two entries compile to the same library (so they may share a model_lib)."""
    if a.compile_request is not None and b.compile_request is not None:
        # Two local MLC models with the same architecture and settings, e.g. two fine-tunes.
        return a.compile_request == b.compile_request and a.overrides == b.overrides
    return (a.hf_repo, a.hf_revision, a.local_dir, a.quantization, a.overrides) == (
        b.hf_repo,
        b.hf_revision,
        b.local_dir,
        b.quantization,
        b.overrides,
    )


def _entry(draft: _Draft) -> ModelEntry:
    # Only called when the file had no problem, so every required field is set.
    assert draft.model is not None and draft.model_id is not None
    assert draft.estimated_vram_bytes is not None and draft.overrides is not None
    return ModelEntry(
        index=draft.index,
        model=draft.model,
        model_id=draft.model_id,
        estimated_vram_bytes=draft.estimated_vram_bytes,
        bundle_weight=draft.bundle_weight,
        overrides=draft.overrides,
        model_lib=draft.model_lib,
        quantization=draft.quantization,
        hf_repo=draft.hf_repo,
        hf_revision=draft.hf_revision,
        local_dir=draft.local_dir,
    )


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
