"""Read and check `mlc-package-config.json`, the file MLC-LLM's `mlc_llm package` reads.

The same fields mean the same things as in MLC, so existing configs work unchanged; unlike MLC,
every mistake is reported before any work starts, all at once, one line per problem:

    <file>: <JSON path>: <what is wrong>; expected <what>

This module runs on every pytest start that names a config, so it imports no TVM or numpy.

It checks the top level and what involves several entries; model_entry.py checks one entry,
overrides.py its overrides, model_source.py where its model comes from, and problems.py words and
collects the problems.

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
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging_plugin.config.devices import DEVICES
from packaging_plugin.config.draft import _Draft
from packaging_plugin.config.model_entry import _check_entry, _check_model_lib_value
from packaging_plugin.config.model_source import _HF_EXAMPLE, _SourceChecker
from packaging_plugin.config.names import ENTRY_KEYS, TOP_LEVEL_KEYS
from packaging_plugin.config.overrides import OVERRIDE_KEYS
from packaging_plugin.config.problems import (
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

CONFIG_DEVICES: tuple[str, ...] = tuple(DEVICES)

# Names users reach for that mean one of ours.
_DEVICE_ALIASES = {"ios": "iphone", "catalyst": "macabi", "maccatalyst": "macabi"}


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
            drafts.append(
                _check_entry(self.problems, item, _Draft(index=index, where=where), sources)
            )
        return drafts

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
            if _check_model_lib_value(self.problems, model_lib, key_where) is None:
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
