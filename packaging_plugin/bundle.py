"""Copy a model's weights into the app bundle and verify the copy against tensor-cache.json."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from .fetch import CHAT_CONFIG, TOKENIZER_FILES

TENSOR_CACHE = "tensor-cache.json"
LEGACY_TENSOR_CACHE = "ndarray-cache.json"  # the name before 2025-09; current runtimes want the new
_CHUNK = 1 << 20


class BundleError(Exception):
    """The weights could not be bundled or did not verify."""


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_cache_path(model_dir: Path) -> Path:
    """The weight index of a model directory, under its current or legacy name."""
    for name in (TENSOR_CACHE, LEGACY_TENSOR_CACHE):
        if (model_dir / name).is_file():
            return model_dir / name
    raise BundleError(
        f"{model_dir} has no {TENSOR_CACHE}: bundle_weight needs the converted weights"
    )


def read_tensor_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from None


def verify_shards(model_dir: Path, index: dict) -> int:
    """Check every shard's size and md5 against the index; return the total shard bytes."""
    total = 0
    for record in index.get("records", []):
        shard = model_dir / record["dataPath"]
        if not shard.is_file():
            raise BundleError(f"{shard} is missing (listed in {TENSOR_CACHE})")
        size = shard.stat().st_size
        if size != record["nbytes"]:
            raise BundleError(f"{shard} has {size} bytes, {TENSOR_CACHE} says {record['nbytes']}")
        expected = record.get("md5sum")
        if expected and (found := _md5(shard)) != expected:
            raise BundleError(f"{shard} md5 is {found}, {TENSOR_CACHE} says {expected}")
        total += size
    return total


def bundle_weights(model_dir: Path, destination: Path) -> int:
    """Copy what the runtime reads into `destination`, verify it, and return the bytes written.

    Only the chat config, the weight index, its shards and the tokenizer files travel: a model
    directory may hold much more (source checkpoints, caches) that has no place in an app.
    """
    index_path = tensor_cache_path(model_dir)
    index = read_tensor_cache(index_path)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    names = [CHAT_CONFIG, *(r["dataPath"] for r in index.get("records", []))]
    names += [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    for name in names:
        source = model_dir / name
        if not source.is_file():
            raise BundleError(f"{source} is missing")
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    # Always written under the current name: runtimes since 2025-09 read only tensor-cache.json.
    shutil.copyfile(index_path, destination / TENSOR_CACHE)
    verify_shards(destination, index)
    return sum(p.stat().st_size for p in destination.rglob("*") if p.is_file())
