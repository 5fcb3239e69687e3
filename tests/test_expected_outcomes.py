"""tests/helpers/outcomes.py against counts worked out by hand, step by step, for the runs the
suite makes (so that the helper cannot drift from what the packaging tests used to spell out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.outcomes import expected_outcomes


def config(device: str, *entries: dict) -> dict:
    return {"device": device, "model_list": [{"model": "m", **entry} for entry in entries]}


def counts(passed: int, failed: int, skipped: int) -> dict[str, int]:
    return {"passed": passed, "failed": failed, "skipped": skipped}


BUNDLED = {"model_id": "tiny", "bundle_weight": True}


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        # fetch, compile, validate, bundle; library, link, app-config, bindings; smoke
        ("linux", counts(4 + 4 + 1, 0, 0)),
        # fetch, compile, validate, kernels, bundle; library, link, app-config; bindings skipped
        ("android", counts(5 + 3, 0, 1)),
        # fetch, compile, validate, bundle; library, link, app-config; bindings skipped
        ("iphone", counts(4 + 3, 0, 1)),
        ("macabi", counts(4 + 3, 0, 1)),
    ],
)
def test_one_bundled_model_on_each_device(device: str, expected: dict[str, int]) -> None:
    assert expected_outcomes(config(device, BUNDLED)) == expected


def test_a_model_not_bundled_has_no_bundle_step_and_bundle_weight_defaults_to_false() -> None:
    entry = {"model_id": "tiny"}
    assert expected_outcomes(config("android", entry)) == counts(4 + 3, 0, 1)
    assert expected_outcomes(config("linux", entry)) == counts(3 + 4 + 1, 0, 0)


def test_models_multiply_the_model_steps_and_the_smokes_only() -> None:
    three = config("linux", *({"model_id": m, "bundle_weight": True} for m in "abc"))
    assert expected_outcomes(three) == counts(4 * 3 + 4 + 3, 0, 0)
    mixed = config(
        "android", {"model_id": "a"}, *({"model_id": m, "bundle_weight": True} for m in "bcd")
    )
    assert expected_outcomes(mixed) == counts(4 + 5 * 3 + 3, 0, 1)


def test_the_config_is_read_from_its_path(tmp_path: Path) -> None:
    path = tmp_path / "mlc-package-config.json"
    path.write_text(json.dumps(config("android", BUNDLED)))
    assert expected_outcomes(path) == expected_outcomes(config("android", BUNDLED))


def test_bindings_built_and_kernels_not_checked() -> None:
    android = config("android", BUNDLED)
    assert expected_outcomes(android, bindings_built=True) == counts(5 + 4, 0, 0)
    assert expected_outcomes(android, kernels_checked=False) == counts(4 + 3, 0, 2)
    # On linux the binding is the linked shared library: there is nothing else to build.
    assert expected_outcomes(config("linux", BUNDLED), bindings_built=True) == expected_outcomes(
        config("linux", BUNDLED)
    )


def test_a_failed_fetch_skips_the_models_other_steps_and_fails_the_package() -> None:
    android = config("android", {"model_id": "ok"}, {"model_id": "missing"}, {"model_id": "gated"})
    # ok: 4 pass; missing, gated: fetch fails, compile, validate, kernels skipped; library
    # fails; link, app-config, bindings skipped.
    found = expected_outcomes(android, failing={"missing": "fetch", "gated": "fetch"})
    assert found == counts(4, 2 + 1, 3 * 2 + 3)


def test_a_failed_compile_skips_what_needs_the_library_but_not_the_bundle() -> None:
    linux = config(
        "linux", *({"model_id": m, "bundle_weight": True} for m in ("good", "crash", "hang"))
    )
    # good: 4 pass; crash, hang: fetch and bundle pass, compile fails, validate skipped;
    # library fails; link, app-config, bindings and the three smokes skipped.
    found = expected_outcomes(linux, failing={"crash": "compile", "hang": "compile"})
    assert found == counts(4 + 2 * 2, 2 + 1, 2 + 3 + 3)


def test_a_failed_kernels_step_fails_the_package_and_a_failed_smoke_fails_alone() -> None:
    android = config("android", BUNDLED)
    # fetch, compile, validate and bundle pass; library fails; link, app-config, bindings skipped
    assert expected_outcomes(android, failing={"tiny": "kernels"}) == counts(4, 2, 3)
    linux = config("linux", BUNDLED, {"model_id": "other", "bundle_weight": True})
    assert expected_outcomes(linux, failing={"tiny": "smoke"}) == counts(4 * 2 + 4 + 1, 1, 0)


def test_only_the_selected_model_steps_count_and_the_package_steps_always_run() -> None:
    linux = config("linux", {"model_id": "first"}, {"model_id": "second", "bundle_weight": True})
    assert expected_outcomes(linux, selected=["second"]) == counts(4 + 4 + 2, 0, 0)
    android = config("android", BUNDLED)
    assert expected_outcomes(android, selected=["tiny::compile"]) == counts(1 + 3, 0, 1)


@pytest.mark.parametrize(
    "arguments",
    [
        {"failing": {"nobody": "fetch"}},
        {"selected": ["nobody::fetch"]},
        {"failing": {"tiny": "kernels"}},  # linux has no kernels step
        {"failing": {"tiny": "fetch"}, "selected": ["tiny::compile"]},
    ],
)
def test_what_it_does_not_work_out_is_refused(arguments: dict) -> None:
    with pytest.raises(ValueError):
        expected_outcomes(config("linux", BUNDLED), **arguments)


def test_smoke_fails_only_on_linux() -> None:
    with pytest.raises(ValueError, match="has no step 'smoke' on android"):
        expected_outcomes(config("android", BUNDLED), failing={"tiny": "smoke"})
