"""Credentials never leave a run: URL userinfo, token-shaped strings and secret variables are
removed from messages, captured output, JUnit and the report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from packaging_plugin.redaction import redact, redact_value
from tests.helpers.hf_hub import Hub, Repo, serve
from tests.helpers.paths import DEMO_MODELS

PLANTED_PASSWORD = "planted-password-7f3a9c"
PLANTED_HF_TOKEN = "hf_" + "Pl4nt3dT0k3n" * 3  # 39 characters after the prefix
PLANTED_AWS_KEY_ID = "AKIA" + "PLANTED0KEY0ID12"
PLANTED_AWS_SECRET = "planted/aws+secret/0123456789abcdefABCDEF"
PLANTED = [PLANTED_PASSWORD, PLANTED_HF_TOKEN, PLANTED_AWS_KEY_ID, PLANTED_AWS_SECRET]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://user:pw123@hub.example/x failed", "GET https://***@hub.example/x failed"),
        ("s3://KEYID@bucket/prefix", "s3://***@bucket/prefix"),
        (f"Authorization: Bearer {PLANTED_HF_TOKEN}", "Authorization: Bearer ***"),
        (f"key {PLANTED_AWS_KEY_ID} denied", "key *** denied"),
        ("https://huggingface.co/org/repo", "https://huggingface.co/org/repo"),
        ("mail me at someone@example.com", "mail me at someone@example.com"),
        ("hf_short is not a token", "hf_short is not a token"),
    ],
)
def test_redact_removes_credentials_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text, environ={}) == expected


def test_the_values_of_secret_variables_are_removed_wherever_they_appear() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": PLANTED_AWS_SECRET, "HOME": "/home/someone", "X_TOKEN": "1"}
    text = f"signature mismatch for {PLANTED_AWS_SECRET} in /home/someone (token 1)"
    assert redact(text, env) == "signature mismatch for *** in /home/someone (token 1)"
    assert redact_value({"a": [text, 3]}, env) == {"a": [redact(text, env), 3]}


@pytest.fixture
def leaky_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    """A hub reached through a URL with credentials, and secrets in the environment."""
    with serve(Hub()) as hub:
        host = hub.url.removeprefix("http://")
        monkeypatch.setenv("HF_ENDPOINT", f"http://someone:{PLANTED_PASSWORD}@{host}")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_TOKEN", PLANTED_HF_TOKEN)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", PLANTED_AWS_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_AWS_SECRET)
        monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "cache"))
        monkeypatch.delenv("MLC_JIT_POLICY", raising=False)
        hub.repos["test-org/refused-MLC"] = Repo.from_folder(DEMO_MODELS / "tiny-llama-q0f32")
        hub.forbidden.add("mlc-chat-config.json")  # the hub's error quotes the URL
        yield hub


def every_file_text(*folders: Path) -> str:
    return "\n".join(
        path.read_bytes().decode("utf-8", "replace")
        for folder in folders
        if folder.exists()
        for path in folder.rglob("*")
        if path.is_file()
    )


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "hub_up"), [("0", True), ("2", False)])
def test_no_planted_secret_reaches_output_junit_report_or_cache(
    pytester: pytest.Pytester,
    leaky_environment: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
    hub_up: bool,
) -> None:
    if not hub_up:  # nothing listens there: the connection error quotes the URL
        monkeypatch.setenv("HF_ENDPOINT", f"http://someone:{PLANTED_PASSWORD}@127.0.0.1:9")
    app = tmp_path / "app"
    app.mkdir()
    config = app / "mlc-package-config.json"
    entries = [
        {"model": "HF://test-org/missing-MLC", "model_id": "missing"},
        {"model": "HF://test-org/refused-MLC", "model_id": "refused"},
    ]
    config.write_text(json.dumps({"device": "android", "model_list": [
        {"estimated_vram_bytes": 1, **entry} for entry in entries]}))  # fmt: skip
    result = pytester.runpytest_subprocess(
        f"--package-config={config}", f"--package-output={app / 'dist'}", "-n", workers,
        f"--junitxml={app / 'package.xml'}", "-p", "no:randomly", "-rA",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    seen = "\n".join(
        [result.stdout.str(), result.stderr.str(), every_file_text(app, tmp_path / "cache")]
    )
    assert (app / "package.xml").is_file() and (app / "dist.failed").is_dir()
    for secret in PLANTED:
        assert secret not in seen, f"{secret} leaked"
    assert "missing fetch: HF://test-org/missing-MLC" in seen
    if not hub_up:  # the message still says which hub it could not reach
        assert "could not be downloaded from http://***@127.0.0.1:9" in seen
