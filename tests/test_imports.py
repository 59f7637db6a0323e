"""The import structure of the three packages: no cycles (hidden by a function-local import or not),
no function-local imports of project modules where cycles used to hide, and no upward imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "evaluators", "search")  # lowest layer first
NO_LOCAL_IMPORTS = ("search_spaces", "evaluators.latency")  # where two cycles were hidden by local imports


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported_names(node: ast.Import | ast.ImportFrom, module: str, path: Path) -> list[str]:
    """What ``node`` may import: each module named, and for ``from a import b`` also ``a.b``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def project_imports(module: str) -> Iterator[tuple[str, int, bool]]:
    """``(imported project module, line, inside a function)`` for every import statement of
    ``module`` that runs (those under ``if TYPE_CHECKING:`` never do)."""
    path = MODULES[module]

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in imported_names(child, module, path):
                    if name in MODULES and name != module:
                        yield name, child.lineno, in_function
            elif not (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)):
                nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                yield from visit(child, in_function or nested)

    yield from visit(ast.parse(path.read_text(), filename=str(path)), False)


def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported module: where (``file:line``, marked when inside a function)}."""
    graph: dict[str, dict[str, str]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for name, line, in_function in project_imports(module):
            where = f"{path.relative_to(ROOT)}:{line}" + (" (in a function)" if in_function else "")
            edges.setdefault(name, where)
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle as ``a -> b (where)`` steps, or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in graph:
        if start in state:
            continue
        path, stack = [start], [iter(graph[start])]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                loop = path[path.index(nxt):] + [nxt]
                return [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(loop, loop[1:])]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph[nxt]))
    return None


def test_the_scan_sees_every_package_and_their_imports():
    graph = import_graph()
    assert {"search_spaces.spec", "evaluators.latency.table", "search.cli"} <= set(graph)
    assert "search_spaces.spec" in graph["search_spaces.blockstring"]
    assert "evaluators.latency.table" in graph["evaluators.latency.csv_io"]


def test_find_cycle_reports_a_cycle_hidden_in_a_function():
    graph = {"a": {"b": "a.py:3"}, "b": {"c": "b.py:4"}, "c": {"a": "c.py:9 (in a function)"}, "d": {}}
    assert find_cycle(graph) == ["a -> b (a.py:3)", "b -> c (b.py:4)", "c -> a (c.py:9 (in a function))"]
    assert find_cycle({"a": {"b": "a.py:1"}, "b": {}}) is None


def test_project_imports_form_no_cycle_even_counting_function_local_imports():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + "; ".join(cycle or [])


@pytest.mark.parametrize("package", NO_LOCAL_IMPORTS)
def test_no_function_local_import_of_a_project_module(package):
    local = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {name}"
        for module in MODULES
        if module == package or module.startswith(package + ".")
        for name, line, in_function in project_imports(module)
        if in_function
    ]
    assert not local, "function-local imports (import at the top of the module): " + "; ".join(local)


def test_no_package_imports_a_higher_layer():
    upward = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {name}"
        for module in MODULES
        for name, line, _ in project_imports(module)
        if PACKAGES.index(name.split(".")[0]) > PACKAGES.index(module.split(".")[0])
    ]
    assert not upward, "search_spaces <- evaluators <- search: " + "; ".join(upward)
