"""The package has no import cycle: each concern's module can be read (and changed) on its own.

Reads every module's relative imports (also those under TYPE_CHECKING) and looks for a cycle
between modules; a package's ``__init__`` re-exporting its modules does not count as one.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import graphexec

ROOT = pathlib.Path(graphexec.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                dest = sub if sub in mods else target
                if dest in mods and dest != mod and not mod.startswith(dest + "."):
                    edges[mod].add(dest)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(mod: str, stack: list[str]) -> list[str] | None:
        state[mod] = 1
        for dest in sorted(edges[mod]):
            if state.get(dest) == 1:
                return [*stack[stack.index(dest) :], dest]
            if dest not in state:
                found = visit(dest, [*stack, dest])
                if found:
                    return found
        state[mod] = 2
        return None

    for mod in sorted(edges):
        if mod not in state:
            found = visit(mod, [mod])
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    # In a fresh interpreter: CPython 3.11's ast.parse is not safe while other threads (worker
    # threads that earlier tests abandoned) use the compiler (gh-106905).
    found = subprocess.run(
        [sys.executable, __file__],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "graphexec._run.step" in found.stdout  # the walk found the run package


def main() -> None:
    edges = _imports(_modules())
    cycle = _cycle(edges)
    if cycle:
        raise SystemExit("import cycle: " + " -> ".join(cycle))
    print("\n".join(sorted(edges)))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


if __name__ == "__main__":
    main()
