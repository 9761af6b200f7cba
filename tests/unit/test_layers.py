"""The package's layers, read from its imports (issue 16): pure decisions in ``core/`` import no
I/O framework, the worker's stages (``agents/``) are imported only by the worker's wiring and the
test fakes, and no module outgrows what one reader holds in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "walstream"

#: the modules allowed to import walstream.agents from outside it: the worker's wiring (it builds
#: the stages), the app (a type only), and walstream.testing (fakes typed to the stages' Protocols)
AGENTS_IMPORTERS = ("worker.py", "app.py", "testing/")

#: STYLE.md's "about 400 lines" a module, with a margin for a docstring's growth
MODULE_LINES_MAX = 450

FRAMEWORKS = ("faust", "mode", "aiokafka", "aiohttp")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _where(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_nothing_outside_the_worker_imports_its_stages():
    for path in _modules():
        where = _where(path)
        if where.startswith("agents/") or where.startswith(AGENTS_IMPORTERS):
            continue
        stages = sorted(n for n in _imports(path) if n.split(".")[:2] == ["walstream", "agents"])
        assert not stages, f"{where} imports the worker's stages {stages}"


def test_core_imports_no_io_framework():
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        frameworks = sorted(n for n in _imports(path) if n.split(".")[0] in FRAMEWORKS)
        assert not frameworks, f"core/{_where(path)} imports {frameworks}"


@pytest.mark.parametrize("path", _modules(), ids=_where)
def test_a_module_stays_near_the_size_one_reader_holds(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MODULE_LINES_MAX, f"{_where(path)} has {lines} lines (> {MODULE_LINES_MAX})"
