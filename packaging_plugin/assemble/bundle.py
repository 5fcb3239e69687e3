"""Put a model's weights into the app bundle: linked where possible, copied otherwise, verified.

Only what the runtime and the app need travels (chat config, weight index, shards, tokenizer,
the model's terms): a model directory may hold much more (source checkpoints, caches).

Each shard is placed by the cheapest method that keeps its source safe and the bundle exact:
- a reflink (copy-on-write clone; btrfs, XFS): the kernel shares the verified blocks, and a later
  edit of either file does not touch the other;
- a hard link, only from stores whose files are never rewritten in place (huggingface_hub's cache
  and our converted-checkpoint cache): the bundle's file is the very file verified at fetch (same
  inode), so it needs no second hash. A user's own model folder is not linked: re-converting into
  it would silently change a published bundle;
- a streamed copy otherwise, hashed as it is read, so bytes that changed since the fetch
  verified them are caught.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging_plugin.errors import PackagingError
from packaging_plugin.sources.model_files import CHAT_CONFIG, terms_files, tokenizer_files
from packaging_plugin.sources.weights import (
    TENSOR_CACHE,
    WeightsError,
    read_tensor_cache,
    tensor_cache_path,
)

Method = Literal["reflink", "hardlink", "copy"]
_CHUNK = 1 << 20
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
# Errors that mean "this filesystem (pair) cannot do that", not "something is wrong".
_UNSUPPORTED = {
    errno.EXDEV,
    errno.EOPNOTSUPP,
    errno.ENOTTY,
    errno.EINVAL,
    errno.EPERM,
    errno.EMLINK,
}


class BundleError(PackagingError):
    """The weights could not be bundled or the bundle did not verify."""


@dataclass(frozen=True)
class BundleResult:
    bytes: int  # everything written under the model's bundle folder
    methods: dict[str, int]  # files placed per method

    @property
    def method(self) -> str:
        """One word for the report: the method, or `mixed`."""
        return next(iter(self.methods)) if len(self.methods) == 1 else "mixed"


def _reflink(source: Path, target: Path) -> bool:
    if not sys.platform.startswith("linux"):
        return False  # macOS clonefile is not reachable from the standard library
    with source.open("rb") as src, target.open("xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError as error:
            if error.errno in _UNSUPPORTED:
                return False
            raise
    return True


def _copy_hashed(source: Path, target: Path) -> str:
    digest = hashlib.md5()
    with source.open("rb") as src, target.open("xb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def place_file(source: Path, target: Path, *, hardlink: bool = False) -> tuple[Method, str | None]:
    """Put `source`'s bytes at `target`; returns the method and, for a copy, the md5 it read.

    `target` is always a new file ("x" mode after unlinking): writing into an existing one could
    write through a hard link into its source.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    real = source.resolve()  # huggingface_hub's snapshot files are symlinks to blobs
    target.unlink(missing_ok=True)
    try:
        if _reflink(real, target):
            return "reflink", None
    except OSError:
        pass
    target.unlink(missing_ok=True)
    if hardlink:
        try:
            os.link(real, target)
            return "hardlink", None
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise
    return "copy", _copy_hashed(real, target)


def bundle_weights(model_dir: Path, destination: Path, *, hardlink: bool = False) -> BundleResult:
    """Place what an app ships from `model_dir` into `destination` and verify each shard.

    `hardlink`: `model_dir` is in a store whose files are never rewritten in place.

    The shards were verified against tensor-cache.json when fetched; here each shard must have
    its listed size, and a copied one the listed md5 of the bytes actually copied.
    """
    try:
        index_path = tensor_cache_path(model_dir)
        index = read_tensor_cache(index_path)
    except WeightsError as error:
        raise BundleError(f"bundle_weight needs MLC weights: {error}") from None
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    methods: Counter[str] = Counter()
    for shard in index["records"]:
        source = model_dir / shard["dataPath"]
        if not source.is_file():
            raise BundleError(f"{source} is missing (listed in {index_path.name})")
        target = destination / shard["dataPath"]
        method, md5 = place_file(source, target, hardlink=hardlink)
        methods[method] += 1
        size = target.stat().st_size
        if size != shard["nbytes"]:
            raise BundleError(
                f"{target} has {size:,} bytes, {TENSOR_CACHE} says {shard['nbytes']:,}"
            )
        if md5 is not None and shard.get("md5sum") and md5 != shard["md5sum"]:
            raise BundleError(
                f"checksum mismatch while bundling: {source} has md5 {md5}, "
                f"{index_path.name} says {shard['md5sum']} (it changed since it was fetched)"
            )
    # Small files are always copied: the app may edit its config, never the cache's.
    for name in [CHAT_CONFIG, *tokenizer_files(model_dir), *terms_files(model_dir)]:
        if not (model_dir / name).is_file():
            raise BundleError(f"{model_dir / name} is missing")
        shutil.copyfile(model_dir / name, destination / name)
    # Always written under the current name: runtimes since 2025-09 read only tensor-cache.json.
    shutil.copyfile(index_path, destination / TENSOR_CACHE)
    written = sum(p.stat().st_size for p in destination.rglob("*") if p.is_file())
    return BundleResult(written, dict(methods))
