"""The import architecture, checked by walking the code rather than by inspection.

Every ``import`` of every module of ours counts, at the top of a file or inside a function: a
function-level import hides a loop from Python but not from the design. Rules:

1. no import cycles between our modules;
2. ``screening/core`` imports nothing of ours outside the core;
3. the adapters and features ``firmware/``, ``voice/``, ``blocklist/`` import nothing of
   ``screening`` except ``screening.core``;
4. nothing outside ``screening/cli/`` imports the command line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("screening", "firmware", "voice", "blocklist", "deploy")
CORE = "screening.core"
CORE_ONLY = ("firmware", "voice", "blocklist")



def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def our_modules() -> dict[str, Path]:
    """Every module of ours by dotted name (packages by their ``__init__``)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if all((parent / "__init__.py").exists() for parent in path.parents if parent != ROOT
                   and ROOT in parent.parents):
                modules[_module_name(path)] = path
    return modules


def _imported(name: str, path: Path) -> Iterator[str]:
    """The dotted names a module imports, anywhere in its body; ``from a import b`` yields ``a.b``
    when that is a module of ours, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in our_modules() else base


def _ours(target: str) -> str | None:
    """The module of ours a dotted import name lands in (``a.b.C`` → ``a.b``), None if not ours."""
    modules = our_modules()
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _with_packages(importer: str, target: str) -> Iterator[str]:
    """``target`` and the packages Python runs on the way to it (``a.b.c`` runs ``a`` and ``a.b``),
    except the importer's own packages, which are already running."""
    parts = target.split(".")
    for depth in range(1, len(parts) + 1):
        module = ".".join(parts[:depth])
        if module == target or not _in(importer, module):
            yield module


@cache
def graph() -> dict[str, frozenset[str]]:
    edges: dict[str, frozenset[str]] = {}
    for name, path in our_modules().items():
        targets = {module for t in _imported(name, path) if (ours := _ours(t)) is not None
                   for module in _with_packages(name, ours)}
        edges[name] = frozenset(t for t in targets if t != name)
    return edges


def _cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_our_modules() -> None:
    edges = graph()
    assert {"screening.cli", "screening.cli.common", "screening.core.model", "firmware.modem_line"} <= set(edges)
    assert "screening.core.model" in edges["screening.core.rules"]
    # Importing a module runs its packages: from outside, the CLI's bottom brings the CLI root with it.
    assert list(_with_packages("screening.runner", "screening.cli.common")) == ["screening.cli", "screening.cli.common"]
    assert list(_with_packages("screening.cli.run", "screening.cli.common")) == ["screening.cli.common"]


def test_no_import_cycles() -> None:
    cycles = _cycles(graph())
    report = "\n".join(" <-> ".join(str(our_modules()[m].relative_to(ROOT)) for m in c) for c in cycles)
    assert not cycles, f"import cycles between our modules:\n{report}"


def test_the_core_imports_nothing_of_ours_outside_the_core() -> None:
    wrong = sorted((name, target) for name, targets in graph().items() if _in(name, CORE)
                   for target in targets if not _in(target, CORE))
    assert not wrong, f"screening.core must import only itself: {wrong}"


def test_adapters_and_features_take_only_the_core_from_screening() -> None:
    # Reaching the core runs screening/__init__.py on the way: fine while it imports nothing.
    assert not graph()["screening"], "screening/__init__.py must import nothing"
    wrong = {(name, target) for name, targets in graph().items()
             if any(_in(name, package) for package in CORE_ONLY)
             for target in targets if _in(target, "screening") and not _in(target, CORE) and target != "screening"}
    assert not wrong, f"import only screening.core from screening: {sorted(wrong)}"


def test_only_the_cli_imports_the_cli() -> None:
    """The command line is a leaf: features and the composition root never import any of it."""
    wrong = sorted((name, target) for name, targets in graph().items() if not _in(name, "screening.cli")
                   for target in targets if _in(target, "screening.cli"))
    assert not wrong, f"only screening/cli/ may import screening.cli: {wrong}"
