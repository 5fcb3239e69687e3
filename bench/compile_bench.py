"""Compile seconds per model family and device, one child process per compile (as a run does).

    .venv/bin/python bench/compile_bench.py [--devices android iphone linux] [--repeat 1]
        [--models tiny-phi-q4f16_1 ...]

Compiles every demo model in configs/models/ for each device through the same child-process
runner the plugin uses, with no cache, and prints a table of median seconds (TVM import included).
Also reports each device relative to linux in the same run, which is what stays comparable on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from packaging_plugin.compile.runner import run_compile
from packaging_plugin.config.chat_config import build_compile_request, read_chat_config

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "configs" / "models"


def compile_seconds(model_dir: Path, device: str, out: Path) -> float:
    request = build_compile_request(read_chat_config(model_dir), {}, device)
    request["system_lib_prefix"] = "bench_" + model_dir.name.replace("-", "_") + "_"
    started = time.perf_counter()
    run_compile(request, out, timeout=1800)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["android", "iphone", "linux"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--models", nargs="+", help="demo model folders (default: all)")
    args = parser.parse_args()
    models = sorted(p for p in MODELS.iterdir() if (p / "mlc-chat-config.json").is_file())
    if args.models:
        models = [MODELS / name for name in args.models]
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mlc-compile-bench-") as scratch:
        for model in models:
            row = table.setdefault(model.name, {})
            for device in args.devices:
                times = [
                    compile_seconds(model, device, Path(scratch) / f"{model.name}-{device}.tar")
                    for _ in range(args.repeat)
                ]
                row[device] = round(statistics.median(times), 2)
                print(f"{model.name:24} {device:8} {row[device]:6.2f} s", flush=True)
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "compile_bench.json").write_text(json.dumps(table, indent=2) + "\n")
    print()
    print("| model | " + " | ".join(args.devices) + " |")
    print("|---|" + "---|" * len(args.devices))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[d]:.1f}" for d in args.devices) + " |")
    if "linux" in args.devices:
        for device in args.devices:
            ratio = statistics.mean(row[device] / row["linux"] for row in table.values())
            print(f"{device}: {ratio:.2f}x linux")


if __name__ == "__main__":
    main()
