"""The block archive: export to hash-linked segments, the offline check against the genesis (following
validator-set changes), and every kind of damage refused with the first bad height."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from node.chain.ledger import Ledger
from node.chain.tx import sign_tx
from node.disk.archive import MANIFEST, ArchiveError, export, load_manifest, segment_name
from node.disk.archive_check import verify_archive
from tests.shell.membership_chain import Governed, change, commit, governed, pub
from tests.shell.membership_chain import grow as grow_empty

HEIGHTS = 12


def _chain() -> tuple[Governed, Ledger]:
    """Blocks with kv puts, and a validator added (in force from 4) so that certificates change hands."""
    g = governed(addresses=[f"127.0.0.1:{29400 + i}" for i in range(4)])
    ledger = g.ledger()
    change(g, ledger, {"kind": "add_validator", "name": "v4", "pubkey": pub(g.newcomer()), "address": "127.0.0.1:1"})
    for i in range(HEIGHTS - 1):
        commit(g, ledger, [sign_tx(g.admin, g.chain_id, "kv", "put", {"key": f"k{i}", "value": b"v"}, 1000 + i)])
    assert ledger.height == HEIGHTS
    return g, ledger


G, LEDGER = _chain()


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    directory = tmp_path / "archive"
    assert export(LEDGER.store, G.genesis, directory, None, None, segment_blocks=5) == (1, HEIGHTS)
    return directory


def test_an_exported_chain_verifies(archive: Path) -> None:
    manifest = load_manifest(archive)
    assert manifest is not None
    assert [(s.first, s.last) for s in manifest.segments] == [(1, 5), (6, 10), (11, 12)]
    assert verify_archive(archive, G.genesis) == (HEIGHTS, None)


def test_export_appends_from_the_next_height_and_refuses_a_gap(tmp_path: Path) -> None:
    directory = tmp_path / "a"
    export(LEDGER.store, G.genesis, directory, 1, 7, segment_blocks=5)
    with pytest.raises(ArchiveError):
        export(LEDGER.store, G.genesis, directory, 9, None)
    assert export(LEDGER.store, G.genesis, directory, None, None) == (8, HEIGHTS)
    assert verify_archive(directory, G.genesis) == (HEIGHTS, None)


def test_another_genesis_is_refused(archive: Path) -> None:
    other = governed()
    verified, fault = verify_archive(archive, other.genesis)
    assert verified == 0 and fault is not None


def test_a_partial_archive_cannot_be_verified_without_a_trusted_header(tmp_path: Path) -> None:
    directory = tmp_path / "partial"
    export(LEDGER.store, G.genesis, directory, 3, None)
    with pytest.raises(ArchiveError, match="trusted header"):
        verify_archive(directory, G.genesis)


def _segment(archive: Path, first: int, last: int) -> Path:
    return archive / segment_name(first, last)


def _flip(offset: int) -> Callable[[Path], None]:
    def damage(archive: Path) -> None:
        path = _segment(archive, 6, 10)
        data = bytearray(path.read_bytes())
        data[offset % len(data)] ^= 0x01
        path.write_bytes(bytes(data))
    return damage


def _truncate(archive: Path) -> None:
    path = _segment(archive, 6, 10)
    path.write_bytes(path.read_bytes()[:-40])


def _append(archive: Path) -> None:
    path = _segment(archive, 6, 10)
    path.write_bytes(path.read_bytes() + b"\x00\x00\x00\x01\x90")


def _remove(archive: Path) -> None:
    _segment(archive, 6, 10).unlink()


def _drop_from_manifest(archive: Path) -> None:
    obj = json.loads((archive / MANIFEST).read_text())
    del obj["segments"][1]
    (archive / MANIFEST).write_text(json.dumps(obj))


def _reorder(archive: Path) -> None:
    obj = json.loads((archive / MANIFEST).read_text())
    obj["segments"][0], obj["segments"][1] = obj["segments"][1], obj["segments"][0]
    (archive / MANIFEST).write_text(json.dumps(obj))


def _swap_contents(archive: Path) -> None:
    """The files swapped under their names: each one's header names other heights."""
    a, b = _segment(archive, 1, 5), _segment(archive, 6, 10)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


DAMAGE = {  # the damage, and the heights the first fault may be at
    "flipped byte early in a segment": (_flip(60), 6, 6),
    "flipped byte mid-segment": (_flip(900), 6, 10),
    "flipped last byte": (_flip(-1), 10, 10),
    "truncated segment": (_truncate, 10, 10),
    "bytes appended": (_append, 10, 10),
    "missing segment file": (_remove, 6, 6),
    "segment dropped from the manifest": (_drop_from_manifest, 6, 6),
    "segments reordered": (_reorder, 1, 1),
    "segment files swapped": (_swap_contents, 1, 1),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_every_damage_is_refused_with_the_first_bad_height(archive: Path, name: str) -> None:
    damage, low, high = DAMAGE[name]
    damage(archive)
    verified, fault = verify_archive(archive, G.genesis)
    assert fault is not None, name
    assert low <= fault.height <= high and verified <= fault.height, (name, fault)


def test_every_single_byte_flip_of_a_segment_is_refused(tmp_path: Path, archive: Path) -> None:
    pristine = _segment(archive, 11, 12).read_bytes()
    for offset in range(0, len(pristine), max(1, len(pristine) // 97)):
        copy = tmp_path / f"copy{offset}"
        shutil.copytree(archive, copy)
        data = bytearray(pristine)
        data[offset] ^= 0x40
        _segment(copy, 11, 12).write_bytes(bytes(data))
        verified, fault = verify_archive(copy, G.genesis)
        assert fault is not None and fault.height in (11, 12), offset
        shutil.rmtree(copy)


def test_a_block_certified_by_the_old_validators_after_the_change_is_refused(tmp_path: Path) -> None:
    """The archive follows the validator change: a chain whose blocks after the activation were sealed by the
    genesis validators only is refused at the first of them."""
    g = governed()
    ledger = g.ledger()
    active = change(g, ledger, {"kind": "add_validator", "name": "v4", "pubkey": pub(g.newcomer()),
                                "address": "127.0.0.1:1"})
    grow_empty(g, ledger, 4)
    directory = tmp_path / "a"
    export(ledger.store, g.genesis, directory, None, None)
    assert verify_archive(directory, g.genesis) == (ledger.height, None)
    # The same blocks checked as if the validators had never changed: the headers name other validators.
    static = governed()
    verified, fault = verify_archive(directory, static.genesis)
    assert fault is not None and verified == 0
    assert active > 1


def test_an_export_continues_from_the_archive_once_the_store_pruned_its_last_block(tmp_path: Path) -> None:
    from tests.shell.chainkit import consortium, grow

    c = consortium()
    ledger = c.ledger()
    grow(c, ledger, 20)
    directory = tmp_path / "a"
    export(ledger.store, c.genesis, directory, None, 10)
    ledger.prune(below=11, most=100)  # block 10, which block 11 links to, is gone from the store
    assert export(ledger.store, c.genesis, directory, None, None) == (11, 20)
    assert verify_archive(directory, c.genesis) == (20, None)


def test_the_verify_command_prints_a_report_and_exits_6_with_one_line(tmp_path: Path, archive: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from node.chain.genesis import write_genesis
    from node.cli.main import _run

    genesis_file = tmp_path / "genesis.toml"
    write_genesis(genesis_file, G.genesis)
    assert _run(["archive", "verify", str(archive), "--genesis", str(genesis_file)]) == 0
    assert json.loads(capsys.readouterr().out)["blocks_verified"] == HEIGHTS
    _flip(300)(archive)
    assert _run(["archive", "verify", str(archive), "--genesis", str(genesis_file)]) == 6
    captured = capsys.readouterr()
    assert json.loads(captured.out)["first_bad_height"] in range(6, 11)
    assert captured.err.count("\n") == 1 and captured.err.startswith("alliance: error: ")
    assert _run(["archive", "verify", str(tmp_path / "nothing"), "--genesis", str(genesis_file)]) == 6
    assert "holds no archive manifest" in capsys.readouterr().err
