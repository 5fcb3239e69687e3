"""Where the model of a model_list entry comes from: a Hugging Face repository (`HF://`), or a
local folder holding an MLC model (mlc-chat-config.json) or a Hugging Face checkpoint
(config.json); and how the paths a config names are resolved, as MLC does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging_plugin import families
from packaging_plugin.config.chat_config import build_compile_request
from packaging_plugin.config.draft import _Draft
from packaging_plugin.config.names import CHAT_CONFIG_NAME, HF_CONFIG_NAME
from packaging_plugin.config.overrides import SLIDING_WINDOW_OVERRIDES
from packaging_plugin.config.problems import (
    ConfigError,
    _describe,
    _join,
    _or_list,
    _Problems,
    read_json_file,
)
from packaging_plugin.families import SUPPORTED_MODEL_TYPES
from packaging_plugin.quantization.schemes import SUPPORTED_QUANTIZATIONS

_HF_PREFIX = re.compile(r"hf://", re.IGNORECASE)
_HF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HF_REVISION = re.compile(r"[^\s@]+")
_HF_WEB_PREFIX = re.compile(r"https?://(www\.)?huggingface\.co/", re.IGNORECASE)
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

_HF_EXAMPLE = "HF://mlc-ai/Qwen2.5-0.5B-Instruct-q4f16_1-MLC"


class _SourceChecker:
    """Checks the `model` of each entry of one config, and resolves the paths the config names.
    `device` is the config's, or None where that is wrong (no compile request is built then)."""

    def __init__(
        self, problems: _Problems, config_dir: Path, cwd: Path, device: str | None
    ) -> None:
        self.problems = problems
        self.config_dir = config_dir
        self.cwd = cwd
        self.device = device

    def check(self, draft: _Draft, item: Mapping[str, Any]) -> None:
        assert draft.model is not None
        model = draft.model
        where = _join(draft.where, "model")
        if _HF_PREFIX.match(model):
            parsed = _parse_hf(model[len("HF://") :])
            if parsed is None:
                self.problems.add(
                    where,
                    f"{json.dumps(model)} is not a Hugging Face model",
                    f"HF://<org>/<repo> or HF://<org>/<repo>@<revision>, e.g. {_HF_EXAMPLE}",
                )
                return
            draft.hf_repo, draft.hf_revision = parsed
            # The quantization of a repository is only known once downloaded: accept it here,
            # the fetch step checks it against what arrives.
            return
        web = _HF_WEB_PREFIX.match(model)
        if web:
            rest = model[web.end() :].strip("/")
            self.problems.add(
                where,
                f"{json.dumps(model)} is a web address",
                f'the Hugging Face form "HF://{rest}"',
            )
            return
        if _URI_SCHEME.match(model):
            self.problems.add(
                where,
                f"{json.dumps(model)} uses an unsupported scheme",
                "HF://<org>/<repo> (Hugging Face) or a local directory path",
            )
            return
        self._check_local_model(draft, item)

    def _check_local_model(self, draft: _Draft, item: Mapping[str, Any]) -> None:
        assert draft.model is not None
        where = _join(draft.where, "model")
        found, tried = self.resolve(draft.model)
        if found is None:
            self.problems.add(
                where,
                f"directory {json.dumps(draft.model)} not found (looked at {_or_list(tried)})",
                "a model directory, relative to the config file's folder, or HF://<org>/<repo>",
            )
            return
        if not found.is_dir():
            hint = f"; point to its folder {found.parent}" if found.name == CHAT_CONFIG_NAME else ""
            self.problems.add(
                where,
                f"{found} is a file, not a directory{hint}",
                f"the model's directory (the folder that holds {CHAT_CONFIG_NAME})",
            )
            return
        draft.local_dir = found
        quantization_given = "quantization" in item
        if item.get("bundle_weight", False) is False:  # a wrong type is reported already
            self.problems.add(
                _join(draft.where, "bundle_weight"),
                "the model is a local directory but its weights are not bundled, so the app "
                "would have no way to get them (a local folder has no download URL)",
                '"bundle_weight": true, or an HF:// model that the app downloads',
            )
        chat_config_path = found / CHAT_CONFIG_NAME
        if chat_config_path.is_file():
            self._check_mlc_model(draft, chat_config_path, quantization_given)
        elif (found / HF_CONFIG_NAME).is_file():
            self._check_hf_checkpoint(draft, found / HF_CONFIG_NAME, quantization_given)
        else:
            self.problems.add(
                where,
                f"{found} has neither {CHAT_CONFIG_NAME} (an MLC model) nor {HF_CONFIG_NAME} "
                "(a Hugging Face checkpoint)",
                f"a model directory: one converted by MLC (with {CHAT_CONFIG_NAME}), or a "
                f'Hugging Face checkpoint (with {HF_CONFIG_NAME}) plus a "quantization" key',
            )

    def _check_mlc_model(self, draft: _Draft, chat_path: Path, quantization_given: bool) -> None:
        try:
            chat = read_json_file(chat_path)
        except ConfigError as error:
            self.problems.extend(error)
            return
        file = str(chat_path)
        context = f"({draft.where}, {json.dumps(draft.model)})"
        if not isinstance(chat, dict):
            self.problems.add(
                "top level", f"{_describe(chat)} {context}", "a JSON object", file=file
            )
            return
        model_type = chat.get("model_type")
        quantization = chat.get("quantization")
        ok = True
        if model_type not in SUPPORTED_MODEL_TYPES:
            ok = False
            what = (
                "missing"
                if model_type is None
                else f"{json.dumps(model_type)} is not supported by this packager"
            )
            self.problems.add(
                "model_type",
                f"{what} {context}",
                f"one of: {', '.join(SUPPORTED_MODEL_TYPES)}",
                file=file,
            )
        if quantization not in SUPPORTED_QUANTIZATIONS:
            ok = False
            what = (
                "missing"
                if quantization is None
                else f"{json.dumps(quantization)} is not supported by this packager"
            )
            self.problems.add(
                "quantization",
                f"{what} {context}",
                f"one of: {', '.join(SUPPORTED_QUANTIZATIONS)}",
                file=file,
            )
        if quantization_given:
            ok = False
            fixed = f" ({json.dumps(quantization)})" if isinstance(quantization, str) else ""
            self.problems.add(
                _join(draft.where, "quantization"),
                f"the model is already converted by MLC: its quantization{fixed} is fixed by "
                f"{chat_path}",
                'no "quantization" key (it is only for Hugging Face checkpoints)',
            )
        overrides = draft.overrides
        if overrides is None or not ok:
            return
        if not families.rules(model_type).sliding_window:
            ignored = [key for key in SLIDING_WINDOW_OVERRIDES if overrides.get(key, -1) != -1]
            for key in ignored:
                self.problems.add(
                    _join(_join(draft.where, "overrides"), key),
                    f'model_type "{model_type}" has no sliding-window attention, so MLC '
                    "ignores this setting",
                    f"no {key} override (or -1)",
                )
            if ignored:
                return
        if self.device is None:
            return
        # The compile request is what decides whether two entries can share one model_lib; and
        # building it now reports a chat config that cannot compile before any work starts.
        try:
            draft.compile_request = build_compile_request(
                chat, overrides, self.device, source=chat_path
            )
        except ConfigError as error:
            self.problems.extend(error)

    def _check_hf_checkpoint(
        self, draft: _Draft, hf_config: Path, quantization_given: bool
    ) -> None:
        if not quantization_given:
            self.problems.add(
                draft.where,
                f"{draft.local_dir} is a Hugging Face checkpoint ({HF_CONFIG_NAME}, no "
                f"{CHAT_CONFIG_NAME}), so the quantization to convert it to must be given",
                f'"quantization": one of {", ".join(SUPPORTED_QUANTIZATIONS)}',
            )
        try:
            hf = read_json_file(hf_config)
        except ConfigError as error:
            self.problems.extend(error)
            return
        model_type = hf.get("model_type") if isinstance(hf, dict) else None
        if model_type not in SUPPORTED_MODEL_TYPES:
            what = (
                "missing"
                if model_type is None
                else f"{json.dumps(model_type)} is not supported by this packager"
            )
            self.problems.add(
                "model_type",
                f"{what} ({draft.where}, {json.dumps(draft.model)})",
                f"one of: {', '.join(SUPPORTED_MODEL_TYPES)}",
                file=str(hf_config),
            )

    def resolve(self, written: str) -> tuple[Path | None, list[Path]]:
        """MLC's rule, config folder first: the path relative to the config file's folder, else
        the one relative to the current directory. Returns the path found and the places tried."""
        path = Path(os.path.expanduser(written))
        if path.is_absolute():
            candidates = [path]
        else:
            candidates = [self.config_dir / path]
            if self.cwd != self.config_dir:
                candidates.append(self.cwd / path)
        candidates = [Path(os.path.normpath(candidate)) for candidate in candidates]
        for candidate in candidates:
            if candidate.exists():
                return candidate.resolve(), candidates
        return None, candidates


def _parse_hf(rest: str) -> tuple[str, str | None] | None:
    """`org/repo` or `org/repo@revision` (after the HF:// prefix) -> (repo id, revision)."""
    repo_id, at, revision = rest.partition("@")
    if at and not _HF_REVISION.fullmatch(revision):
        return None
    parts = repo_id.split("/")
    if len(parts) != 2:
        return None
    for part in parts:
        # Hugging Face's own rules for repository ids.
        if not _HF_NAME.fullmatch(part) or ".." in part or "--" in part or len(part) > 96:
            return None
    return repo_id, (revision if at else None)
