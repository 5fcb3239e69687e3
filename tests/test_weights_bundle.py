"""Weight verification against tensor-cache.json, its record of files found good, and bundling by
link or copy: on real model directories (copies of the demo models)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from packaging_plugin.assemble.bundle import BundleError, bundle_weights, place_file
from packaging_plugin.sources.weights import DigestRecord, WeightsError, verify_weights
from tests.helpers.paths import DEMO_MODELS

DEMO = "tiny-llama-q4f16_1"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(DEMO_MODELS / DEMO, folder)
    return folder


def shards(folder: Path) -> list[dict]:
    return json.loads((folder / "tensor-cache.json").read_text())["records"]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_good_weights_verify_and_a_flipped_byte_names_the_file_and_both_digests(
    model: Path,
) -> None:
    total = sum(r["nbytes"] for r in shards(model))
    assert verify_weights(model) == total
    shard = model / shards(model)[0]["dataPath"]
    flip_a_byte(shard)
    with pytest.raises(WeightsError) as error:
        verify_weights(model)
    found = hashlib.md5(shard.read_bytes()).hexdigest()
    assert str(error.value) == (
        f"checksum mismatch: {shard} has md5 {found}, tensor-cache.json says "
        f"{shards(model)[0]['md5sum']}"
    )


def test_a_truncated_or_missing_shard_is_named_with_the_sizes(model: Path) -> None:
    shard = model / shards(model)[0]["dataPath"]
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(WeightsError, match=rf"has {size - 7:,} bytes, tensor-cache.json says"):
        verify_weights(model)
    shard.unlink()
    with pytest.raises(WeightsError, match=r"params_shard_0.bin is missing"):
        verify_weights(model)


def test_the_legacy_index_name_is_read(model: Path) -> None:
    (model / "tensor-cache.json").rename(model / "ndarray-cache.json")
    assert verify_weights(model) > 0
    (model / "ndarray-cache.json").unlink()
    with pytest.raises(WeightsError, match=r"has no tensor-cache\.json"):
        verify_weights(model)


def test_the_record_hashes_a_file_once_and_again_only_after_it_changed(
    model: Path, tmp_path: Path
) -> None:
    total = verify_weights(model)
    record = DigestRecord(tmp_path / "cache")
    verify_weights(model, record)
    assert record.hashed_bytes == total

    warm = DigestRecord(tmp_path / "cache")
    verify_weights(model, warm)
    assert warm.hashed_bytes == 0

    shard = model / shards(model)[0]["dataPath"]
    shard.write_bytes(shard.read_bytes())  # same bytes, new modification time
    rewritten = DigestRecord(tmp_path / "cache")
    verify_weights(model, rewritten)
    assert rewritten.hashed_files == 1
    assert rewritten.hashed_bytes == shard.stat().st_size

    flip_a_byte(shard)  # the same size: only the digest can tell
    with pytest.raises(WeightsError, match="checksum mismatch"):
        verify_weights(model, DigestRecord(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="checksum mismatch"):  # a bad file stays bad
        verify_weights(model, DigestRecord(tmp_path / "cache"))


def test_a_bundle_links_the_verified_shards_and_carries_only_what_an_app_needs(
    model: Path, tmp_path: Path
) -> None:
    (model / "LICENSE").write_text("terms")
    (model / "README.md").write_text("card")
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"a source checkpoint")
    (model / "notes.txt").write_text("not for the app")
    result = bundle_weights(model, tmp_path / "bundle", hardlink=True)
    bundled = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert bundled == sorted(
        [
            "LICENSE",
            "README.md",
            "mlc-chat-config.json",
            "tensor-cache.json",
            "tokenizer.json",
            *(r["dataPath"] for r in shards(model)),
        ]
    )
    # One filesystem here: without reflinks (ext4) a hard link, the same inode as the source.
    assert result.method in ("reflink", "hardlink")
    shard = shards(model)[0]["dataPath"]
    if result.method == "hardlink":
        assert (tmp_path / "bundle" / shard).stat().st_ino == (model / shard).stat().st_ino
    assert (tmp_path / "bundle" / shard).read_bytes() == (model / shard).read_bytes()
    assert result.bytes == sum(p.stat().st_size for p in (tmp_path / "bundle").iterdir())


def test_a_copied_bundle_is_checked_against_the_index_as_it_is_read(
    model: Path, tmp_path: Path
) -> None:
    # A user's own folder is never hard-linked: a reflink where the filesystem has one, or a copy.
    result = bundle_weights(model, tmp_path / "copied")
    if result.method == "reflink":
        pytest.skip("this filesystem clones files: no copy to check")
    assert result.methods == {"copy": len(shards(model))}
    shard = shards(model)[0]["dataPath"]
    assert (tmp_path / "copied" / shard).stat().st_ino != (model / shard).stat().st_ino
    assert (tmp_path / "copied" / shard).read_bytes() == (model / shard).read_bytes()

    flip_a_byte(model / shard)  # changed after the fetch verified it
    with pytest.raises(BundleError, match=rf"checksum mismatch while bundling: .*{shard}"):
        bundle_weights(model, tmp_path / "copied")


def test_a_legacy_index_is_bundled_under_the_name_current_runtimes_read(
    model: Path, tmp_path: Path
) -> None:
    index = (model / "tensor-cache.json").read_text()
    (model / "tensor-cache.json").rename(model / "ndarray-cache.json")
    bundle_weights(model, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "tensor-cache.json").read_text() == index
    assert not (tmp_path / "bundle" / "ndarray-cache.json").exists()


def test_across_filesystems_a_file_is_copied(model: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == model.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) on this machine")
    with tempfile.TemporaryDirectory(dir=other) as folder:
        shard = shards(model)[0]["dataPath"]
        method, md5 = place_file(model / shard, Path(folder) / shard, hardlink=True)
        assert method == "copy"
        assert md5 == shards(model)[0]["md5sum"]
        assert os.path.getsize(Path(folder) / shard) == shards(model)[0]["nbytes"]


@pytest.mark.parametrize("data_path", ["/etc/passwd", "../outside.bin", ""])
def test_an_index_naming_a_file_outside_the_folder_is_refused(model: Path, data_path: str) -> None:
    index = json.loads((model / "tensor-cache.json").read_text())
    index["records"][0]["dataPath"] = data_path
    (model / "tensor-cache.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="is not a file name inside the folder"):
        verify_weights(model)


def test_a_shard_listed_twice_is_refused_before_anything_is_written(
    model: Path, tmp_path: Path
) -> None:
    index = json.loads((model / "tensor-cache.json").read_text())
    index["records"].append(dict(index["records"][0]))
    (model / "tensor-cache.json").write_text(json.dumps(index))
    source = (model / "params_shard_0.bin").read_bytes()
    with pytest.raises(BundleError, match="is listed twice"):
        bundle_weights(model, tmp_path / "bundle", hardlink=True)
    assert (model / "params_shard_0.bin").read_bytes() == source


def test_a_converted_checkpoint_found_corrupted_in_the_cache_is_converted_again(
    tmp_path: Path,
) -> None:
    from packaging_plugin.config.package_config import load_package_config
    from packaging_plugin.sources.fetch import fetch_model

    shutil.copytree(DEMO_MODELS / "tiny-qwen2-hf", tmp_path / "app" / "checkpoint")
    config = tmp_path / "app" / "mlc-package-config.json"
    entry = {
        "model": "./checkpoint",
        "model_id": "qwen",
        "quantization": "q4f32_1",
        "bundle_weight": True,
        "estimated_vram_bytes": 1,
    }
    config.write_text(json.dumps({"device": "linux", "model_list": [entry]}))
    (model,) = load_package_config(config).models
    cache = tmp_path / "cache"
    first = fetch_model(model, with_weights=True, cache_root=cache)
    assert first.conversion == "converted" and first.immutable
    assert first.path.parent == cache / "converted"
    assert fetch_model(model, with_weights=True, cache_root=cache).conversion == "cache"

    flip_a_byte(first.path / shards(first.path)[0]["dataPath"])
    again = fetch_model(model, with_weights=True, cache_root=cache)
    assert again.conversion == "converted"  # not a checksum failure forever
    assert verify_weights(again.path) == again.weight_bytes
