"""MLC-LLM's four example app configs, packaged unchanged as a new user packages them.

Each config (tests/data/mlc-examples/) is copied as it is into a fresh folder and packaged with
`-n 2` against the hub on 127.0.0.1, which serves every model it names as MLC publishes it: the
chat config at the real sizes, a tokenizer, tensor-cache.json and real-size shards (lazy files,
tests/helpers/hf_hub.LazyFile). What a user checks: every step passes (bindings are skipped: no MLC
source tree here), the archive holds each model_lib, mlc-app-config.json lists every model_id with
its model_lib and estimated_vram_bytes, no shard of an unbundled model was downloaded, and a
bundled model's shards are in the bundle with the md5 its tensor cache lists.

One exception: iOS MLCEngineExample bundles Llama-3-8B at q3f16_1, 3.6 GB of shards. By default
this test serves that config with `bundle_weight` switched to false (so nothing is downloaded but
the chat config); MLC_EXAMPLES_FULL_BUNDLE=1 packages it unchanged, bundling at full size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from packaging_plugin.checks import objects
from tests.helpers.hf_hub import Hub, Repo, serve
from tests.helpers.mlc_examples import (
    CONFIGS,
    EXAMPLES,
    example_config,
    mlc_repos,
    repo_id,
    shard_names,
    tensor_cache_of,
    write_config,
)
from tests.helpers.outcomes import expected_outcomes

FULL_BUNDLE = os.environ.get("MLC_EXAMPLES_FULL_BUNDLE") == "1"
# (config, model_id) bundled at full size only with MLC_EXAMPLES_FULL_BUNDLE=1
HEAVY_BUNDLES = {("ios-MLCEngineExample", "Llama-3-8B-Instruct-q3f16_1-MLC")}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    with serve(Hub()) as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        yield running
    # Real-size downloads: pytest keeps the folders of the last runs, gigabytes each otherwise.
    shutil.rmtree(tmp_path / "hf-home", ignore_errors=True)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def served_config(name: str, folder: Path) -> Path:
    """The example config as the user's app holds it: copied unchanged, except a heavy bundle
    switched off unless MLC_EXAMPLES_FULL_BUNDLE=1 (see the module docstring)."""
    path = folder / "mlc-package-config.json"
    folder.mkdir(parents=True, exist_ok=True)
    heavy = {model_id for config, model_id in HEAVY_BUNDLES if config == name}
    if FULL_BUNDLE or not heavy:
        shutil.copyfile(EXAMPLES / f"{name}.json", path)
        return path
    data = example_config(name)
    for entry in data["model_list"]:
        if entry["model_id"] in heavy:
            entry["bundle_weight"] = False
    return write_config(data, path)


def check_app_config(dist: Path, entries: list[dict[str, Any]]) -> dict[str, str]:
    """mlc-app-config.json lists every model as the config says; returns model_id -> model_lib."""
    app = json.loads((dist / "bundle" / "mlc-app-config.json").read_text())["model_list"]
    assert [m["model_id"] for m in app] == [e["model_id"] for e in entries]
    for record, entry in zip(app, entries, strict=True):
        assert record["estimated_vram_bytes"] == entry["estimated_vram_bytes"], record
        if "model_lib" in entry:
            assert record["model_lib"] == entry["model_lib"], record
        if entry.get("bundle_weight", False):
            assert record["model_path"] == entry["model_id"], record
        else:
            assert record["model_url"] == f"https://huggingface.co/{repo_id(entry)}", record
    libs = [m["model_lib"] for m in app]
    assert len(set(libs)) == len(libs), libs  # one library per model: all differ in shape
    return {m["model_id"]: m["model_lib"] for m in app}


def check_weights(dist: Path, hub: Hub, entries: list[dict[str, Any]], repos: dict[str, Repo]):
    """No shard of an unbundled model was asked for; a bundled model's are all in its folder."""
    downloaded = hub.file_requests()
    for entry in entries:
        repo = repos[repo_id(entry)]
        asked = {
            name.split("/resolve/", 1)[1].split("/", 1)[1]
            for method, name in hub.requests
            if method == "GET" and name.startswith(f"/{repo_id(entry)}/resolve/")
        }
        assert "mlc-chat-config.json" in asked, entry["model_id"]
        if not entry.get("bundle_weight", False):
            assert not asked & shard_names(repo), (entry["model_id"], sorted(asked))
            continue
        assert shard_names(repo) <= asked, entry["model_id"]
        folder = dist / "bundle" / entry["model_id"]
        index = json.loads((folder / "tensor-cache.json").read_text())
        assert index == tensor_cache_of(repo)
        for shard in index["records"]:
            path = folder / shard["dataPath"]
            assert path.stat().st_size == shard["nbytes"], path
            assert md5_of(path) == shard["md5sum"], path
    assert downloaded  # the log is live


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_an_mlc_example_app_config_packages_unchanged_against_the_hub(
    name: str, pytester: pytest.Pytester, package_env: Path, hub: Hub
) -> None:
    config = served_config(name, pytester.path / "app")
    entries = json.loads(config.read_text())["model_list"]
    names = {repo_id(entry).removeprefix("mlc-ai/"): entry for entry in entries}
    bundled = {name for name, entry in names.items() if entry.get("bundle_weight", False)}
    repos = mlc_repos(list(names), downloaded=bundled)
    hub.repos.update(repos)
    dist = config.parent / "dist"
    result = pytester.runpytest_subprocess(
        f"--package-config={config}", f"--package-output={dist}", "-p", "no:randomly", "-n", "2"
    )
    # Every model step passes; bindings are skipped (no MLC source tree to build them with).
    result.assert_outcomes(**expected_outcomes(config))
    model_libs = check_app_config(dist, entries)
    device = json.loads(config.read_text())["device"]
    members = objects.read_archive(dist / "lib" / f"libmodel_{device}.a")
    for model_id, model_lib in model_libs.items():
        assert [m for m in members if m.name.startswith(f"{model_lib}_")], (model_id, model_lib)
    check_weights(dist, hub, entries, repos)
    for entry in entries:  # checked: the bundled shards need not outlive the test
        for shard in (dist / "bundle" / entry["model_id"]).glob("params_shard_*.bin"):
            shard.unlink()
