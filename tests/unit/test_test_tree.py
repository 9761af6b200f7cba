"""The test tree's shape (issue 16): tests import no private name of walstream and no other test
module (fakes live in walstream.testing, shared fixtures in conftest files), and nothing in
walstream imports walstream.testing."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGE = ROOT / "walstream"

#: Modules of the integration tests other tests may import (the broker helpers, the recorder):
#: their owner is moving them into conftest files or walstream.testing.
SHARED = {"conftest", "helpers", "http_recorder", "replication_rig"}

#: Private names tests may import: none (a test needing one means the name is public).
STILL_PRIVATE: set[tuple[str, str, str]] = set()


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, level) of every ``from module import name`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            found += [(node.module or "", alias.name, node.level) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "", 0) for alias in node.names]
    return found


def test_tests_import_no_private_name_of_walstream():
    private = set()
    for path in sorted(TESTS.rglob("*.py")):
        for module, name, level in _imports(path):
            if level == 0 and module.startswith("walstream") and name.startswith("_"):
                private.add((str(path.relative_to(ROOT)), module, name))
    assert private <= STILL_PRIVATE, sorted(private - STILL_PRIVATE)


def test_tests_import_no_other_test_module():
    imported = []
    for path in sorted(TESTS.rglob("*.py")):
        for module, name, level in _imports(path):
            last = module.rsplit(".", 1)[-1] if module else name
            if level == 0 and not module.startswith("tests"):
                continue
            if last in SHARED or (level and not module and name in SHARED):
                continue
            imported.append(f"{path.relative_to(ROOT)}: {'.' * level}{module} {name}")
    assert imported == []


def test_nothing_in_walstream_imports_its_test_fakes():
    users = [
        str(path.relative_to(ROOT))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent.name != "testing"
        and any(module.startswith("walstream.testing") for module, _, _ in _imports(path))
    ]
    assert users == []
