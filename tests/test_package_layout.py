"""The shape of packaging_plugin's code: no import cycles between its modules, no huge module.

The import graph is read from the source with `ast`, not by importing: every `import` and
`from ... import` naming a module of packaging_plugin counts, wherever it is (inside functions and
`if TYPE_CHECKING:` blocks too), and relative imports are resolved against their package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "packaging_plugin"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

MAX_MODULE_LINES = 500

# Import cycles known today, each as the set of modules it runs through. Empty: there is none.
# A cycle found that is not listed fails the test, and so does a listed one that is gone.
KNOWN_CYCLES: list[frozenset[str]] = []


def module_files(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package in `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(source: str, module: str, is_package: bool, modules: Iterable[str]) -> set[str]:
    """The modules among `modules` that the source of `module` imports.

    `import a.b` imports a.b; `from a.b import c` imports a.b.c where that is a module, and a.b
    where c is a name defined in a.b. A name that is no module imports the longest prefix of it
    that is one. Parent packages, which Python imports first, are not counted.
    """
    known = set(modules)
    package = module if is_package else module.rpartition(".")[0]

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) or None

    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parents, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.append(submodule if submodule in known else base)
    targets = {resolve(name) for name in names}
    return {target for target in targets if target is not None and target != module}


def import_graph(root: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Module -> the modules of the same package that it imports."""
    modules = module_files(root)
    return {
        module: imports_of(
            path.read_text(encoding="utf-8"), module, path.name == "__init__.py", modules
        )
        for module, path in modules.items()
    }


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) for each group of modules that import each other, directly or
    through others (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_shortest_cycle(min(group), group, graph) for group in groups]


def _shortest_cycle(start: str, group: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")


def test_no_module_of_packaging_plugin_imports_another_that_imports_it_back():
    found = find_cycles(import_graph())
    new = [cycle for cycle in found if frozenset(cycle) not in KNOWN_CYCLES]
    gone = [known for known in KNOWN_CYCLES if known not in {frozenset(c) for c in found}]
    assert not new, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in new)
    assert not gone, f"listed in KNOWN_CYCLES but no longer found: {gone}"


def test_the_graph_has_the_imports_of_every_kind_and_the_cycle_search_finds_cycles():
    modules = ["pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]
    source = (
        "import os\n"
        "import pkg.a\n"
        "from pkg import b, some_name\n"
        "def late():\n"
        "    from .c import thing\n"
        "    from .. import a\n"
    )
    assert imports_of(source, "pkg.sub.d", False, modules) == {"pkg", "pkg.a", "pkg.b", "pkg.sub.c"}
    assert imports_of("from . import c", "pkg.sub", True, modules) == {"pkg.sub.c"}
    assert imports_of("from pkg.a.x import y", "pkg.b", False, modules) == {"pkg.a"}

    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []

    real = import_graph()
    # The config checker imports chat_config at its top, and the harness imports the checker.
    assert f"{PACKAGE}.config.chat_config" in real[f"{PACKAGE}.config.model_source"]
    assert f"{PACKAGE}.config.package_config" in real[f"{PACKAGE}.harness.session"]


def test_no_module_of_packaging_plugin_is_over_500_lines():
    lengths = {
        path.relative_to(PACKAGE_DIR.parent).as_posix(): len(path.read_text().splitlines())
        for path in module_files().values()
    }
    long = sorted(
        f"{name} ({count} lines)" for name, count in lengths.items() if count > MAX_MODULE_LINES
    )
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {', '.join(long)}"


# Where TVM may be imported: code that compiles or runs models. The pytest process (config,
# sources, checks, assemble, harness) never loads it.
TVM_MODULES = (
    "packaging_plugin/compile/export.py",
    "packaging_plugin/compile/logits.py",
    "packaging_plugin/compile/pipeline.py",
    "packaging_plugin/compile/sampler.py",
    "packaging_plugin/quantization/layers.py",
    "packaging_plugin/run/model_runtime.py",
    "packaging_plugin/families/*/model.py",
    "packaging_plugin/families/phi3/rope.py",  # phi3's longrope kernel
)


def imports_tvm(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        if any(name == "tvm" or name.startswith("tvm.") for name in names):
            return True
    return False


def test_tvm_is_imported_only_where_models_are_compiled_or_run():
    importing = {
        path.relative_to(PACKAGE_DIR.parent).as_posix()
        for path in module_files().values()
        if imports_tvm(path)
    }
    outside = sorted(
        name for name in importing if not any(Path(name).match(p) for p in TVM_MODULES)
    )
    assert not outside, f"TVM imported outside model code: {', '.join(outside)}"
    assert "packaging_plugin/families/llama/model.py" in importing  # the check sees imports
