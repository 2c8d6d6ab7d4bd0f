"""Dependencies point one way: node uses consensus and storage; those two never
import node or each other, the consensus core does no I/O and reads no clock,
and only the LevelDB module touches plyvel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "consensus": {"node", "storage", "trio", "plyvel", "prometheus_client", "time", "random", "secrets", "os"},
    "storage": {"node", "consensus", "trio", "prometheus_client"},
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_its_layer(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert len(modules) >= 4
    for path in modules:
        assert not imported_roots(path) & FORBIDDEN[package], path


def test_only_the_leveldb_module_imports_plyvel() -> None:
    modules = [p for package in ("node", "consensus", "storage") for p in (ROOT / package).rglob("*.py")]
    users = {p.relative_to(ROOT).as_posix() for p in modules if "plyvel" in imported_roots(p)}
    assert users == {"storage/leveldb.py"}
