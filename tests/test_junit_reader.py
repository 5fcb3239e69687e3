"""tests/helpers/junit.py and its schema: a report as pytest writes it for a packaging run is
read back; one a CI consumer could not read, or whose counts disagree with its cases, is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema

from tests.helpers.junit import read_junit

# A packaging run's report, shortened: one model's step, one package step, one skip.
REPORT = (
    '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
    '<testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="25.543" '
    'timestamp="2026-12-02T05:36:07.519666+00:00" hostname="vm">'
    '<properties><property name="tiny.model_lib" value="tiny_llama"/>'
    '<property name="package.models" value="1"/></properties>'
    '<testcase classname="app.mlc-package-config.json.tiny" name="fetch" time="0.007"/>'
    '<testcase classname="app.mlc-package-config.json.tiny" name="compile" time="2.5">'
    '<failure message="tiny compile: compile crashed">details</failure></testcase>'
    '<testcase classname="app.mlc-package-config.json.package" name="bindings" time="0.090">'
    '<skipped type="pytest.skip" message="package bindings: not built">where</skipped>'
    "</testcase></testsuite></testsuites>"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "report.xml"
    path.write_text(text)
    return path


def test_a_report_is_read_into_cases_and_properties(tmp_path: Path) -> None:
    report = read_junit(write(tmp_path, REPORT))
    assert [(case.name, case.outcome) for case in report.cases] == [
        ("fetch", "passed"),
        ("compile", "failure"),
        ("bindings", "skipped"),
    ]
    assert report.cases[1].message == "tiny compile: compile crashed"
    assert report.cases[2].classname == "app.mlc-package-config.json.package"
    assert report.properties == {"tiny.model_lib": "tiny_llama", "package.models": "1"}
    assert report.outcomes() == {"passed": 1, "failed": 1, "skipped": 1}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (' classname="app.mlc-package-config.json.tiny" name="fetch"', ' name="fetch"'),
        ('name="fetch" ', 'name="" '),
        (' tests="3"', ""),
        (' tests="3"', ' tests="three"'),
        ('time="0.007"', 'time="-1"'),
        ('<property name="package.models" value="1"/>', '<property name="package.models"/>'),
        ("<testsuite ", '<testsuite file="x.py" '),  # an attribute no consumer expects
        ('time="0.007"/>', 'time="0.007"><outcome/></testcase>'),
        ("<testsuite ", "<testsuite><testcase/></testsuite><testsuite "),
    ],
)
def test_a_report_outside_the_schema_is_refused(tmp_path: Path, old: str, new: str) -> None:
    assert old in REPORT
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        read_junit(write(tmp_path, REPORT.replace(old, new, 1)))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('failures="1"', 'failures="0"'),
        ('skipped="1"', 'skipped="2"'),
        ('tests="3"', 'tests="4"'),
        (
            '<property name="package.models" value="1"/>',
            '<property name="tiny.model_lib" value="other"/>',
        ),
    ],
)
def test_counts_that_disagree_with_the_cases_or_a_property_twice_are_refused(
    tmp_path: Path, old: str, new: str
) -> None:
    with pytest.raises(AssertionError):
        read_junit(write(tmp_path, REPORT.replace(old, new, 1)))
