"""The suite's layout: test modules share code through tests/helpers, never by importing one
another or conftest.py (pytest gives a test its fixtures by name; importing a test module runs
its collection twice and ties the two files together)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Every Python file of the suite: test modules, conftest.py and the helpers.
SUITE_FILES = sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)


def _names_a_test_module(dotted: str) -> bool:
    """`tests.test_x`, `tests.conftest`, or `test_x` / `conftest` imported as top-level names."""
    parts = dotted.split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    return bool(parts) and (parts[0] == "conftest" or parts[0].startswith("test_"))


def imports_of_test_modules(source: str, package: str = "tests") -> list[tuple[int, str]]:
    """(line, module) of each import in `source` that names a test module or conftest.py.

    `package` is the dotted package of the file, against which relative imports resolve."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from tests import test_x` imports a module under the name of a member.
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            if _names_a_test_module(name):
                found.append((node.lineno, name))
                break
    return found


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda path: str(path.relative_to(TESTS)))
def test_no_file_of_the_suite_imports_a_test_module_or_conftest(path: Path) -> None:
    package = ".".join(path.parent.relative_to(REPO).parts)
    found = imports_of_test_modules(path.read_text(), package)
    where = path.relative_to(REPO)
    assert not found, "\n".join(
        f"{where}:{line} imports {name}: what test modules share belongs in tests/helpers"
        for line, name in found
    )


def test_the_test_modules_are_all_checked() -> None:
    checked = {path.name for path in SUITE_FILES}
    assert {"conftest.py", "test_plugin.py", "test_suite_layout.py"} <= checked
    assert any(path.parent.name == "helpers" for path in SUITE_FILES)


@pytest.mark.parametrize(
    "source",
    [
        "import tests.test_plugin",
        "from tests.test_plugin import SMALL",
        "from tests import test_plugin",
        "from tests.conftest import REPO",
        "from tests import conftest",
        "import conftest",
        "import test_plugin",
        "from .test_plugin import SMALL",
        "from . import conftest",
        "def f():\n    from tests.test_compiler import compile_request",
        "importlib.import_module('tests.test_validation')",
        "__import__('tests.conftest')",
    ],
)
def test_the_check_finds_each_way_of_importing_a_test_module(source: str) -> None:
    assert imports_of_test_modules(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from tests.helpers.packaging import SMALL, run_package",
        "from tests.helpers import runtime",
        "from .helpers import paths",
        "import pytest",
        "from packaging_plugin.checks import objects",
        "from packaging_plugin.x import test_something",
        "importlib.import_module('tests.helpers.hf_hub')",
    ],
)
def test_the_check_lets_helpers_and_other_packages_be_imported(source: str) -> None:
    assert imports_of_test_modules(source) == []
