"""End-to-end packaging runs through pytester: real compiles, real archives, real JUnit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from packaging_plugin.checks import objects
from packaging_plugin.config.devices import DEVICES
from tests.helpers.junit import read_junit
from tests.helpers.outcomes import expected_outcomes
from tests.helpers.packaging import SMALL, SMALL_Q4, WriteConfig, install_sitecustomize, run_package
from tests.helpers.paths import REPO


def archive_symbols(archive: Path) -> set[str]:
    names: set[str] = set()
    for member in objects.read_archive(archive):
        obj = objects.read_object(member.data, member.name)
        names.update(s.name for s in obj.symbols if s.defined and s.binding != "local")
    return names


def read_report(config: Path) -> dict:
    return json.loads((config.parent / "dist" / "package-report.json").read_text())


@pytest.mark.parametrize("device", ["android", "iphone", "macabi", "linux"])
@pytest.mark.slow
def test_a_tiny_model_is_packaged_for_each_device(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path, device: str
) -> None:
    config = write_config(device, {"tiny": (SMALL, {"model_lib": "tiny_llama_demo"})})
    result = run_package(pytester, config)
    # Off linux the bindings are skipped, saying what they lack; on linux the smoke run passes.
    result.assert_outcomes(**expected_outcomes(config))
    dist = config.parent / "dist"
    archive = dist / "lib" / f"libmodel_{device}.a"
    spec = DEVICES[device]
    members = objects.read_archive(archive)
    assert members, "the combined archive has no members"
    for member in members:
        parsed = objects.read_object(member.data, member.name)
        assert (parsed.format, parsed.machine) == (spec.object_format, spec.machine)
    symbol = f"{spec.symbol_prefix}tiny_llama_demo___tvm_ffi__library_bin"
    assert symbol in archive_symbols(archive)
    assert symbol in objects.read_archive_index(archive)
    app_config = json.loads((dist / "bundle" / "mlc-app-config.json").read_text())
    assert app_config == {
        "model_list": [
            {
                "model_id": "tiny",
                "model_lib": "tiny_llama_demo",
                "model_path": "tiny",
                "estimated_vram_bytes": 100_000_000,
            }
        ]
    }
    bundled = dist / "bundle" / "tiny"
    assert (bundled / "mlc-chat-config.json").is_file()
    index = json.loads((bundled / "tensor-cache.json").read_text())
    for record in index["records"]:
        assert (bundled / record["dataPath"]).stat().st_size == record["nbytes"]


def test_collect_only_shows_every_step_and_the_package_steps(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path
) -> None:
    config = write_config("android", {"a": (SMALL, {}), "b": (SMALL_Q4, {})})
    result = pytester.runpytest(
        f"--package-config={config}", "--collect-only", "-q", "-p", "no:randomly"
    )
    listed = result.stdout.str()
    for model in ("a", "b"):
        for step in ("fetch", "compile", "validate", "kernels", "bundle"):
            assert f"mlc-package-config.json::{model}::{step}" in listed
    for step in ("library", "link", "bindings", "app-config"):
        assert f"mlc-package-config.json::package::{step}" in listed
    assert not (config.parent / "dist").exists(), "--collect-only must not write output"


def test_a_config_mistake_is_a_usage_error_without_traceback(
    pytester: pytest.Pytester, write_config: WriteConfig
) -> None:
    config = write_config("android", {"tiny": (SMALL, {"estimated_vram_bytes": -5})})
    result = pytester.runpytest_subprocess(f"--package-config={config}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stderr.str() + result.stdout.str()
    assert "model_list[0].estimated_vram_bytes" in output
    assert str(config) in output or config.name in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_junit_holds_model_and_package_cases_and_validates_against_the_schema(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path
) -> None:
    config = write_config("android", {"tiny": (SMALL, {"model_lib": "tiny_llama_junit"})})
    junit = config.parent / "package.xml"
    result = run_package(pytester, config, f"--junitxml={junit}")
    result.assert_outcomes(**expected_outcomes(config))
    report = read_junit(junit)  # valid against tests/helpers/junit.xsd; counts match the cases
    assert report.outcomes() == expected_outcomes(config)
    # A case per model step and per package step, classed under the model or "package".
    cases = {(case.classname.rsplit(".", 1)[-1], case.name): case for case in report.cases}
    assert len(cases) == len(report.cases), "two cases share a classname and name"
    for step in ("fetch", "compile", "validate", "kernels", "bundle"):
        assert cases["tiny", step].outcome == "passed", step
    for step in ("library", "link", "app-config"):
        assert cases["package", step].outcome == "passed", step
    bindings = cases["package", "bindings"]
    assert bindings.outcome == "skipped"
    assert bindings.message and "MLC-LLM source dir" in bindings.message  # says what it lacks
    # Per-model figures are suite properties named <model_id>.<figure>.
    properties = report.properties
    assert properties["tiny.model_lib"] == "tiny_llama_junit"
    assert float(properties["tiny.compile_seconds"]) >= 0
    assert properties["tiny.downloaded_bytes"] == "0"  # a local model
    assert properties["tiny.compile"] == "passed"
    for name in properties:
        owner, _, figure = name.partition(".")
        assert owner in ("tiny", "package") and figure, name


@pytest.mark.slow
def test_a_warm_run_compiles_nothing_and_redo_recompiles(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "own-cache"))
    config = write_config("linux", {"tiny": (SMALL, {})})
    run_package(pytester, config).assert_outcomes(**expected_outcomes(config))
    assert read_report(config)["models"][0]["cache"] == "miss"
    first_library = (config.parent / "dist" / "lib" / "libmodel_linux.a").read_bytes()

    run_package(pytester, config).assert_outcomes(**expected_outcomes(config))
    warm = read_report(config)["models"][0]
    assert warm["cache"] == "hit"
    assert warm["compile_seconds"] == 0
    # the archive is reproducible: a warm run republishes identical bytes
    assert (config.parent / "dist" / "lib" / "libmodel_linux.a").read_bytes() == first_library

    monkeypatch.setenv("MLC_JIT_POLICY", "REDO")
    run_package(pytester, config).assert_outcomes(**expected_outcomes(config))
    redo = read_report(config)["models"][0]
    assert redo["cache"] == "miss"
    assert redo["compile_seconds"] > 0


def test_readonly_policy_fails_a_cache_miss_and_keeps_the_old_output(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = write_config("linux", {"tiny": (SMALL, {})})
    old = config.parent / "dist"
    (old / "bundle").mkdir(parents=True)
    (old / "bundle" / "previous.txt").write_text("from an earlier run")
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MLC_JIT_POLICY", "READONLY")
    result = run_package(pytester, config)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*READONLY*"])
    assert (old / "bundle" / "previous.txt").read_text() == "from an earlier run"
    assert not (old / "lib").exists()
    assert not list(config.parent.glob(".dist.staging~*")), "staging must be cleaned up"


FAULTS = textwrap.dedent(
    """
    # Loaded by every Python process of the test run; acts only in the compile child of the
    # model whose request names the faulty prefix.
    import os, sys, signal, time
    requests = [arg for arg in sys.argv if arg.endswith("request.json")]
    if requests:
        text = open(requests[0]).read()
        if "crashing_model_" in text:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "hanging_model_" in text:
            time.sleep(600)
    """
)


@pytest.mark.slow
def test_a_crashing_or_hanging_compile_fails_only_its_own_model(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    package_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_sitecustomize(tmp_path / "faults", monkeypatch, FAULTS)
    config = write_config(
        "linux",
        {
            "good": (SMALL, {}),
            "crashing": (SMALL_Q4, {"model_lib": "crashing_model"}),
            "hanging": (SMALL_Q4, {"model_lib": "hanging_model"}),
        },
    )
    # The good model is compiled first: the short timeout below must not catch it on a busy machine.
    run_package(pytester, config, "-k", "good")
    result = run_package(pytester, config, "--package-compile-timeout=5", "-v", "-rs")
    # failed: two compiles and package::library; skipped: two validates, link, bindings,
    # app-config and the three smoke runs
    failing = {"crashing": "compile", "hanging": "compile"}
    result.assert_outcomes(**expected_outcomes(config, failing=failing))
    result.stdout.fnmatch_lines(["*crashing compile: compile crashed with SIGSEGV*"])
    result.stdout.fnmatch_lines(["*hanging compile: compile timed out after 5 s*"])
    result.stdout.fnmatch_lines(["*::good::compile PASSED*", "*::good::validate PASSED*"])
    result.stdout.fnmatch_lines(["SKIPPED [[]2[]] *: compile failed"])


@pytest.mark.slow
def test_with_xdist_the_outputs_equal_a_run_without_it(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path, tmp_path: Path
) -> None:
    models = {
        "one": (SMALL, {"model_lib": "xdist_one"}),
        "two": (SMALL_Q4, {"model_lib": "xdist_two"}),
        "three": (SMALL, {"model_lib": "xdist_three", "bundle_weight": True}),
    }
    serial = write_config("android", models, folder=tmp_path / "serial")
    parallel = write_config("android", models, folder=tmp_path / "parallel")
    run_package(pytester, serial).assert_outcomes(**expected_outcomes(serial))
    run_package(pytester, parallel, "-n", "2").assert_outcomes(**expected_outcomes(parallel))
    for relative in (
        "lib/libmodel_android.a",
        "bundle/mlc-app-config.json",
        "bundle/three/tensor-cache.json",
    ):
        assert (serial.parent / "dist" / relative).read_bytes() == (
            parallel.parent / "dist" / relative
        ).read_bytes(), relative


@pytest.mark.slow
def test_a_deselected_model_comes_from_the_cache_or_fails_the_package_by_name(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLC_LLM_HOME", str(tmp_path / "own-cache"))
    config = write_config("linux", {"first": (SMALL, {}), "second": (SMALL_Q4, {})})
    result = run_package(pytester, config, "-k", "first")
    result.stdout.fnmatch_lines(["*second: not built in this run and not usable from the cache*"])
    assert not (config.parent / "dist").exists(), "a partial run must not publish"

    second = run_package(pytester, config, "-k", "second")
    second.assert_outcomes(**expected_outcomes(config, selected=["second"]))
    app_config = json.loads((config.parent / "dist" / "bundle" / "mlc-app-config.json").read_text())
    assert [m["model_id"] for m in app_config["model_list"]] == ["first", "second"]


@pytest.mark.slow
def test_the_installed_plugin_runs_from_any_directory_on_a_config_there(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Installs this project for real (a wheel, not editable); its dependencies come from the test
    # environment through a .pth file, so the test does not download gigabytes.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    outer = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "outer-env.pth").write_text("\n".join(outer) + "\n")
    (wheel,) = wheels.glob("pytest_mlc_package-*.whl")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True
    )
    app = tmp_path / "my-app"
    config = write_config(
        "android", {"tiny": (SMALL, {"model_lib": "tiny_llama_demo"})}, folder=app
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()

    def installed_pytest(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(python), "-m", "pytest", "-p", "no:randomly", *args]
        return subprocess.run(command, cwd=workdir, capture_output=True, text=True)

    result = installed_pytest(f"--package-config={config}", "--package-output=out", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workdir / "out" / "lib" / "libmodel_android.a").is_file()
    # the node ids printed are re-runnable from the same directory
    compile_id = next(
        line.split(" ")[0] for line in result.stdout.splitlines() if "::tiny::compile" in line
    )
    rerun = installed_pytest(f"--package-config={config}", "--package-output=out", compile_id)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    # the one compile item, then library, link and app-config passed; bindings skipped
    expected = expected_outcomes(config, selected=["tiny::compile"])
    summary = pytest.RunResult.parse_summary_nouns(rerun.stdout.splitlines()[-1:])
    summary.pop("warnings", None)
    assert summary == {outcome: n for outcome, n in expected.items() if n}, rerun.stdout
    # a config inside this repository, run from elsewhere, passes through the repo's conftest.py
    demo = installed_pytest(
        f"--package-config={REPO / 'configs' / 'demo-linux.json'}", "--collect-only", "-q"
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo-linux.json::tiny-llama-q0f32::compile" in demo.stdout


@pytest.mark.slow
def test_last_failed_reruns_only_the_failed_model_and_then_publishes_everything(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path
) -> None:
    config = write_config("linux", {"steady": (SMALL, {}), "flaky": (SMALL_Q4, {})})
    shard = config.parent / "models" / SMALL_Q4 / "params_shard_0.bin"
    good = shard.read_bytes()
    shard.write_bytes(good[:-10])  # a truncated download
    first = run_package(pytester, config)
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    # Found at fetch, before the weights are used; compile, validate and bundle are skipped.
    first.stdout.fnmatch_lines(["*flaky fetch*params_shard_0.bin has * bytes*"])
    assert not (config.parent / "dist").exists()

    shard.write_bytes(good)
    second = run_package(pytester, config, "--lf", "-v")
    assert second.ret == pytest.ExitCode.OK, second.stdout.str()
    ran = second.stdout.str()
    for step in ("fetch", "compile", "validate", "bundle"):  # the skipped steps are redone too
        assert f"::flaky::{step} PASSED" in ran
    for step in ("fetch", "compile", "validate", "bundle"):  # (smoke covers the whole package)
        assert f"::steady::{step}" not in ran, "--lf must not redo the model that passed"
    app_config = json.loads((config.parent / "dist" / "bundle" / "mlc-app-config.json").read_text())
    assert [m["model_id"] for m in app_config["model_list"]] == ["steady", "flaky"]
    assert (config.parent / "dist" / "bundle" / "steady" / "tensor-cache.json").is_file()


@pytest.mark.slow
def test_a_warm_run_does_not_import_tvm(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    package_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config("android", {"tiny": (SMALL, {"model_lib": "tiny_llama_demo"})})
    run_package(pytester, config).assert_outcomes(**expected_outcomes(config))
    seen = tmp_path / "modules.txt"
    probe = tmp_path / "probe" / "import_probe.py"
    probe.parent.mkdir()
    probe.write_text(
        "import sys\n"
        "def pytest_unconfigure():\n"
        f"    open({str(seen)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(probe.parent))
    result = run_package(pytester, config, "-p", "import_probe")
    result.assert_outcomes(**expected_outcomes(config))
    modules = seen.read_text().splitlines()
    assert "tvm" not in modules and "tvm_ffi" not in modules


@pytest.mark.slow
def test_a_prebuilt_library_is_used_instead_of_compiling(
    pytester: pytest.Pytester,
    write_config: WriteConfig,
    package_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config("linux", {"tiny": (SMALL, {"model_lib": "tiny_llama_prebuilt"})})
    run_package(pytester, config).assert_outcomes(**expected_outcomes(config))
    built = Path(read_report(config)["models"][0]["library_path"])
    prebuilt = config.parent / "libs" / "tiny.tar"
    prebuilt.parent.mkdir()
    prebuilt.write_bytes(built.read_bytes())
    data = json.loads(config.read_text())
    data["model_lib_path_for_prepare_libs"] = {"tiny_llama_prebuilt": "libs/tiny.tar"}
    config.write_text(json.dumps(data))
    monkeypatch.setenv("MLC_JIT_POLICY", "OFF")  # no compile allowed at all
    run_package(pytester, config).assert_outcomes(**expected_outcomes(config))
    model = read_report(config)["models"][0]
    assert model["library_source"] == "prebuilt"
    assert model["compiled_with"] is None  # who built it is not known


def embedded_metadata(archive: Path, model_lib: str) -> dict:
    """The `_metadata` JSON a model library carries in its blob (a constant of the VM code)."""
    for member in objects.read_archive(archive):
        if not member.name.startswith(model_lib) or not member.name.endswith("devc.o"):
            continue
        text = member.data.decode("latin-1")
        anchor = text.find('"context_window_size"')
        start = text.rfind("{", 0, anchor)
        while start >= 0:
            try:
                found, _ = json.JSONDecoder().raw_decode(text, start)
                if "context_window_size" in found:
                    return found
            except json.JSONDecodeError:
                pass
            start = text.rfind("{", 0, start)
    raise AssertionError(f"no metadata for {model_lib} in {archive}")


@pytest.mark.slow
def test_overrides_reach_the_compiled_library(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path
) -> None:
    overrides = {"context_window_size": 96, "prefill_chunk_size": 32, "max_batch_size": 3}
    config = write_config(
        "android",
        {
            "plain": (SMALL_Q4, {"model_lib": "overrides_plain"}),
            "tuned": (SMALL_Q4, {"model_lib": "overrides_tuned", "overrides": overrides}),
        },
    )
    run_package(pytester, config).assert_outcomes(**expected_outcomes(config))
    archive = config.parent / "dist" / "lib" / "libmodel_android.a"
    tuned = embedded_metadata(archive, "overrides_tuned")
    plain = embedded_metadata(archive, "overrides_plain")
    assert {key: tuned[key] for key in overrides} == overrides
    assert plain["context_window_size"] != 96 and plain["prefill_chunk_size"] != 32


@pytest.mark.slow
def test_an_underestimated_vram_budget_warns_with_the_libraries_needs(
    pytester: pytest.Pytester, write_config: WriteConfig, package_env: Path
) -> None:
    config = write_config(
        "linux",
        {
            "tight": (SMALL, {"model_lib": "vram_tight", "estimated_vram_bytes": 1000}),
            "roomy": (SMALL, {"model_lib": "vram_roomy"}),
        },
    )
    result = run_package(pytester, config)
    result.assert_outcomes(**expected_outcomes(config), warnings=1)
    index = json.loads((config.parent / "models" / SMALL / "tensor-cache.json").read_text())
    weights = sum(record["nbytes"] for record in index["records"])
    result.stdout.fnmatch_lines(
        [f"*tight: estimated_vram_bytes is 1,000 but the library needs about *weights {weights:,}*"]
    )
    assert "roomy: estimated_vram_bytes" not in result.stdout.str()
    needs = {m["model_id"]: m["required_vram_bytes"] for m in read_report(config)["models"]}
    assert needs["tight"] == needs["roomy"] > weights
