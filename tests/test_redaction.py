"""Secrets never leave a run: redact() on its own, and one real packaging run with planted
credentials whose every output and file is searched for them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from packaging_plugin.assemble.package_steps import StepResult
from packaging_plugin.harness.items import PackagingWarning
from packaging_plugin.harness.report import REPORT_NAME, keep_failed_report, write_report
from packaging_plugin.harness.steps import Step
from packaging_plugin.redaction import redact, redact_report, redact_value
from packaging_plugin.sources.fetch import FetchError
from packaging_plugin.sources.hf_download import DownloadError
from tests.helpers.hf_hub import Hub, Repo, serve
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.packaging import install_sitecustomize, run_package
from tests.helpers.paths import DEMO_MODELS

# Built from parts: a token-shaped literal in the source would look like a leaked one.
HF_TOKEN = "hf_" + ("Planted7" * 5)[:34]
AWS_KEY_ID = "AKIA" + "PLANTED0KEY0ID00"
AWS_SECRET = "planted/aws+secret/" + "x" * 21
URL_PASSWORD = "PLANTEDSECRET"
REPO_ID = "test-org/tiny-llama-q0f32-MLC"


@pytest.fixture(autouse=True)
def no_secrets_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit tests see the secret variables they set, not whatever this machine has."""
    for name in list(os.environ):
        if any(word in name.upper() for word in ("TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")):
            monkeypatch.delenv(name)
    for name in ("AWS_ACCESS_KEY_ID", "HF_ENDPOINT", "MLC_LLM_CACHE_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


# -- redact() -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET http://user:pw@127.0.0.1:8080/a failed", "GET http://***@127.0.0.1:8080/a failed"),
        ("https://token@hub.example/x", "https://***@hub.example/x"),
        ("'s3://key:p@ss@bucket/k'", "'s3://***@bucket/k'"),  # a raw @ in the password
        ("url 'http://u:p@h/x' and http://v:q@h", "url 'http://***@h/x' and http://***@h"),
    ],
)
def test_the_userinfo_of_a_url_is_removed_and_the_host_kept(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "https://huggingface.co/test-org/repo/resolve/main/config.json",
        "http://127.0.0.1:8080/search?mail=someone@example.com#a@b",
        "mailto someone@example.com, HF://org/repo@0123abcd",
        "model_lib hf_tiny, hf_short_name, AKIA alone, a path /tmp/x/y@z",
        "the fetch of tiny failed: 503 Service Unavailable\n  after 4 attempts",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_token_shapes_are_removed() -> None:
    text = f"token={HF_TOKEN}; key {AWS_KEY_ID}, session ASIA{'Q' * 16}."
    assert redact(text) == "token=***; key ***, session ***."
    # one character short of a shape, or part of a longer word: not a token
    assert redact("hf_" + "a" * 29) == "hf_" + "a" * 29
    assert redact("AKIA" + "A" * 17) == "AKIA" + "A" * 17


def test_the_values_of_secret_variables_are_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "correct horse")
    monkeypatch.setenv("DEPLOY_CREDENTIALS", "c" * 8)
    monkeypatch.setenv("API_TOKEN", "short")  # under 8 characters: not redacted
    monkeypatch.setenv("HOME_DIR", "not a secret name")
    text = f"{AWS_SECRET} / correct horse / {'c' * 8} / short / not a secret name"
    assert redact(text) == "*** / *** / *** / short / not a secret name"
    # an environment given instead of this process's
    assert redact(f"{AWS_SECRET} {HF_TOKEN[3:]}", {"HF_TOKEN": HF_TOKEN[3:]}) == f"{AWS_SECRET} ***"


def test_the_userinfo_of_the_endpoint_variables_is_removed_anywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://user:{URL_PASSWORD}@127.0.0.1:9")
    monkeypatch.setenv("MLC_LLM_CACHE_URL", "https://cache-reader%40corp:abc%2Fdef99@cache.example")
    text = f"auth user:{URL_PASSWORD} ({URL_PASSWORD}); reader cache-reader@corp abc/def99"
    assert redact(text) == "auth *** (***); reader *** ***"


def test_redact_value_walks_reports_and_keeps_their_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    report = {
        "outcome": "failed",
        "models": [{"model_id": "tiny", "seconds": 1.5, "ok": True, "none": None}],
        "package": {"library": {"message": f"http://u:p@h: {HF_TOKEN}", "tags": ("a", HF_TOKEN)}},
    }
    redacted = redact_value(report)
    assert redacted["models"] == report["models"]
    assert redacted["package"]["library"] == {"message": "http://***@h: ***", "tags": ("a", "***")}
    assert HF_TOKEN not in json.dumps(redacted)


class _Repr:
    """A longrepr object (pytest's are): known by its string form."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def test_redact_report_rewrites_longrepr_and_sections_only_where_a_secret_is() -> None:
    clean = _Repr("AssertionError: 1 != 2")
    report = SimpleNamespace(
        longrepr=clean, sections=[("Captured stdout call", "ok"), ("Captured log", "http://a:b@h")]
    )
    redact_report(report)
    assert report.longrepr is clean  # unchanged: pytest's rich repr stays
    assert report.sections == [("Captured stdout call", "ok"), ("Captured log", "http://***@h")]
    report = SimpleNamespace(longrepr=_Repr("fetch: http://a:b@h/x"), sections=[])
    redact_report(report)
    assert report.longrepr == "fetch: http://***@h/x"
    skipped = SimpleNamespace(longrepr=("config.json", None, "Skipped: http://a:b@h"), sections=[])
    redact_report(skipped)  # a skip's longrepr stays a (path, line, reason) tuple
    assert skipped.longrepr == ("config.json", None, "Skipped: http://***@h")


def test_errors_warnings_and_step_messages_of_the_plugin_are_redacted_when_made() -> None:
    for kind in (DownloadError, FetchError, PackagingWarning):
        assert str(kind("at http://u:p@h/x")) == "at http://***@h/x"
    assert StepResult(Step.LIBRARY, "failed", "at http://u:p@h/x").message == "at http://***@h/x"


def test_both_reports_a_run_writes_are_redacted(tmp_path: Path) -> None:
    report = {"outcome": "failed", "package": {"library": {"message": "at http://u:p@h/x"}}}
    write_report(tmp_path / "dist" / REPORT_NAME, report)
    kept = keep_failed_report(tmp_path / "dist", report)
    for path in (tmp_path / "dist" / REPORT_NAME, kept):
        assert path is not None
        assert json.loads(path.read_text())["package"]["library"]["message"] == "at http://***@h/x"
    assert report["package"]["library"]["message"] == "at http://u:p@h/x"  # the caller's is kept


# -- a packaging run ------------------------------------------------------------------------

# Put into every process of the run: the hub's 503s are given up on without waiting between
# tries, and each download first prints, logs and raises the planted secrets, as a library
# might, so that captured output and a failure's traceback carry them too.
PLANTED_FAULTS = """
import logging
import os
import sys

import packaging_plugin.sources.hf_download as hf_download

hf_download.RETRY_DELAYS = (0.0, 0.0, 0.0)
_download = hf_download.download


def download(repo, *args, **kwargs):
    print("token", os.environ["HF_TOKEN"])
    print("endpoint", os.environ["HF_ENDPOINT"], file=sys.stderr)
    logging.getLogger("planted").warning("key %s", os.environ["AWS_SECRET_ACCESS_KEY"])
    if repo == "test-org/other-MLC":
        raise RuntimeError("not a packaging error: " + os.environ["AWS_ACCESS_KEY_ID"])
    return _download(repo, *args, **kwargs)


hf_download.download = download
"""


@pytest.fixture
def failing_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    """A hub whose credentials (URL userinfo, HF_TOKEN, AWS keys) are planted in the environment;
    every GET of the chat config fails, so the fetch fails with the URL in its message."""
    with serve(Hub()) as running:
        running.repos[REPO_ID] = Repo.from_folder(DEMO_MODELS / "tiny-llama-q0f32")
        running.fail_times["mlc-chat-config.json"] = 10_000
        endpoint = running.url.replace("http://", f"http://user:{URL_PASSWORD}@")
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "mlc-home"))  # fresh: nothing cached
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        for name in ("HF_HUB_OFFLINE", "MLC_JIT_POLICY"):
            monkeypatch.delenv(name, raising=False)
        install_sitecustomize(tmp_path / "faults", monkeypatch, PLANTED_FAULTS)
        yield running


def _files_holding(folders: list[Path], secrets: list[str]) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_no_planted_secret_reaches_any_output_or_file_and_the_failure_still_says_what_failed(
    pytester: pytest.Pytester, failing_hub: Hub, tmp_path: Path, workers: list[str]
) -> None:
    entries = [
        {"model": f"HF://{REPO_ID}", "model_id": "tiny", "model_lib": "hf_tiny"},
        {"model": "HF://test-org/other-MLC", "model_id": "other"},  # fails with a traceback
    ]
    config = tmp_path / "app" / "mlc-package-config.json"
    config.parent.mkdir()
    common = {"estimated_vram_bytes": 100_000_000, "bundle_weight": True}
    model_list = [{**common, **entry} for entry in entries]
    config.write_text(json.dumps({"device": "android", "model_list": model_list}))
    junit = tmp_path / "junit.xml"

    # junit_logging=all: the captured output and logs go into the JUnit file as well
    options = [f"--junitxml={junit}", "-o", "junit_logging=all", "-rA", *workers]
    result = run_package(pytester, config, *options)

    failing = {"tiny": "fetch", "other": "fetch"}
    result.assert_outcomes(**expected_outcomes(config, failing=failing))
    assert failing_hub.file_requests().count("mlc-chat-config.json") >= 4  # it was really tried
    output = result.stdout.str() + result.stderr.str()
    planted = [URL_PASSWORD, HF_TOKEN, AWS_SECRET, AWS_KEY_ID]
    assert [s for s in planted if s in output] == []
    # the JUnit file, the app and output folders, the failed run's report, MLC_LLM_HOME, HF_HOME
    # (all under tmp_path), and the folder the run ran in (its .pytest_cache)
    assert _files_holding([tmp_path, pytester.path], planted) == []
    assert (config.parent / "dist.failed" / "package-report.json").is_file()
    # The user still learns what failed, and at which host.
    assert f"downloading HF://{REPO_ID} failed after 4 attempts" in output
    assert "http://***@127.0.0.1" in output
    assert "RuntimeError: not a packaging error: ***" in output
    assert "token ***" in output and "key ***" in output
    assert "http://***@127.0.0.1" in junit.read_text()
