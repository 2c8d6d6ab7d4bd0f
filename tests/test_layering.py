"""Dependencies point one way: node uses consensus and storage; those two never
import node or each other, the consensus core does no I/O and reads no clock,
and only the LevelDB module touches plyvel. Inside node, each room imports only
the rooms below it (docs/architecture.md), and the client SDK stands apart from
the server side. No module is longer than MAX_LINES."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "consensus": {"node", "storage", "trio", "plyvel", "prometheus_client", "time", "random", "secrets", "os"},
    "storage": {"node", "consensus", "trio", "prometheus_client"},
}

# node's rooms (packages) and top-level modules, bottom to top: a room imports only rooms of its rank or below.
RANK = {
    "errors": 0, "version": 0,
    "keys": 1, "config": 1,
    "chain": 2, "client": 2,  # the SDK sits beside chain, for SDK users only
    "ops": 3,
    "disk": 4,
    "txpool": 5,
    "pipeline": 6,
    "p2p": 7,
    "api": 8,
    "server": 9,
    "cli": 10, "bench": 10,
}
SDK_USERS = {"client", "cli", "bench"}
CLIENT_IMPORTS = {"client", "chain", "errors", "keys"}
CHAIN_FORBIDDEN = {"trio", "hypercorn", "prometheus_client", "plyvel", "socket"}
# What a fresh interpreter must not load for `import node.client, node.client.proofs`.
SDK_MUST_NOT_LOAD = (
    "consensus.replica", "trio", "hypercorn", "prometheus_client", "plyvel", "storage", "node.server",
    "node.pipeline", "node.p2p", "node.api", "node.txpool", "node.ops", "node.disk", "node.cli", "node.bench",
)
MAX_LINES = 400


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def imported_modules(path: Path) -> set[str]:
    """Every module named in an import anywhere in the file (TYPE_CHECKING blocks and functions too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, f"{path}: a relative import"
            if node.module == "node":  # `from node import keys` imports the module node.keys
                modules.update(f"node.{alias.name}" for alias in node.names)
            else:
                modules.add(node.module)
    return modules


def room_of_module(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "node" and len(parts) > 1 else None


def room_of_path(path: Path) -> str | None:
    parts = path.relative_to(ROOT / "node").with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def node_imports() -> list[tuple[Path, str, str, str]]:
    """(file, its room, a node module it imports, that module's room) for every import between two rooms."""
    found = []
    for path in sorted((ROOT / "node").rglob("*.py")):
        importer = room_of_path(path)
        for module in imported_modules(path):
            imported = room_of_module(module)
            if importer is not None and imported is not None and imported != importer:
                found.append((path, importer, module, imported))
    return found


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


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


def test_every_room_has_a_rank() -> None:
    rooms = {room_of_path(p) for p in (ROOT / "node").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert rooms - {None} == set(RANK)


def test_chain_imports_no_io_machinery() -> None:
    modules = sorted((ROOT / "node" / "chain").rglob("*.py"))
    assert len(modules) >= 4
    for path in modules:
        assert not imported_roots(path) & CHAIN_FORBIDDEN, path


def test_the_client_imports_nothing_server_side() -> None:
    imported = {room for path, importer, _, room in node_imports() if importer == "client"}
    assert imported, "the scan found no import from node/client"
    assert imported <= CLIENT_IMPORTS, imported - CLIENT_IMPORTS


def test_only_sdk_users_import_the_client() -> None:
    importers = {relative(path) for path, importer, _, room in node_imports() if room == "client"}
    assert importers, "the scan found no import of node.client"
    assert all(room_of_path(ROOT / p) in SDK_USERS for p in importers), importers


def test_no_room_imports_a_room_above_it() -> None:
    upward = {(relative(path), module) for path, importer, module, imported in node_imports()
              if RANK[imported] > RANK[importer]}
    assert not upward, f"upward imports: {sorted(upward)}"


def test_the_sdk_loads_no_server_side_module() -> None:
    code = "import sys, node.client, node.client.proofs; print('\\n'.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    assert "node.client.proofs" in loaded
    bad = {m for m in loaded if any(m == f or m.startswith(f + ".") for f in SDK_MUST_NOT_LOAD)}
    assert not bad, f"server-side modules loaded by the SDK: {sorted(bad)}"


@pytest.mark.parametrize("room", sorted(r for r in RANK if (ROOT / "node" / r / "__init__.py").exists()))
def test_each_room_says_what_it_holds(room: str) -> None:
    init = ROOT / "node" / room / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring and len(docstring.split()) >= 10, f"{init}: say what the room holds and may not do"


def test_no_module_is_over_max_lines() -> None:
    top = [p for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "tests"]
    modules = [path for directory in top for path in directory.rglob("*.py")] + list(ROOT.glob("*.py"))
    assert len(modules) >= 20
    long = {relative(p) for p in modules if len(p.read_bytes().splitlines()) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {sorted(long)}"
