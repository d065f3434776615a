"""No lower layer imports a higher one: the library's objects never reach into the trainer or plots."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adaloss

PACKAGE = Path(adaloss.__file__).parent
LOWER = ("functional", "losses", "metrics", "models", "data", "optim", "executors", "methods", "learners")
HIGHER = ("adaloss.training", "adaloss.plotting", "adaloss.cli")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names, deferred (inside functions) included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = path.relative_to(PACKAGE.parent).with_suffix("").parts[: -node.level]
                base = ".".join(parts)
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            elif node.module:
                found.append((node.lineno, node.module))
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_never_import_training_or_plotting(layer: str) -> None:
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for line, name in _imports(path)
        if name.startswith(HIGHER) or name in ("adaloss.training", "adaloss.plotting")
    ]
    assert not offending, "\n".join(offending)


def test_methods_never_import_their_adapters() -> None:
    """The methods floor: the objects a user holds know nothing of the trainer's plug-in layer."""
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in sorted((PACKAGE / "methods").rglob("*.py"))
        for line, name in _imports(path)
        if name.startswith(("adaloss.learners", "adaloss.training", "adaloss.plotting", "adaloss.cli",
                            "adaloss.lightning"))
    ]
    assert not offending, "\n".join(offending)


def test_the_scan_sees_deferred_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from adaloss.training.trainer import Trainer\n    return Trainer\n")
    assert "adaloss.training.trainer" in [name for _, name in _imports(probe)]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module → the ``adaloss`` modules it imports (deferred and ``TYPE_CHECKING`` imports
    included; a package counts as its ``__init__``, which ``from package import x`` runs)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in _imports(path):
            while imported and imported not in modules:  # `from m import f`: the module m
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_the_package() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
