"""The model-library cache: keys, `MLC_JIT_POLICY`, per-key locks and atomic publishing.

A key covers everything that changes the bytes of a library: the normalised compile request, the
system-lib prefix, the TVM and tvm-ffi versions, and a hash of every module of this package that
the compile child imports (code_closure.py): a version number alone does not change under an
editable install, and stale libraries after an upgrade are a known trap.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from packaging_plugin.atomic_files import atomic_path
from packaging_plugin.cache_records import file_damage, record_file
from packaging_plugin.code_closure import installed_closure_hash
from packaging_plugin.errors import PackagingError
from packaging_plugin.families import MODEL_MODULES


class JitPolicy(enum.Enum):
    """MLC's `MLC_JIT_POLICY` values, with MLC's meaning."""

    ON = "ON"  # take from the cache, else compile
    OFF = "OFF"  # never compile: libraries must come from model_lib_path_for_prepare_libs
    REDO = "REDO"  # always compile, replacing what is cached
    READONLY = "READONLY"  # take from the cache, and fail on a miss


class CacheMiss(PackagingError):
    """The policy forbids compiling and the cache does not hold the library."""


def jit_policy(environ: Mapping[str, str] | None = None) -> JitPolicy:
    """The policy named by `MLC_JIT_POLICY` (default ON); a bad value raises ValueError."""
    value = (environ if environ is not None else os.environ).get("MLC_JIT_POLICY", "ON")
    try:
        return JitPolicy(value.strip().upper())
    except ValueError:
        allowed = ", ".join(p.value for p in JitPolicy)
        raise ValueError(f"MLC_JIT_POLICY={value!r} is not one of {allowed}") from None


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """`$MLC_LLM_HOME`, else `$XDG_CACHE_HOME/mlc_llm`, else `~/.cache/mlc_llm` (as MLC)."""
    env = environ if environ is not None else os.environ
    if env.get("MLC_LLM_HOME"):
        return Path(env["MLC_LLM_HOME"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "mlc_llm"
    return Path.home() / ".cache" / "mlc_llm"


@cache
def toolchain_versions() -> dict[str, str]:
    """Versions of the compiler stack, read from package metadata so TVM is not imported."""
    versions = {}
    for dist in ("apache-tvm", "apache-tvm-ffi"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def compile_code_hash() -> str:
    """A hash of the code the compile child runs (its import closure, every family's model
    included), so that changing any of it invalidates cached libraries."""
    return installed_closure_hash(("packaging_plugin.compile.child", *MODEL_MODULES))


def _hash_json(value: Any) -> str:
    return hashlib.md5(json.dumps(value, sort_keys=True).encode()).hexdigest()


def model_hash(request: Mapping[str, Any]) -> str:
    """MLC-style hash of what the model is (config, type, quantization, device).

    It names automatic model_libs, so it leaves tool versions out: an app's model_lib should not
    change because the compiler was upgraded.
    """
    return _hash_json(dict(request))


def cache_key(request: Mapping[str, Any], system_lib_prefix: str) -> str:
    """The key of one library in the cache."""
    return _hash_json(
        {
            "request": dict(request),
            "system_lib_prefix": system_lib_prefix,
            "versions": toolchain_versions(),
            "compile_code": compile_code_hash(),
        }
    )


@dataclass(frozen=True)
class CachedLibrary:
    """A library in the cache, and how this run obtained it."""

    path: Path
    key: str
    hit: bool
    compile_seconds: float  # 0.0 on a hit
    damage: str | None = None  # why the cached copy was not trusted, when it was compiled again


class LibraryCache:
    """The `model_lib/` folder of the cache root, shared by workers and concurrent runs.

    Each library has a record of its size and sha256 beside it (cache_records.py), written
    before the library is renamed into place and checked on every hit: a damaged library is
    compiled again, never shipped.
    """

    def __init__(self, root: Path) -> None:
        self.folder = root / "model_lib"

    def path_for(self, key: str) -> Path:
        return self.folder / f"{key}.tar"

    def _trusted(self, target: Path) -> tuple[bool, str | None]:
        """(usable as a hit, why not when it exists but is damaged)."""
        if not target.is_file():
            return False, None
        damage = file_damage(target)
        return damage is None, damage

    def obtain(
        self, key: str, policy: JitPolicy, compile_into: Callable[[Path], None]
    ) -> CachedLibrary:
        """Return the library for `key`, compiling it with `compile_into(tmp_path)` when needed.

        The lock makes parallel workers and concurrent runs compile a key once; the compile writes
        a temporary file that is renamed into place, so no reader ever sees half a library.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path_for(key)
        if policy is not JitPolicy.REDO:
            trusted, damage = self._trusted(target)
            if trusted:
                return CachedLibrary(target, key, hit=True, compile_seconds=0.0)
        else:
            damage = None
        if policy is JitPolicy.READONLY:
            if damage is not None:
                raise CacheMiss(
                    f"MLC_JIT_POLICY=READONLY and the cached library is damaged: {damage}"
                )
            raise CacheMiss(f"MLC_JIT_POLICY=READONLY and the cache has no library {target}")
        if policy is JitPolicy.OFF:
            raise CacheMiss(
                "MLC_JIT_POLICY=OFF forbids compiling: give this model_lib a prebuilt library in "
                "model_lib_path_for_prepare_libs"
            )
        with FileLock(str(target) + ".lock"):
            # Another process may have compiled it while this one waited for the lock.
            if policy is not JitPolicy.REDO and self._trusted(target)[0]:
                return CachedLibrary(target, key, hit=True, compile_seconds=0.0)
            with atomic_path(target, suffix=".tar") as tmp:
                started = time.perf_counter()
                compile_into(tmp)
                seconds = time.perf_counter() - started
                record_file(target, written=tmp)  # before the rename: never a library unrecorded
        return CachedLibrary(target, key, hit=False, compile_seconds=seconds, damage=damage)
