"""Read a packaging run's JUnit XML as a CI consumer does, checking what such a consumer relies
on: the file is valid against tests/helpers/junit.xsd (the project's own description of the
report), and each suite's counts agree with its test cases."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import xmlschema

SCHEMA = Path(__file__).with_name("junit.xsd")
RESULTS = ("failure", "error", "skipped")  # a case with none of them passed


@dataclass(frozen=True)
class Case:
    classname: str
    name: str
    outcome: str  # passed | failure | error | skipped
    message: str | None


@dataclass(frozen=True)
class Report:
    cases: list[Case]
    properties: dict[str, str]  # the suite's properties, by name

    def outcomes(self) -> dict[str, int]:
        """Counts in pytest's words (`RunResult.assert_outcomes`), errors left out when none."""
        words = {"passed": "passed", "failure": "failed", "skipped": "skipped", "error": "errors"}
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for case in self.cases:
            counts[words[case.outcome]] = counts.get(words[case.outcome], 0) + 1
        return counts


def read_junit(path: Path) -> Report:
    """The one suite of a pytest JUnit file, validated and checked for consistency."""
    xmlschema.XMLSchema(str(SCHEMA)).validate(str(path))
    root = ET.parse(path).getroot()
    (suite,) = root.findall("testsuite")
    cases = []
    for element in suite.findall("testcase"):
        found = [child for child in element if child.tag in RESULTS]
        tags = {child.tag for child in found}
        # pytest writes an error beside a failure (a teardown that broke too), nothing else twice
        assert len(found) == len(tags) and tags != {"skipped", "failure"}, ET.tostring(element)
        first = found[0] if found else None
        cases.append(
            Case(
                element.attrib["classname"],
                element.attrib["name"],
                "passed" if first is None else first.tag,
                None if first is None else first.get("message"),
            )
        )
    counted = {
        "tests": len(cases),
        "failures": sum(1 for e in suite.iter("testcase") if e.find("failure") is not None),
        "errors": sum(1 for e in suite.iter("testcase") if e.find("error") is not None),
        "skipped": sum(1 for e in suite.iter("testcase") if e.find("skipped") is not None),
    }
    stated = {name: int(suite.attrib[name]) for name in counted}
    assert stated == counted, f"the suite's counts {stated} are not its cases' {counted}"
    properties: dict[str, str] = {}
    for element in suite.findall("properties/property"):
        name = element.attrib["name"]
        assert name not in properties, f"suite property {name} is written twice"
        properties[name] = element.attrib["value"]
    return Report(cases, properties)
