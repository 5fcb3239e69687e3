"""HF:// models downloaded for real, by packaging runs, from a hub on 127.0.0.1
(tests/helpers/hf_hub.py).

The runs are subprocesses (as users run them), so huggingface_hub reads HF_ENDPOINT and HF_HOME
from the environment at its import, exactly as it does for a user.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.hf_hub import Hub, LazyFile, Repo, lazy_md5, serve
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.paths import DEMO_MODELS

REPO_ID = "test-org/tiny-llama-q0f32-MLC"
CHECKPOINT = DEMO_MODELS / "tiny-qwen2-hf"  # a Hugging Face checkpoint (config.json, safetensors)
# The demo configs package the checkpoint under this model_lib: the compile cache shares it.
CHECKPOINT_LIB = "tiny_qwen2_hf_q4f16_1"


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


def package(pytester: pytest.Pytester, config: Path, *args: str) -> pytest.RunResult:
    dist = config.parent / "dist"
    return pytester.runpytest_subprocess(
        f"--package-config={config}", f"--package-output={dist}", "-p", "no:randomly", *args
    )


def bundled_tiny_config(tmp_path: Path) -> Path:
    """A config of one bundled model: the hub's tiny MLC repository."""
    entry = {"model": f"HF://{REPO_ID}", "model_id": "tiny", "bundle_weight": True}
    return hf_config(tmp_path, [{**entry, "model_lib": "hf_tiny"}])


def report(config: Path) -> dict[str, dict]:
    """package-report.json of the last published run, per model_id."""
    data = json.loads((config.parent / "dist" / "package-report.json").read_text())
    return {model["model_id"]: model for model in data["models"]}


def with_index(files: dict[str, bytes], extra: dict[str, bytes]) -> dict[str, bytes]:
    """`files` plus shards `extra`, listed in tensor-cache.json with their size and md5."""
    index = json.loads(files["tensor-cache.json"])
    for name, data in extra.items():
        index["records"].append(
            {
                "dataPath": name,
                "format": "raw-shard",
                "nbytes": len(data),
                "records": [],
                "md5sum": hashlib.md5(data).hexdigest(),
            }
        )
    return {**files, **extra, "tensor-cache.json": json.dumps(index).encode()}


@pytest.mark.slow
def test_an_entry_without_bundle_weight_downloads_the_chat_config_and_no_shard(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    config = hf_config(
        tmp_path, [{"model": f"HF://{REPO_ID}", "model_id": "tiny", "model_lib": "hf_tiny"}]
    )
    result = package(pytester, config)
    # fetch, compile, validate, kernels; library, link, app-config; bindings skipped
    result.assert_outcomes(**expected_outcomes(config))
    downloaded = hub.file_requests()
    assert "mlc-chat-config.json" in downloaded
    assert not [name for name in downloaded if name.startswith("params_shard")], downloaded
    assert "tensor-cache.json" not in downloaded
    app = json.loads((config.parent / "dist" / "bundle" / "mlc-app-config.json").read_text())
    assert app["model_list"][0]["model_url"] == f"https://huggingface.co/{REPO_ID}"


@pytest.mark.slow
def test_a_bundled_entry_downloads_and_verifies_its_shards_and_a_warm_run_downloads_nothing(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    config = bundled_tiny_config(tmp_path)
    package(pytester, config).assert_outcomes(**expected_outcomes(config))
    shards = sorted(p.name for p in (DEMO_MODELS / "tiny-llama-q0f32").glob("params_shard_*"))
    assert sorted(n for n in hub.file_requests() if n.startswith("params_shard")) == shards
    bundled = config.parent / "dist" / "bundle" / "tiny"
    for shard in shards:
        source = DEMO_MODELS / "tiny-llama-q0f32" / shard
        assert (bundled / shard).read_bytes() == source.read_bytes()

    hub.requests.clear()
    package(pytester, config).assert_outcomes(**expected_outcomes(config))
    assert hub.file_requests() == []  # everything came from huggingface_hub's cache


@pytest.mark.slow
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
    # ok: 4 steps pass; missing and gated: fetch fails, compile, validate and kernels are
    # skipped; the package steps cannot publish without them.
    failing = {"missing": "fetch", "gated": "fetch"}
    result.assert_outcomes(**expected_outcomes(config, failing=failing))
    output = result.stdout.str()
    assert "HF://test-org/missing-MLC was not found (or is private: set HF_TOKEN)" in output
    assert "HF://test-org/gated-MLC is gated: accept its terms and set HF_TOKEN" in output
    assert "Traceback" not in output
    # The package steps name the models they lack.
    assert "missing: fetch failed in this run" in output
    assert "gated: fetch failed in this run" in output


@pytest.mark.slow
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
    # the pinned model's fetch ... kernels pass
    result.assert_outcomes(**expected_outcomes(config, failing={"wrong": "fetch"}))


@pytest.mark.slow
def test_with_the_hub_down_a_cached_model_is_used_and_an_uncached_one_says_how_to_go_offline(
    pytester: pytest.Pytester,
    package_env: Path,
    hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = {"model": f"HF://{REPO_ID}", "model_id": "cached", "model_lib": "hf_tiny"}
    alone = hf_config(tmp_path, [cached])
    package(pytester, alone).assert_outcomes(**expected_outcomes(alone))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    config = hf_config(tmp_path, [cached, {"model": "HF://test-org/never-MLC", "model_id": "n"}])
    result = package(pytester, config)
    output = result.stdout.str()
    assert "HF://test-org/never-MLC is not in the local Hugging Face cache" in output
    assert "HF_HUB_OFFLINE=1" in output
    # the cached model's fetch ... kernels pass
    result.assert_outcomes(**expected_outcomes(config, failing={"n": "fetch"}))


@pytest.mark.slow
def test_with_hf_hub_offline_a_cached_bundle_packages_without_a_single_request(
    pytester: pytest.Pytester,
    package_env: Path,
    hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = bundled_tiny_config(tmp_path)
    package(pytester, config).assert_outcomes(**expected_outcomes(config))
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    package(pytester, config).assert_outcomes(**expected_outcomes(config))
    assert hub.requests == []  # not even the revision lookup
    assert report(config)["tiny"]["hashed_bytes"] == 0


@pytest.mark.slow
def test_a_corrupted_or_truncated_shard_fails_that_models_fetch_naming_file_and_digests(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    good = hub.repos[REPO_ID].files
    shard = good["params_shard_0.bin"]
    flipped = bytearray(shard)
    flipped[100] ^= 0xFF
    hub.repos["test-org/corrupt-MLC"] = Repo({**good, "params_shard_0.bin": bytes(flipped)})
    hub.repos["test-org/truncated-MLC"] = Repo({**good, "params_shard_0.bin": shard[:-4]})
    bundled = {"bundle_weight": True}
    config = hf_config(
        tmp_path,
        [
            {"model": f"HF://{REPO_ID}", "model_id": "ok", "model_lib": "hf_tiny", **bundled},
            {"model": "HF://test-org/corrupt-MLC", "model_id": "corrupt", **bundled},
            {"model": "HF://test-org/truncated-MLC", "model_id": "truncated", **bundled},
        ],
    )
    result = package(pytester, config)
    output = result.stdout.str()
    expected = hashlib.md5(shard).hexdigest()
    found = hashlib.md5(bytes(flipped)).hexdigest()
    result.stdout.fnmatch_lines(
        [
            f"*corrupt fetch: checksum mismatch: */params_shard_0.bin has md5 {found}, "
            f"tensor-cache.json says {expected} (downloaded it again: the repository's own copy "
            "does not match either)",
            f"*truncated fetch: */params_shard_0.bin has {len(shard) - 4:,} bytes, "
            f"tensor-cache.json says {len(shard):,} (truncated or replaced) (downloaded it "
            "again: *",
        ]
    )
    assert "Traceback" not in output
    assert hub.file_requests().count("params_shard_0.bin") == 1 + 2 * 2  # bad ones: twice each
    # ok's five steps pass; the two bad models fail at fetch and skip the rest.
    failing = {"corrupt": "fetch", "truncated": "fetch"}
    result.assert_outcomes(**expected_outcomes(config, failing=failing))


@pytest.mark.slow
def test_a_shard_corrupted_in_the_local_cache_is_downloaded_again(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    config = bundled_tiny_config(tmp_path)
    package(pytester, config).assert_outcomes(**expected_outcomes(config))
    (cached,) = (tmp_path / "hf-home").rglob("snapshots/*/params_shard_0.bin")
    blob = cached.resolve()  # huggingface_hub's snapshot files link to its blobs
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF  # a disk error, or a cache edited by hand
    blob.write_bytes(bytes(data))

    hub.requests.clear()
    package(pytester, config).assert_outcomes(**expected_outcomes(config))
    assert hub.file_requests() == ["params_shard_0.bin"]  # that file alone, once
    good = hub.repos[REPO_ID].files["params_shard_0.bin"]
    assert cached.read_bytes() == good
    assert (config.parent / "dist" / "bundle" / "tiny" / "params_shard_0.bin").read_bytes() == good


@pytest.mark.slow
def test_a_dropped_connection_resumes_and_a_server_error_is_retried(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    # huggingface_hub writes in 10 MiB blocks: a drop after 11 MB leaves 10 MiB to resume from.
    big = os.urandom(12 << 20)
    files = with_index(hub.repos[REPO_ID].files, {"params_shard_9.bin": big})
    hub.repos["test-org/flaky-MLC"] = Repo(files)
    hub.drop_after["params_shard_9.bin"] = 11_000_000
    hub.fail_times["params_shard_0.bin"] = 1
    entry = {"model": "HF://test-org/flaky-MLC", "model_id": "flaky", "bundle_weight": True}
    config = hf_config(tmp_path, [{**entry, "model_lib": "hf_tiny"}])
    result = package(pytester, config)
    result.assert_outcomes(**expected_outcomes(config))
    resumed = [value for name, value in hub.ranges if name == "params_shard_9.bin"]
    assert resumed and resumed[0].startswith("bytes=") and not resumed[0].startswith("bytes=0-")
    assert hub.file_requests().count("params_shard_0.bin") == 2  # the 503, then the retry
    bundle = config.parent / "dist" / "bundle" / "flaky"
    assert (bundle / "params_shard_9.bin").read_bytes() == big
    assert report(config)["flaky"]["downloaded_bytes"] == sum(map(len, files.values()))


@pytest.mark.slow
def test_a_legacy_index_is_verified_and_bundled_as_tensor_cache_json(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    files = dict(hub.repos[REPO_ID].files)
    files["ndarray-cache.json"] = files.pop("tensor-cache.json")
    hub.repos["test-org/legacy-MLC"] = Repo(files)
    entry = {"model": "HF://test-org/legacy-MLC", "model_id": "legacy", "bundle_weight": True}
    config = hf_config(tmp_path, [{**entry, "model_lib": "hf_tiny"}])
    package(pytester, config).assert_outcomes(**expected_outcomes(config))
    bundle = config.parent / "dist" / "bundle" / "legacy"
    assert (bundle / "tensor-cache.json").read_bytes() == files["ndarray-cache.json"]
    assert report(config)["legacy"]["weight_bytes"] == len(files["params_shard_0.bin"])


@pytest.mark.slow
def test_on_linux_the_weights_are_fetched_even_when_not_bundled(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    config = hf_config(
        tmp_path, [{"model": f"HF://{REPO_ID}", "model_id": "tiny", "model_lib": "hf_tiny"}]
    )
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "device": "linux"}))
    package(pytester, config).assert_outcomes(**expected_outcomes(config))  # with its smoke
    assert "params_shard_0.bin" in hub.file_requests()  # the smoke run loads them
    assert report(config)["tiny"]["weight_bytes"] == len(
        hub.repos[REPO_ID].files["params_shard_0.bin"]
    )
    app = json.loads((config.parent / "dist" / "bundle" / "mlc-app-config.json").read_text())
    assert "model_url" in app["model_list"][0]  # still downloaded by the app, not bundled


@pytest.mark.slow
def test_download_progress_is_live_in_one_process_quiet_with_q_and_summed_up_under_xdist(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    config = bundled_tiny_config(tmp_path)
    live = package(pytester, config)
    # One bar per download, named by the model (huggingface_hub names the rest).
    assert "tiny: " in live.stderr.str(), live.stderr.str()

    shutil.rmtree(tmp_path / "hf-home")
    quiet = package(pytester, config, "-q")
    assert "tiny: " not in quiet.stderr.str() + quiet.stdout.str()
    assert hub.file_requests().count("params_shard_0.bin") == 2  # it did download again

    shutil.rmtree(tmp_path / "hf-home")
    distributed = package(pytester, config, "-n", "2")
    files = len(hub.repos[REPO_ID].files)
    mib = sum(map(len, hub.repos[REPO_ID].files.values())) / 2**20
    distributed.stdout.fnmatch_lines([f"tiny *{files} files, {mib:.1f} MiB, * s *"])
    assert "tiny: " not in distributed.stderr.str()


@pytest.mark.slow
def test_a_hugging_face_checkpoint_on_the_hub_is_converted_with_its_quantization(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    hub.repos["test-org/tiny-qwen2"] = Repo.from_folder(CHECKPOINT)
    base = {"model": "HF://test-org/tiny-qwen2", "bundle_weight": True}
    config = hf_config(
        tmp_path,
        [
            {**base, "model_id": "qwen", "quantization": "q4f16_1", "model_lib": CHECKPOINT_LIB},
            {**base, "model_id": "unquantized"},
            {**base, "model_id": "unbundled", "quantization": "q4f16_1", "bundle_weight": False},
            {"model": f"HF://{REPO_ID}", "model_id": "mlc", "quantization": "q4f16_1"},
        ],
    )
    result = package(pytester, config)
    output = result.stdout.str()
    for message in (
        "unquantized fetch: HF://test-org/tiny-qwen2 is a Hugging Face checkpoint (config.json, "
        'no mlc-chat-config.json): give model_list[1] a "quantization" to convert it to',
        "unbundled fetch: HF://test-org/tiny-qwen2 is a Hugging Face checkpoint: the app cannot "
        "download MLC weights from it, so its converted weights must be bundled: set "
        '"bundle_weight": true in model_list[2]',
        f"mlc fetch: HF://{REPO_ID} is already converted by MLC: its quantization is fixed by "
        'its mlc-chat-config.json; remove the "quantization" key of model_list[3]',
    ):
        assert message in output
    assert "Traceback" not in output
    # qwen's five steps pass; the other three fail at fetch
    failing = {"unquantized": "fetch", "unbundled": "fetch", "mlc": "fetch"}
    result.assert_outcomes(**expected_outcomes(config, failing=failing))


@pytest.mark.slow
def test_hub_models_local_mlc_models_and_a_local_checkpoint_package_in_one_run_and_warm(
    pytester: pytest.Pytester, package_env: Path, hub: Hub, tmp_path: Path
) -> None:
    """The issue's goal: every kind of source in one config; a warm run fetches and hashes
    nothing."""
    hub.repos["test-org/tiny-qwen2"] = Repo.from_folder(CHECKPOINT)
    app = tmp_path / "app"
    shutil.copytree(DEMO_MODELS / "tiny-llama-q4f16_1", app / "models" / "local-mlc")
    shutil.copytree(CHECKPOINT, app / "models" / "local-checkpoint")
    config = hf_config(
        tmp_path,
        [
            {"model": f"HF://{REPO_ID}", "model_id": "hub-mlc", "model_lib": "hf_tiny"},
            {
                "model": "HF://test-org/tiny-qwen2",
                "model_id": "hub-checkpoint",
                "quantization": "q4f16_1",
                "bundle_weight": True,
                "model_lib": "hub_checkpoint_q4f16_1",
            },
            {
                "model": "./models/local-mlc",
                "model_id": "local-mlc",
                "bundle_weight": True,
                "model_lib": "tiny_llama_q4f16_1",
            },
            {
                "model": "./models/local-checkpoint",
                "model_id": "local-checkpoint",
                "quantization": "q4f16_1",
                "bundle_weight": True,
                "model_lib": CHECKPOINT_LIB,
            },
        ],
    )
    cold = package(pytester, config, "-n", "2")
    cold.assert_outcomes(**expected_outcomes(config))
    first = report(config)
    assert first["hub-mlc"]["downloaded_files"] > 0
    # Both checkpoints have the same content: converted once (maybe by an earlier test).
    assert first["hub-checkpoint"]["conversion"] in ("converted", "cache")
    assert first["local-checkpoint"]["conversion"] in ("converted", "cache")
    assert first["local-mlc"]["hashed_bytes"] == first["local-mlc"]["weight_bytes"] > 0
    app_config = json.loads((app / "dist" / "bundle" / "mlc-app-config.json").read_text())
    assert [m["model_id"] for m in app_config["model_list"]] == list(first)
    for model_id in ("hub-checkpoint", "local-mlc", "local-checkpoint"):
        bundle = app / "dist" / "bundle" / model_id
        index = json.loads((bundle / "tensor-cache.json").read_text())
        for shard in index["records"]:
            assert (
                hashlib.md5((bundle / shard["dataPath"]).read_bytes()).hexdigest()
                == (shard["md5sum"])
            )
    # The checkpoint's licence travels with its converted weights.
    assert (app / "dist" / "bundle" / "local-checkpoint" / "LICENSE").read_text() == (
        CHECKPOINT / "LICENSE"
    ).read_text()

    hub.requests.clear()
    warm = package(pytester, config, "-n", "2")
    warm.assert_outcomes(**expected_outcomes(config))
    assert hub.file_requests() == []
    second = report(config)
    for model_id, model in second.items():
        assert model["downloaded_files"] == 0, model_id
        assert model["hashed_bytes"] == 0, model_id
    assert second["hub-checkpoint"]["conversion"] == "cache"
    assert second["local-checkpoint"]["conversion"] == "cache"


def test_progress_bars_take_huggingface_hubs_keywords_and_name_the_model(
    pytester: pytest.Pytester,
) -> None:
    # huggingface_hub 1.x passes name= to the tqdm class, which plain tqdm refuses when shown.
    pytester.makepyfile(
        """
        from packaging_plugin.harness.progress import progress_factory

        def test_bars(request):
            bars = progress_factory(request.config)("tiny")
            bar = bars(total=3, desc="Fetching 3 files", name="huggingface_hub.snapshot_download")
            bar.update(3)
            bar.set_description_str("Download complete")
            bar.close()
        """
    )
    shown = pytester.runpytest_subprocess("-p", "no:randomly")
    shown.assert_outcomes(passed=1)
    assert "tiny: Download complete" in shown.stderr.str()
    quiet = pytester.runpytest_subprocess("-p", "no:randomly", "-q")
    quiet.assert_outcomes(passed=1)
    assert "tiny:" not in quiet.stderr.str()


def test_a_lazy_file_streams_its_bytes_with_ranges_and_its_md5_is_that_of_its_bytes() -> None:
    size = (3 << 20) + 5  # three whole chunks and a partial one
    with serve(Hub({"org/r": Repo({"big.bin": LazyFile(size, 7), "small": b"abc"})})) as hub:
        url = f"{hub.url}/org/r/resolve/main/big.bin"
        with urllib.request.urlopen(url) as answer:
            body = answer.read()
            assert answer.headers["Content-Length"] == str(size)
        ranged = urllib.request.Request(url, headers={"Range": "bytes=1048570-1048580"})
        with urllib.request.urlopen(ranged) as answer:
            assert answer.status == 206
            assert answer.headers["Content-Range"] == f"bytes 1048570-1048580/{size}"
            assert answer.read() == bytes([7]) * 11
        tree = json.loads(urllib.request.urlopen(f"{hub.url}/api/models/org/r/tree/main").read())
    assert body == bytes([7]) * size
    assert lazy_md5(size, 7) == hashlib.md5(body).hexdigest()
    assert lazy_md5(size) == hashlib.md5(bytes(size)).hexdigest()
    assert {entry["path"]: entry["size"] for entry in tree} == {"big.bin": size, "small": 3}
