"""HF:// models downloaded for real, by packaging runs, from a hub on 127.0.0.1 (tests/hf_hub.py).

The runs are subprocesses (as users run them), so huggingface_hub reads HF_ENDPOINT and HF_HOME
from the environment at its import, exactly as it does for a user.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DEMO_MODELS
from .hf_hub import Hub, Repo, serve

REPO_ID = "test-org/tiny-llama-q0f32-MLC"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    with serve(Hub()) as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        running.repos[REPO_ID] = Repo.from_folder(DEMO_MODELS / "tiny-llama-q0f32")
        yield running


def hf_config(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "app" / "mlc-package-config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    model_list = [{"estimated_vram_bytes": 100_000_000, **entry} for entry in entries]
    path.write_text(json.dumps({"device": "android", "model_list": model_list}))
    return path


def package(pytester: pytest.Pytester, config: Path) -> pytest.RunResult:
    dist = config.parent / "dist"
    return pytester.runpytest_subprocess(
        f"--package-config={config}", f"--package-output={dist}", "-p", "no:randomly"
    )


def test_an_entry_without_bundle_weight_downloads_the_chat_config_and_no_shard(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    config = hf_config(
        tmp_path, [{"model": f"HF://{REPO_ID}", "model_id": "tiny", "model_lib": "hf_tiny"}]
    )
    result = package(pytester, config)
    result.assert_outcomes(passed=3 + 2, skipped=1)  # fetch, compile, validate; package steps
    downloaded = hub.file_requests()
    assert "mlc-chat-config.json" in downloaded
    assert not [name for name in downloaded if name.startswith("params_shard")], downloaded
    assert "tensor-cache.json" not in downloaded
    app = json.loads((config.parent / "dist" / "bundle" / "mlc-app-config.json").read_text())
    assert app["model_list"][0]["model_url"] == f"https://huggingface.co/{REPO_ID}"


def test_a_bundled_entry_downloads_and_verifies_its_shards_and_a_warm_run_downloads_nothing(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    entry = {"model": f"HF://{REPO_ID}", "model_id": "tiny", "bundle_weight": True}
    config = hf_config(tmp_path, [{**entry, "model_lib": "hf_tiny"}])
    package(pytester, config).assert_outcomes(passed=4 + 2, skipped=1)
    shards = sorted(p.name for p in (DEMO_MODELS / "tiny-llama-q0f32").glob("params_shard_*"))
    assert sorted(n for n in hub.file_requests() if n.startswith("params_shard")) == shards
    bundled = config.parent / "dist" / "bundle" / "tiny"
    for shard in shards:
        source = DEMO_MODELS / "tiny-llama-q0f32" / shard
        assert (bundled / shard).read_bytes() == source.read_bytes()

    hub.requests.clear()
    package(pytester, config).assert_outcomes(passed=4 + 2, skipped=1)
    assert hub.file_requests() == []  # everything came from huggingface_hub's cache


def test_a_missing_and_a_gated_repository_fail_only_their_own_fetch_with_what_to_do(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    hub.repos["test-org/gated-MLC"] = Repo({"mlc-chat-config.json": b"{}"}, gated=True)
    config = hf_config(
        tmp_path,
        [
            {"model": f"HF://{REPO_ID}", "model_id": "ok", "model_lib": "hf_tiny"},
            {"model": "HF://test-org/missing-MLC", "model_id": "missing"},
            {"model": "HF://test-org/gated-MLC", "model_id": "gated"},
        ],
    )
    result = package(pytester, config)
    # ok: 3 steps pass; missing and gated: fetch fails, compile and validate are skipped;
    # the package steps cannot publish without them.
    result.assert_outcomes(passed=3, failed=3, skipped=6)
    output = result.stdout.str()
    assert "HF://test-org/missing-MLC was not found (or is private: set HF_TOKEN)" in output
    assert "HF://test-org/gated-MLC is gated: accept its terms and set HF_TOKEN" in output
    assert "Traceback" not in output
    # The package steps name the models they lack.
    assert "missing: fetch failed in this run" in output
    assert "gated: fetch failed in this run" in output


def test_a_pinned_commit_is_downloaded_without_asking_for_the_revision_and_a_wrong_one_fails(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    commit = hub.repos[REPO_ID].commit
    config = hf_config(
        tmp_path,
        [
            {"model": f"HF://{REPO_ID}@{commit}", "model_id": "pinned", "model_lib": "hf_tiny"},
            {"model": f"HF://{REPO_ID}@{'0' * 40}", "model_id": "wrong"},
        ],
    )
    result = package(pytester, config)
    output = result.stdout.str()
    assert f"HF://{REPO_ID} has no revision '{'0' * 40}'" in output
    assert ("GET", f"/api/models/{REPO_ID}/revision/{commit}") not in hub.requests
    assert "mlc-chat-config.json" in hub.file_requests()
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 3, outcomes  # the pinned model's fetch, compile, validate


def test_with_the_hub_down_a_cached_model_is_used_and_an_uncached_one_says_how_to_go_offline(
    pytester: pytest.Pytester,
    package_env: Path,
    hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = {"model": f"HF://{REPO_ID}", "model_id": "cached", "model_lib": "hf_tiny"}
    package(pytester, hf_config(tmp_path, [cached])).assert_outcomes(passed=3 + 2, skipped=1)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    config = hf_config(tmp_path, [cached, {"model": "HF://test-org/never-MLC", "model_id": "n"}])
    result = package(pytester, config)
    output = result.stdout.str()
    assert "HF://test-org/never-MLC is not in the local Hugging Face cache" in output
    assert "HF_HUB_OFFLINE=1" in output
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 3, outcomes  # the cached model's fetch, compile, validate
