"""Resolve a config entry to an MLC model directory: a local folder, an HF:// download, or a
Hugging Face checkpoint (local or HF://) converted on the fly.

Only what the steps need is fetched: the chat config and tokenizer (all a compile reads), the
model's terms, and the weights only when they are bundled or run. Weights are verified against
tensor-cache.json before any step uses them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging_plugin.config.package_config import ModelEntry
from packaging_plugin.errors import PackagingError
from packaging_plugin.redaction import redact
from packaging_plugin.sources.hf_download import DownloadError, download, redownload
from packaging_plugin.sources.model_files import (
    CHAT_CONFIG,
    CHECKPOINT_CONFIGS,
    HF_CONFIG,
    MLC_WEIGHT_PATTERNS,
    SAFETENSORS_INDEX,
    TERMS_PATTERNS,
    TOKENIZER_FILES,
)
from packaging_plugin.sources.weights import DigestRecord, WeightsError, verify_weights


class FetchError(PackagingError):
    """The model directory could not be obtained; the message says what to do."""

    def __init__(self, message: str) -> None:
        # Often made from a download's error, which may quote a URL with credentials.
        super().__init__(redact(message))


@dataclass
class FetchedModel:
    """The model directory and what obtaining it took, for the report."""

    path: Path
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    download_seconds: float = 0.0
    weight_bytes: int = 0  # shard bytes verified (0 when the weights are not needed)
    hashed_bytes: int = 0  # bytes read to verify or key them in this run
    conversion: str | None = None  # "converted" or "cache" for a Hugging Face checkpoint
    # Its files are never rewritten in place (huggingface_hub's cache, our converted cache), so
    # bundles may hard-link them.
    immutable: bool = False

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "model_dir": str(self.path),
            "downloaded_files": self.downloaded_files,
            "downloaded_bytes": self.downloaded_bytes,
            "download_seconds": round(self.download_seconds, 3),
            "weight_bytes": self.weight_bytes,
            "hashed_bytes": self.hashed_bytes,
        }
        if self.conversion:
            facts["conversion"] = self.conversion
        return facts


def fetch_model(
    entry: ModelEntry,
    *,
    with_weights: bool,
    cache_root: Path,
    offline: bool = False,
    progress: Callable[[], type] | None = None,
) -> FetchedModel:
    """The local MLC model directory of `entry`, downloaded, converted and verified as needed.

    `with_weights` asks for the weight shards too (bundled or smoke-run models). `offline` uses
    huggingface_hub's cache alone; `progress` makes the tqdm class of each download's bars.
    """
    record = DigestRecord(cache_root)
    if entry.local_dir is not None:
        fetched = FetchedModel(entry.local_dir)
        checkpoint = None if (entry.local_dir / CHAT_CONFIG).is_file() else entry.local_dir
    else:
        fetched, checkpoint = _fetch_hf(entry, with_weights, offline, progress)
    repair: Callable[[str], str] | None = None
    if checkpoint is not None:
        _convert(entry, checkpoint, cache_root, record, fetched)

        def reconvert(shard: str) -> str:
            shutil.rmtree(fetched.path, ignore_errors=True)
            _convert(entry, checkpoint, cache_root, record, fetched)
            return "converted again, and the new conversion does not verify either"

        repair = reconvert
    elif entry.hf_repo is not None and not offline:
        repo, commit = entry.hf_repo, fetched.path.name  # the snapshot folder is the commit

        def download_again(shard: str) -> str:
            try:
                redownload(repo, commit, shard)
            except DownloadError as error:
                raise FetchError(str(error)) from None
            return "downloaded it again: the repository's own copy does not match either"

        repair = download_again
    if with_weights:
        fetched.weight_bytes = _verify(fetched.path, record, repair)
    fetched.hashed_bytes = record.hashed_bytes
    return fetched


def _verify(model_dir: Path, record: DigestRecord, repair: Callable[[str], str] | None) -> int:
    """Verify the weights; a bad shard in a cache of ours is fetched or converted again once
    (a download cut short earlier, a disk error), and only a second failure is the model's."""
    try:
        return verify_weights(model_dir, record)
    except WeightsError as error:
        if error.shard is None or repair is None:
            raise FetchError(str(error)) from None
        done = repair(error.shard)
    try:
        return verify_weights(model_dir, record)
    except WeightsError as error:
        raise FetchError(f"{error} ({done})") from None


def _fetch_hf(
    entry: ModelEntry, with_weights: bool, offline: bool, progress: Callable[[], type] | None
) -> tuple[FetchedModel, Path | None]:
    """Download an HF:// entry; returns it and, for a Hugging Face checkpoint, its folder."""
    assert entry.hf_repo is not None, "the config checker guarantees a local dir or an HF repo"
    source = f"HF://{entry.hf_repo}"
    light = [CHAT_CONFIG, *CHECKPOINT_CONFIGS, *TOKENIZER_FILES, *TERMS_PATTERNS]
    weights = list(MLC_WEIGHT_PATTERNS) if with_weights else []
    fetched = FetchedModel(Path())
    folder = _download(entry, [*light, *weights], offline, progress, fetched)
    if (folder / CHAT_CONFIG).is_file():
        if entry.quantization is not None:
            raise FetchError(
                f"{source} is already converted by MLC: its quantization is fixed by its "
                f'{CHAT_CONFIG}; remove the "quantization" key of model_list[{entry.index}]'
            )
        fetched.path = folder
        fetched.immutable = True
        return fetched, None
    if not (folder / HF_CONFIG).is_file():
        raise FetchError(
            f"{source} has neither {CHAT_CONFIG} (an MLC model) nor {HF_CONFIG} (a Hugging Face "
            "checkpoint)"
        )
    where = f"model_list[{entry.index}]"
    if entry.quantization is None:
        raise FetchError(
            f"{source} is a Hugging Face checkpoint ({HF_CONFIG}, no {CHAT_CONFIG}): give "
            f'{where} a "quantization" to convert it to (q4f16_1 suits most phones)'
        )
    if not entry.bundle_weight:
        raise FetchError(
            f"{source} is a Hugging Face checkpoint: the app cannot download MLC weights from "
            f'it, so its converted weights must be bundled: set "bundle_weight": true in {where}'
        )
    folder = _download(entry, [*light, *_checkpoint_weights(folder)], offline, progress, fetched)
    return fetched, folder


def _checkpoint_weights(folder: Path) -> list[str]:
    """The safetensors files to download: those the index lists, when there is one.

    Some repositories hold the same weights twice (Mistral's `consolidated.safetensors` beside
    the sharded files); the index names the set the converter reads.
    """
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map")
            if isinstance(weight_map, dict):
                return sorted({str(name) for name in weight_map.values()})
        except (OSError, ValueError):
            pass  # the converter reports a broken index with its name
    return ["*.safetensors"]


def _download(
    entry: ModelEntry,
    patterns: list[str],
    offline: bool,
    progress: Callable[[], type] | None,
    into: FetchedModel,
) -> Path:
    assert entry.hf_repo is not None
    try:
        result = download(
            entry.hf_repo, entry.hf_revision, patterns, offline=offline, progress=progress
        )
    except DownloadError as error:
        raise FetchError(str(error)) from None
    into.downloaded_files += result.files
    into.downloaded_bytes += result.bytes
    into.download_seconds += result.seconds
    return result.path


def _convert(
    entry: ModelEntry,
    checkpoint: Path,
    cache_root: Path,
    record: DigestRecord,
    fetched: FetchedModel,
) -> None:
    from packaging_plugin.families.base.config import ConvertError
    from packaging_plugin.sources.checkpoint_cache import converted_checkpoint

    assert entry.quantization is not None, "the config checker requires it for a local checkpoint"
    try:
        converted = converted_checkpoint(checkpoint, entry.quantization, cache_root, record)
    except ConvertError as error:
        raise FetchError(
            f"converting {entry.model} to {entry.quantization} failed: {error}"
        ) from None
    fetched.path = converted.path
    fetched.conversion = "cache" if converted.hit else "converted"
    fetched.immutable = True
