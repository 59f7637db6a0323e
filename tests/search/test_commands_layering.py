"""Commands are the top layer: no command module imports another, and no library module imports a
command (the shared code lives in library modules such as ``search.arch``, ``search.training_job``
and ``search.pipeline``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = "search.commands"
LIBRARY = ("search_spaces", "evaluators", "search")
ENTRY_POINTS = {ROOT / "search" / "cli.py", ROOT / "search" / "__main__.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, at module level or inside functions, relative
    imports resolved against ``module``; ``from pkg import name`` gives ``pkg.name`` (maybe a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def imports_of(path: Path) -> list[tuple[int, str]]:
    return imported_modules(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def is_command(name: str) -> bool:
    return name == COMMANDS or name.startswith(COMMANDS + ".")


def command_modules() -> list[Path]:
    return sorted((ROOT / "search" / "commands").glob("*.py"))


def library_modules() -> list[Path]:
    commands_dir = ROOT / "search" / "commands"
    return sorted(path for package in LIBRARY for path in (ROOT / package).rglob("*.py")
                  if commands_dir not in path.parents and path not in ENTRY_POINTS)


@pytest.mark.parametrize("source, module, expected", [
    ("from search.commands.show import resolve_arch\n", "search.commands.export",
     "search.commands.show.resolve_arch"),
    ("def f():\n    from search.commands import train\n", "search.commands.reproduce",
     "search.commands.train"),
    ("def f():\n    import search.commands.search as s\n", "search.commands.reproduce",
     "search.commands.search"),
    ("from .show import resolve_arch\n", "search.commands.measure", "search.commands.show.resolve_arch"),
    ("from .commands import show\n", "search.pipeline", "search.commands.show"),
    ("importlib.import_module('search.commands.show')\n", "search.commands.x", "search.commands.show"),
])
def test_every_kind_of_import_is_seen(source, module, expected):
    assert [name for _, name in imported_modules(source, module)] == [expected]


def test_the_modules_are_found():
    names = {path.stem for path in command_modules()}
    assert {"export", "measure", "refine", "reproduce", "search", "show", "train"} <= names
    library = {module_name(path) for path in library_modules()}
    assert {"search.pipeline", "search.arch", "search.training_job", "evaluators.cost"} <= library
    assert not any(is_command(name) or name == "search.cli" for name in library)


def test_no_command_imports_another_command():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in command_modules()
                 for line, name in imports_of(path) if is_command(name)]
    assert offenders == [], "commands share code through library modules:\n" + "\n".join(offenders)


def test_no_library_module_imports_a_command():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in library_modules()
                 for line, name in imports_of(path) if is_command(name)]
    assert offenders == [], "library modules never import search.commands:\n" + "\n".join(offenders)
