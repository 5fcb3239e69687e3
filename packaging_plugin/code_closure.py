"""Which of this package's modules a piece of work runs, found from the imports themselves.

The cache keys of compiled libraries and converted checkpoints hash the code that made them: a
version number does not change under an editable install, and a stale library after an upgrade is a
known trap. Listing that code by hand goes stale the day a new module joins; instead the set is
computed here, by reading every `import` (top-level or inside a function) with `ast`, starting from
the modules the work enters by.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "packaging_plugin"
PACKAGE_ROOT = Path(__file__).resolve().parent
# CPython 3.11's parser is not safe to run from two threads at once ("AST constructor recursion
# depth mismatch", seen when several compile requests of one process hash their code together).
_PARSE_LOCK = threading.Lock()


def module_file(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The file of `packaging_plugin.<...>` under `root` (a package's `__init__.py`), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """This package's modules that `path` (the module `module`) imports, anywhere in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    source = path.read_text(encoding="utf-8")
    with _PARSE_LOCK:
        tree = ast.parse(source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import name` imports the submodule pkg.name when there is one.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def import_closure(entry_modules: Iterable[str], root: Path = PACKAGE_ROOT) -> list[Path]:
    """Every file of this package that importing `entry_modules` runs, sorted."""
    seen: dict[str, Path] = {}
    pending = [parent for entry in entry_modules for parent in _with_parents(entry)]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        path = module_file(module, root)
        if path is None:
            continue  # a name imported from a module, not a module
        seen[module] = path
        for imported in _imported_modules(path, module):
            pending.extend(_with_parents(imported))
    return sorted(set(seen.values()))


def closure_hash(entry_modules: tuple[str, ...], root: Path = PACKAGE_ROOT) -> str:
    """A sha256 of the sources in the import closure of `entry_modules` (paths and contents)."""
    digest = hashlib.sha256()
    for path in import_closure(entry_modules, root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


_HASH_LOCK = threading.Lock()


@functools.cache
def _installed_closure_hash(entry_modules: tuple[str, ...]) -> str:
    return closure_hash(entry_modules, PACKAGE_ROOT)


def installed_closure_hash(entry_modules: tuple[str, ...]) -> str:
    """`closure_hash` of this installed package, computed once per process (threads wait for
    the first)."""
    with _HASH_LOCK:
        return _installed_closure_hash(entry_modules)
