"""No lower layer imports a higher one: the library's objects never reach into the trainer or plots."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adaloss

PACKAGE = Path(adaloss.__file__).parent
LOWER = ("functional", "losses", "metrics", "models", "data", "learners")
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


def test_the_scan_sees_deferred_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from adaloss.training.trainer import Trainer\n    return Trainer\n")
    assert "adaloss.training.trainer" in [name for _, name in _imports(probe)]
