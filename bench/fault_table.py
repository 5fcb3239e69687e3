"""The fault-injection table of docs/reliability.md: run the fault suite and tabulate it.

    .venv/bin/python bench/fault_table.py [--seed 2026] [-n 2]

Runs tests/test_kill_points.py (a SIGKILL at each point of a packaging run) and the other fault
tests (concurrent runs, a full disk, unusable folders, damaged cache entries, SIGTERM), then
prints one row per kill point (the delay drawn, the temporaries the killed run left, and the
bytes of the output that changed) and one per other fault, with the totals. Another seed draws
other delays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KILL_SUITE = "tests/test_kill_points.py"
OTHER_FAULTS = [
    "tests/test_concurrent_runs.py",
    "tests/test_package_faults.py",
    "tests/test_output_folder.py",
    "tests/test_cache_integrity.py",
    "tests/test_child_lifetime.py",
]


def run_suite(seed: int, workers: str, rows_file: Path, junit: Path) -> int:
    present = [name for name in OTHER_FAULTS if (REPO / name).is_file()]
    env = {**os.environ, "MLC_FAULT_SEED": str(seed), "FAULT_TABLE_FILE": str(rows_file)}
    command = [sys.executable, "-m", "pytest", KILL_SUITE, *present, "-n", workers]
    command += ["-p", "no:randomly", f"--junitxml={junit}", "-q"]
    return subprocess.run(command, cwd=REPO, env=env).returncode


def outcomes(junit: Path, *, kills: bool) -> list[tuple[str, str]]:
    """(test name, outcome) of the kill-point cases, or of the other fault tests."""
    rows = []
    for case in ElementTree.parse(junit).iter("testcase"):
        if ("test_kill_points" in case.get("classname", "")) != kills:
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        outcome = "skipped" if case.find("skipped") is not None else "failed" if failed else "ok"
        rows.append((case.get("name", "?"), outcome))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("-n", dest="workers", default="2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows_file, junit = Path(work) / "rows.jsonl", Path(work) / "faults.xml"
        status = run_suite(args.seed, args.workers, rows_file, junit)
        kills = [json.loads(line) for line in rows_file.read_text().splitlines()]
        kill_cases, others = outcomes(junit, kills=True), outcomes(junit, kills=False)
    print(f"\nseed {args.seed}; pytest exit status {status}\n")
    print("| SIGKILL point | delay s | temporaries left | removed by the next run | bytes lost |")
    print("|---|---|---|---|---|")
    for row in sorted(kills, key=lambda r: r["point"]):
        print(f"| {row['point']} | {row['delay']} | {row['litter']} | {row['swept']} | "
              f"{row['bytes_lost']} |")  # fmt: skip
    print("\n| other fault test | outcome |\n|---|---|")
    for name, outcome in others:
        print(f"| {name} | {outcome} |")
    cases = kill_cases + others
    survived = sum(outcome == "ok" for _, outcome in cases)
    lost = sum(row["bytes_lost"] for row in kills)
    print(f"\nfaults injected: {len(cases)}, survived: {survived}, bytes lost: {lost}")


if __name__ == "__main__":
    main()
