"""storage/ stands alone: it never imports node or consensus, and only the
LevelDB module touches plyvel."""

from __future__ import annotations

import ast
from pathlib import Path

import storage

STORAGE_DIR = Path(storage.__file__).parent


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_storage_never_imports_node_or_consensus() -> None:
    modules = sorted(STORAGE_DIR.rglob("*.py"))
    assert len(modules) >= 4
    for path in modules:
        assert not imported_roots(path) & {"node", "consensus", "trio"}, path


def test_only_the_leveldb_module_imports_plyvel() -> None:
    users = {p.name for p in STORAGE_DIR.rglob("*.py") if "plyvel" in imported_roots(p)}
    assert users == {"leveldb.py"}
