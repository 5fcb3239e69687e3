"""The OpenCL kernel check: one translation unit of every kernel vs one per kernel, and a warm run.

    .venv/bin/python bench/kernels_bench.py [--report dist/package-report.json] [--repeat 3]

Takes every model library of an android package's report (package the android demo first:
`.venv/bin/pytest --package-config=configs/demo-android.json -n auto`) and, side by side in one
run (medians of --repeat rounds, summed over the libraries):
  together  : every kernel of a library in one clang run, as one translation unit (what a pass
              costs)
  one by one: every kernel its own translation unit, in one clang run (what the runtime does, and
              what the check falls back to where the first fails)
  recorded  : check_kernels with the record a first pass left (a warm run)
Results go to bench/results/kernels_bench.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from timing import median_seconds  # noqa: E402  (bench/, beside this script)

from packaging_plugin.checks import library_contents, objects, opencl_kernels  # noqa: E402
from packaging_plugin.config.devices import DEVICES  # noqa: E402


def library_kernels(report: Path) -> list[list[opencl_kernels.Kernel]]:
    data = json.loads(report.read_text())
    if data["device"] != "android":
        raise SystemExit(f"{report}: an android package's report is needed, not {data['device']}")
    found = []
    for model in data["models"]:
        members = objects.read_library_tar(model["library_path"])
        contents = library_contents.read_library_contents(
            members, model["model_lib"], DEVICES["android"]
        )
        found.append(opencl_kernels.kernels_of(contents.kernel_payload, model["model_id"]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=REPO / "dist" / "package-report.json")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    libraries = library_kernels(args.report)
    found = opencl_kernels.opencl_compiler()
    if isinstance(found, str):
        raise SystemExit(found)
    clang, version = found

    def together() -> None:
        for kernels in libraries:
            assert opencl_kernels.compiles_together(clang, kernels)

    def one_by_one() -> None:
        for kernels in libraries:
            assert not opencl_kernels.compile_one_by_one(clang, kernels)

    with tempfile.TemporaryDirectory(prefix="kernels-bench-") as records:
        for kernels in libraries:
            opencl_kernels.check_kernels(kernels, Path(records))

        def recorded() -> None:
            for kernels in libraries:
                assert opencl_kernels.check_kernels(kernels, Path(records)).cached

        seconds = {
            "together": median_seconds(together, args.repeat),
            "one by one": median_seconds(one_by_one, args.repeat),
            "recorded": median_seconds(recorded, args.repeat),
        }
    total_kernels = sum(len(k) for k in libraries)
    result = {
        "compiler": version,
        "libraries": len(libraries),
        "kernels": total_kernels,
        "source_mib": round(sum(len(k.source) for ks in libraries for k in ks) / 2**20, 1),
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "one_by_one_over_together": round(seconds["one by one"] / seconds["together"], 2),
        "recorded_over_together": round(seconds["recorded"] / seconds["together"], 4),
    }
    out = REPO / "bench" / "results" / "kernels_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
