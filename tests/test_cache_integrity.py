"""A cache entry is checked when it is used: a damaged library, conversion or kernel record is
rebuilt (or, under READONLY, fails its model by name) and never shipped."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

import pytest

from packaging_plugin.cache_records import file_damage, file_record_path, record_file, write_sealed
from packaging_plugin.checks import opencl_kernels
from packaging_plugin.sources.checkpoint_cache import (
    MANIFEST,
    ConversionRebuiltWarning,
    conversion_damage,
    converted_checkpoint,
)
from packaging_plugin.sources.weights import DigestRecord
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.packaging import SMALL, WriteConfig, run_package
from tests.helpers.paths import DEMO_MODELS

CHECKPOINT = DEMO_MODELS / "tiny-qwen2-hf"
SHARD = "params_shard_0.bin"


def test_a_recorded_file_is_trusted_until_it_changes(tmp_path: Path) -> None:
    library = tmp_path / "key.tar"
    library.write_bytes(b"library bytes" * 100)
    assert "no valid record" in str(file_damage(library))
    record_file(library)
    assert file_damage(library) is None
    data = bytearray(library.read_bytes())
    data[7] ^= 1
    library.write_bytes(bytes(data))
    assert "sha256" in str(file_damage(library))
    library.write_bytes(b"short")
    assert "has 5 bytes, its record says 1,300" in str(file_damage(library))
    record_file(library)
    record = file_record_path(library)
    record.write_text(record.read_text().replace('"bytes": 5', '"bytes": 6'))
    assert "no valid record" in str(file_damage(library))  # an edited record is not believed


KERNEL_DAMAGE: dict[str, Callable[[Path], None]] = {
    "edited": lambda r: r.write_text(r.read_text().replace('"kernels": 1', '"kernels": 0')),
    "truncated": lambda r: r.write_bytes(r.read_bytes()[:20]),
    "emptied": lambda r: r.write_bytes(b""),
    # What a version before sealed records wrote: a plain JSON object.
    "unsealed": lambda r: r.write_text(json.dumps(json.loads(r.read_text())["content"])),
}


@pytest.mark.parametrize("damage", sorted(KERNEL_DAMAGE))
def test_a_damaged_kernel_record_is_not_a_pass(tmp_path: Path, damage: str) -> None:
    if isinstance(opencl_kernels.opencl_compiler(), str):
        pytest.skip("no clang with an OpenCL front end: install clang")
    kernel = opencl_kernels.Kernel("k", "__kernel void k(__global float* x) { x[0] = 1.0f; }\n")
    records = tmp_path / "records"
    assert not opencl_kernels.check_kernels([kernel], records).cached
    assert opencl_kernels.check_kernels([kernel], records).cached
    (record,) = records.glob("*.json")
    KERNEL_DAMAGE[damage](record)
    assert not opencl_kernels.check_kernels([kernel], records).cached  # checked again
    assert opencl_kernels.check_kernels([kernel], records).cached  # and recorded whole again


def flip_in_place(path: Path) -> None:
    """A byte changed where it lies (same size, same inode: how a disk or a stray write damages
    a file, and what a hard-linked bundle shares)."""
    with open(path, "r+b") as stream:
        stream.seek(stream.seek(0, os.SEEK_END) // 2)
        byte = stream.read(1)
        stream.seek(-1, os.SEEK_CUR)
        stream.write(bytes([byte[0] ^ 0xFF]))


def truncate_in_place(path: Path) -> None:
    with open(path, "r+b") as stream:
        stream.truncate(path.stat().st_size // 2)


def old_manifest(folder: Path) -> None:
    """The manifest an earlier version wrote: shards recorded by size alone."""
    path = folder / MANIFEST
    write_sealed(path, {"files": json.loads(path.read_text())["content"]["files"]})


def foreign_manifest(folder: Path) -> None:
    """A sealed manifest of a shape this version does not know."""
    write_sealed(folder / MANIFEST, {"files": {SHARD: {"bytes": 1}}, "shard_md5": {}})


# damage: (what it does to a cached conversion, what the warning must say)
CONVERSION_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "shard-truncated": (lambda f: truncate_in_place(f / SHARD), f"*{SHARD} has *, its manifest*"),
    "shard-flipped": (lambda f: flip_in_place(f / SHARD), f"*{SHARD} has md5 *, its manifest*"),
    "tokenizer-flipped": (
        lambda f: flip_in_place(f / "tokenizer.json"),
        "*tokenizer.json has sha256 *, its manifest says *",
    ),
    "index-missing": (
        lambda f: (f / "tensor-cache.json").unlink(),
        "*tensor-cache.json is missing (listed in its manifest)*",
    ),
    "stray-tokenizer": (
        lambda f: (f / "tokenizer.model").write_bytes(b"not ours"),
        "*tokenizer.model is not listed in its manifest*",
    ),
    "manifest-missing": (lambda f: (f / MANIFEST).unlink(), "*has no valid manifest*"),
    "manifest-edited": (
        lambda f: (f / MANIFEST).write_text((f / MANIFEST).read_text().replace("1", "2", 1)),
        "*has no valid manifest*",
    ),
    "manifest-old": (old_manifest, "*was written by an older version*"),
    "manifest-foreign": (foreign_manifest, "*is not a manifest this version reads*"),
}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("damage", sorted(CONVERSION_DAMAGE))
def test_a_damaged_conversion_in_the_cache_is_converted_again(tmp_path: Path, damage: str) -> None:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(CHECKPOINT, checkpoint)
    cache = tmp_path / "cache"
    first = converted_checkpoint(checkpoint, "q4f32_1", cache, DigestRecord(cache))
    clean = folder_bytes(first.path)
    assert converted_checkpoint(checkpoint, "q4f32_1", cache, DigestRecord(cache)).hit
    do, says = CONVERSION_DAMAGE[damage]
    do(first.path)

    with pytest.warns(ConversionRebuiltWarning) as warned:
        again = converted_checkpoint(checkpoint, "q4f32_1", cache, DigestRecord(cache))
    assert not again.hit and again.path == first.path
    (message,) = [str(w.message) for w in warned]
    assert message.endswith("; converted it again") and again.damage is not None
    assert fnmatch(message, says), message
    assert folder_bytes(again.path) == clean
    assert conversion_damage(again.path, DigestRecord(cache)) is None
    assert converted_checkpoint(checkpoint, "q4f32_1", cache, DigestRecord(cache)).hit
    assert [p.name for p in (cache / "converted").iterdir() if p.name.startswith(".")] == []


def test_a_warm_conversion_check_reads_no_shard_and_still_sees_a_truncation(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    converted = converted_checkpoint(CHECKPOINT, "q4f32_1", cache, DigestRecord(cache)).path
    assert conversion_damage(converted, DigestRecord(cache)) is None  # the first check hashes
    warm = DigestRecord(cache)
    assert conversion_damage(converted, warm) is None
    assert warm.hashed_bytes == 0  # the digest record holds each shard's md5 by its identity
    # A truncation that puts the old modification time back is still a new size: caught.
    shard = converted / SHARD
    stat = shard.stat()
    truncate_in_place(shard)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert f"{SHARD} has" in str(conversion_damage(converted, DigestRecord(cache)))


def read_report(config: Path) -> dict[str, dict]:
    report = json.loads((config.parent / "dist" / "package-report.json").read_text())
    return {model["model_id"]: model for model in report["models"]}


def damage_library(library: Path, damage: str) -> None:
    if damage == "truncated":
        truncate_in_place(library)
    elif damage == "flipped":
        flip_in_place(library)
    else:  # an entry cached by a version that wrote no record
        file_record_path(library).unlink()


@pytest.mark.slow
def test_a_damaged_library_is_compiled_again_and_the_package_is_unchanged(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
    config = write_config("linux", {"tiny": (SMALL, {"model_lib": "integrity_tiny"})})
    assert run_package(pytester, config).ret == 0
    archive = config.parent / "dist" / "lib" / "libmodel_linux.a"
    clean = archive.read_bytes()
    library = Path(read_report(config)["tiny"]["library_path"])
    # One cache through three damages: each run after one compiles the library again.
    for damage, says in [
        ("truncated", "has * bytes, its record says *"),
        ("flipped", "has sha256 *, its record says *"),
        ("unrecorded", "has no valid record of its digest*"),
    ]:
        damage_library(library, damage)
        again = run_package(pytester, config)
        assert again.ret == 0, (damage, again.stdout.str()[-3000:])
        assert read_report(config)["tiny"]["cache"] == "rebuilt", damage
        again.stdout.fnmatch_lines([f"*tiny: {library} {says}; compiled it again*"])
        assert archive.read_bytes() == clean, damage  # a fresh compile, identical
        assert file_damage(library) is None, damage
    assert run_package(pytester, config).ret == 0
    assert read_report(config)["tiny"]["cache"] == "hit"


@pytest.mark.slow
def test_under_readonly_a_damaged_library_fails_its_model_by_name(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
    models = {
        "tiny": (SMALL, {"model_lib": "integrity_ro"}),
        "intact": (SMALL, {"model_lib": "integrity_ro_intact"}),
    }
    config = write_config("linux", models)
    assert run_package(pytester, config).ret == 0
    library = Path(read_report(config)["tiny"]["library_path"])
    assert library != Path(read_report(config)["intact"]["library_path"])
    truncate_in_place(library)
    monkeypatch.setenv("MLC_JIT_POLICY", "READONLY")
    result = run_package(pytester, config)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"tiny compile: MLC_JIT_POLICY=READONLY and the cached library is damaged: {library} "
         "has * bytes, its record says *"]
    )  # fmt: skip
    result.assert_outcomes(**expected_outcomes(config, failing={"tiny": "compile"}))
    everything = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in everything and "INTERNALERROR" not in everything


def replace_truncated(path: Path) -> None:
    """A shorter file put in the place of the cached one (a copy cut short by a full disk)."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2] + b"damage")


@pytest.mark.slow
def test_a_damaged_conversion_is_converted_again_and_the_bundle_is_right(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
    entry = {"quantization": "q4f32_1", "model_lib": "tiny_qwen2_hf_q4f32_1"}
    config = write_config("linux", {"qwen": ("tiny-qwen2-hf", entry)})
    assert run_package(pytester, config).ret == 0
    bundle = config.parent / "dist" / "bundle" / "qwen"
    shipped = folder_bytes(bundle)
    (converted,) = (tmp_path / "cache" / "converted").glob("[!.]*[!k]")  # not the lock
    assert (converted / MANIFEST).is_file()
    # In-place damage also reaches a bundle that hard-linked the shard: the next run must
    # publish fresh bytes, not the shared damaged file.
    for do, name, says in [
        (replace_truncated, SHARD, "has * bytes, its manifest says *"),
        (flip_in_place, SHARD, "has md5 *, its manifest says *"),
        (flip_in_place, "tokenizer.json", "has sha256 *, its manifest says *"),
    ]:
        do(converted / name)
        result = run_package(pytester, config)
        assert result.ret == 0, (name, result.stdout.str()[-3000:])
        assert read_report(config)["qwen"]["conversion"] == "converted", name
        result.stdout.fnmatch_lines([f"*{converted / name} {says}; converted it again*"])
        assert folder_bytes(bundle) == shipped, name
    assert run_package(pytester, config).ret == 0
    assert read_report(config)["qwen"]["conversion"] == "cache"
