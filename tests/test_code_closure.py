"""Cache keys cover the code that made the artifact: the import closure, computed, not listed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packaging_plugin.code_closure import PACKAGE_ROOT, closure_hash, import_closure
from packaging_plugin.compile.cache import compile_code_hash
from packaging_plugin.families import MODEL_MODULES

COMPILE_ENTRIES = ("packaging_plugin.compile.child", *MODEL_MODULES)
CONVERT_ENTRIES = ("packaging_plugin.sources.convert",)


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "packaging_plugin"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def touch(path: Path) -> None:
    path.write_text(path.read_text() + "\n# changed\n")


def test_a_copy_of_the_package_hashes_like_the_package(package_copy: Path) -> None:
    assert closure_hash(COMPILE_ENTRIES, package_copy) == compile_code_hash()
    assert closure_hash(CONVERT_ENTRIES, package_copy) == closure_hash(CONVERT_ENTRIES)


@pytest.mark.parametrize(
    "changed",
    [
        "quantization/layers.py",  # reached only through the families' models
        "families/phi3/rope.py",  # reached through one family's model
        "families/base/config.py",  # the size rules the models read
        "compile/sampler.py",
        "config/devices.py",  # the targets
    ],
)
def test_changing_a_module_the_compile_child_imports_changes_the_compile_key(
    package_copy: Path, changed: str
) -> None:
    before = closure_hash(COMPILE_ENTRIES, package_copy)
    touch(package_copy / changed)
    assert closure_hash(COMPILE_ENTRIES, package_copy) != before


@pytest.mark.parametrize("changed", ["sources/model_files.py", "families/gpt2/mapping.py"])
def test_changing_a_module_the_converter_imports_changes_the_conversion_key(
    package_copy: Path, changed: str
) -> None:
    before = closure_hash(CONVERT_ENTRIES, package_copy)
    touch(package_copy / changed)
    assert closure_hash(CONVERT_ENTRIES, package_copy) != before


@pytest.mark.parametrize(
    ("entries", "unrelated"),
    [
        (COMPILE_ENTRIES, "harness/report.py"),
        (COMPILE_ENTRIES, "assemble/bundle.py"),
        (CONVERT_ENTRIES, "families/llama/model.py"),  # the converter never builds a model
    ],
)
def test_a_module_outside_the_closure_leaves_the_key_alone(
    package_copy: Path, entries: tuple[str, ...], unrelated: str
) -> None:
    before = closure_hash(entries, package_copy)
    touch(package_copy / unrelated)
    assert closure_hash(entries, package_copy) == before


@pytest.mark.slow  # imports TVM in a child
def test_the_closure_holds_every_module_the_compile_child_really_imports() -> None:
    """What a compile child has loaded once it can build any family is inside the closure."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(COMPILE_ENTRIES)!r} + ['packaging_plugin.compile.pipeline']:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()\n"
        "    if n.startswith('packaging_plugin') and getattr(m, '__file__', None))))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
    )
    closure = {str(path) for path in import_closure(COMPILE_ENTRIES)}
    assert {str(Path(f).resolve()) for f in loaded} <= closure
