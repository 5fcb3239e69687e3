"""A cache entry is checked when it is used: a damaged library, conversion or kernel record is
rebuilt (or, under READONLY, fails its model by name) and never shipped."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from packaging_plugin.cache_records import file_damage, file_record_path, record_file
from packaging_plugin.checks import opencl_kernels
from packaging_plugin.sources.checkpoint_cache import MANIFEST
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.packaging import SMALL, WriteConfig, run_package


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


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["tokenizer.json", "params_shard_0.bin"])
def test_a_damaged_conversion_is_converted_again_and_the_bundle_is_right(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    damaged: str,
) -> None:
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
    entry = {"quantization": "q4f32_1", "model_lib": "tiny_qwen2_hf_q4f32_1"}
    config = write_config("linux", {"qwen": ("tiny-qwen2-hf", entry)})
    assert run_package(pytester, config).ret == 0
    bundle = config.parent / "dist" / "bundle" / "qwen"
    shipped = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    (converted,) = (tmp_path / "cache" / "converted").glob("[!.]*[!k]")  # not the lock
    assert (converted / MANIFEST).is_file()
    target = converted / damaged
    target.unlink()  # bundles may hard-link it: damage a copy, never the shipped file
    target.write_bytes(shipped[damaged][: len(shipped[damaged]) // 2] + b"damage")

    result = run_package(pytester, config)
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert read_report(config)["qwen"]["conversion"] == "converted"
    again = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    assert again == shipped
