"""The layout of the test suite itself, checked on the source (``ast``), not by running it.

* No module under ``tests/`` imports a test module (``test_*``): shared helpers live in fixtures
  (``conftest.py``), so every test module can run, move or be deleted on its own.
* Every test that starts other processes is marked ``@pytest.mark.slow``: one whose code, or a
  function of its module that it calls, names ``subprocess``, ``torchrun``, ``sys.executable``,
  ``multiprocessing`` or ``Popen`` — in a name, an attribute, a parameter (fixtures named for
  it, like ``torchrun`` or ``train_in_subprocess``) or a one-word string (``kill="subprocess"``);
  prose in strings and comments does not count. CI runs slow tests too (no ``-m`` filter); the
  mark lets a developer deselect them with ``-m "not slow"``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SOURCES = sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)
TEST_MODULES = [p for p in SOURCES if p.name.startswith("test_")]

#: what the code of a test that starts processes names (``\btorchrun``: not ``launched_by_torchrun``)
LAUNCHES = re.compile(r"subprocess|\btorchrun|sys\.executable|multiprocessing|\bPopen\b")
SLOW = re.compile(r"\bmark\.slow\b")


def _rel(path: Path) -> str:
    return str(path.relative_to(TESTS.parent))


def imported_test_modules(tree: ast.AST) -> list[str]:
    """The ``test_*`` modules an import statement of ``tree`` names (``tests.x.test_y``, ``from . import test_y``...)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [n for n in names if any(part.startswith("test_") for part in n.split("."))]
    return sorted(set(found))


def mentions_a_launch(node: ast.AST) -> bool:
    """Whether ``node``'s code names a way of starting processes (see the module docstring)."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            token = n.id
        elif isinstance(n, ast.Attribute):
            token = ast.unparse(n)
        elif isinstance(n, ast.arg):
            token = n.arg
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"[\w.]+", n.value):
            token = n.value
        else:
            continue
        if LAUNCHES.search(token):
            return True
    return False


def _is_slow(decorators: list[ast.expr]) -> bool:
    return any(SLOW.search(ast.unparse(d)) for d in decorators)


def unmarked_launching_tests(tree: ast.Module) -> list[str]:
    """Names of the tests in ``tree`` that start processes but carry no ``slow`` mark."""
    if any(isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
           and SLOW.search(ast.unparse(n.value)) for n in tree.body):
        return []  # the whole module is slow
    helpers = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def calls(node: ast.AST) -> set[str]:
        return {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}

    # module-level functions that start processes, directly or through another one (to a fixed point)
    launching = {name for name, f in helpers.items() if mentions_a_launch(f)}
    while True:
        more = {name for name, f in helpers.items() if name not in launching and calls(f) & launching}
        if not more:
            break
        launching |= more

    tests: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, list[ast.expr]]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            tests.append((node.name, node, node.decorator_list))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    tests.append((f"{node.name}.{item.name}", item, [*node.decorator_list, *item.decorator_list]))
    bad = []
    for name, func, decorators in tests:
        starts = mentions_a_launch(func) or calls(func) & launching
        if starts and not _is_slow(decorators):
            bad.append(name)
    return bad


def test_the_layout_checks_see_the_whole_suite() -> None:
    assert len(TEST_MODULES) > 20
    assert TESTS / "distributed" / "test_data_parallel.py" in TEST_MODULES
    assert Path(__file__).resolve() in TEST_MODULES


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_no_module_imports_a_test_module(path: Path) -> None:
    bad = imported_test_modules(ast.parse(path.read_text(), filename=str(path)))
    assert not bad, (f"{_rel(path)} imports test module(s) {bad}: move what they share into a fixture "
                     f"(conftest.py) or a helper module whose name does not start with test_")


@pytest.mark.parametrize("path", TEST_MODULES, ids=_rel)
def test_tests_that_start_processes_are_marked_slow(path: Path) -> None:
    bad = unmarked_launching_tests(ast.parse(path.read_text(), filename=str(path)))
    assert not bad, f"{_rel(path)}: {bad} start other processes; mark them @pytest.mark.slow"


def test_the_checks_catch_what_they_are_for() -> None:
    # the import this suite once had, and its spellings
    for line in ("from tests.distributed.test_data_parallel import _single",
                 "import tests.distributed.test_data_parallel as tdp",
                 "from tests.distributed import test_data_parallel",
                 "from .test_data_parallel import _torchrun",
                 "from . import test_data_parallel"):
        assert imported_test_modules(ast.parse(line)) != [], line
    for line in ("from tests.distributed.conftest import x", "import testing", "from tests._helpers import z"):
        assert imported_test_modules(ast.parse(line)) == [], line

    source = '''
import subprocess
import pytest

def _launch(args):
    return subprocess.run(args)

def _twice(args):
    return _launch(args), _launch(args)

def test_direct():
    subprocess.run(["true"])

def test_through_a_helper():
    _twice([])

def test_a_fixture(torchrun):
    torchrun([])

def test_child(train_in_subprocess):
    train_in_subprocess([])

@pytest.mark.slow
def test_marked():
    _launch([])

@pytest.mark.slow
@pytest.mark.parametrize("x", [1])
def test_marked_parametrized(x, torchrun):
    torchrun([x])

def test_in_process(kill_and_resume):
    kill_and_resume(None)

def test_mentions_the_check_only():
    """Not under torchrun: no subprocess here."""
    assert not launched_by_torchrun()
    yaml = "method: !!python/object/new:subprocess.Popen [[touch, x]]"

def test_picks_a_mode(kill_and_resume):
    kill_and_resume(None, kill="subprocess")

class TestGroup:
    def test_method(self):
        subprocess.run(["true"])

@pytest.mark.slow
class TestSlowGroup:
    def test_method(self):
        subprocess.run(["true"])
'''
    assert unmarked_launching_tests(ast.parse(source)) == [
        "test_direct", "test_through_a_helper", "test_a_fixture", "test_child", "test_picks_a_mode",
        "TestGroup.test_method"]
    assert unmarked_launching_tests(ast.parse("pytestmark = [pytest.mark.slow]\n" + source)) == []
