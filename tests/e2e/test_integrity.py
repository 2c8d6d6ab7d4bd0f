"""A damaged store is refused in one line, `alliance check` names the first bad height, `alliance resync` recovers.

Real `alliance` processes on real LevelDB. One chain of a few hundred blocks
is made once and copied for each kind of damage, which is applied to the
stopped node's files the way a failing disk or an operator's mistake does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import plyvel
import pytest

from node.client import Client, NoAnswer, NodeUnreachable, RpcError
from node.config import load_config
from node.disk.safety_file import UNKNOWN, SafetyFile, safety_path
from node.errors import ExitCode
from node.keys import load_key
from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, alliance, make_testnet, node_process, wait_for

BLOCKS = 270  # more than the start-up window of 256: a hole at DEEP is found only when read
DEEP = 3
REPORT_FIELDS = {"ok", "data_dir", "state_replayed", "height", "blocks_checked", "first_bad_height", "safety_file"}


def _make_blocks(url: str, net: Path, count: int, prefix: str = "k") -> None:
    with Client(url, timeout_s=DEADLINE_S, key=load_key(net / "client.key")) as client:
        for i in range(count):
            client.kv_put(f"{prefix}{i}", f"v{i}")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped one-validator testnet with BLOCKS blocks, its LevelDB files as the node left them."""
    net, base = make_testnet(tmp_path_factory.mktemp("pristine"))
    node = node_process(net, base)
    node.start()
    _make_blocks(node.rpc_url, net, BLOCKS)
    assert node.stop() == 0
    return net


@pytest.fixture
def net(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "net"
    shutil.copytree(pristine, copy)
    return copy


def _data(net: Path) -> Path:
    return net / "node0" / "data"


def _files(net: Path, suffix: str) -> list[Path]:
    return sorted(_data(net).glob(f"*{suffix}"), key=lambda p: p.stat().st_size)


def _overwrite_log_middle(net: Path) -> None:
    log = _files(net, ".log")[-1]
    size = log.stat().st_size
    assert size > 64 * 1024, "the blocks are in the write-ahead log"
    with log.open("r+b") as f:  # 8 KB of garbage in the middle, as dd conv=notrunc does
        f.seek(size // 2)
        f.write(bytes(range(256)) * 32)


def _truncate_log_half(net: Path) -> None:
    _truncate_half(_data(net))


def _truncate_half(data: Path) -> None:
    log = sorted(data.glob("*.log"), key=lambda p: p.stat().st_size)[-1]
    with log.open("r+b") as f:
        f.truncate(log.stat().st_size // 2)


def _damage_table(net: Path) -> None:
    alliance("check", "--home", str(net / "node0"))  # LevelDB moves the log into a table on open
    table = _files(net, ".ldb")[-1]
    size = table.stat().st_size
    with table.open("r+b") as f:  # the middle half of the table: blocks, certificates and entries alike
        f.seek(size // 4)
        f.write(b"\xa5" * (size // 2))


def _truncate_table(net: Path) -> None:
    alliance("check", "--home", str(net / "node0"))  # LevelDB moves the log into a table on open
    table = _files(net, ".ldb")[-1]
    with table.open("r+b") as f:
        f.truncate(table.stat().st_size // 2)


def _delete_block(height: int, prefix: bytes = b"b/") -> Callable[[Path], None]:
    def damage(net: Path) -> None:
        db = plyvel.DB(str(_data(net)))
        db.delete(prefix + height.to_bytes(8, "big"), sync=True)
        db.close()
    return damage


def _delete_state_key(net: Path) -> bytes:
    db = plyvel.DB(str(_data(net)))
    key = next(db.iterator(prefix=b"s/kv/", include_value=False))
    db.delete(key, sync=True)
    db.close()
    return key


def _delete_safety_file(net: Path) -> None:
    safety_path(_data(net)).unlink()


def _damage_safety_file(net: Path) -> None:
    path = safety_path(_data(net))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _start_refused(net: Path) -> str:
    """Runs the node, which must exit non-zero with one line naming the way out; returns that line."""
    try:
        result = subprocess.run([*ALLIANCE, "run", "--home", str(net / "node0")], capture_output=True, text=True,
                                timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError("the node started on a damaged store") from None
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "level=" not in line]
    _assert_refusal_line(lines, result.stderr)
    return lines[0]


def _assert_refusal_line(lines: list[str], output: str) -> None:
    assert len(lines) == 1 and lines[0].startswith("alliance: error: "), output
    assert "the store is damaged; run `alliance check --home" in lines[0], output
    # One validator: no peers to resync from, so the way out named is a restore.
    assert "restore the data directory from a copy" in lines[0] and "resync" not in lines[0], output
    assert "Traceback" not in output


def _check(net: Path, *extra: str) -> tuple[int, dict[str, object]]:
    result = alliance("check", "--home", str(net / "node0"), *extra, check=False)
    report = json.loads(result.stdout.splitlines()[-1])
    assert (result.returncode == 0) == report["ok"], result.stderr
    assert REPORT_FIELDS <= report.keys() and (report["ok"] or "finding" in report), report
    if not report["ok"]:  # VerificationFailed: one line and its own exit code
        assert result.stderr.startswith("alliance: error: ") and result.stderr.count("\n") == 1, result.stderr
        assert result.returncode == ExitCode.VERIFICATION_FAILED
    return result.returncode, report


def test_a_whole_store_checks_and_starts(net: Path) -> None:
    code, report = _check(net, "--state")
    assert code == 0 and report["height"] == BLOCKS and report["blocks_checked"] == BLOCKS


@pytest.mark.parametrize("damage", [
    _overwrite_log_middle, _truncate_log_half, _damage_table, _truncate_table, _delete_safety_file,
    _damage_safety_file,
], ids=lambda d: d.__name__.strip("_"))
def test_damage_is_refused_and_checked(net: Path, damage: Callable[[Path], None]) -> None:
    damage(net)
    _start_refused(net)
    code, report = _check(net)
    assert not report["ok"], report
    if damage is _truncate_table:  # LevelDB cannot read the height pointer: no height to name, but the reason
        assert report["first_bad_height"] is None and ".ldb" in str(report["finding"])
    elif "safety_file" not in damage.__name__:  # the chain's first bad height, even where LevelDB refuses the store
        if report["first_bad_height"] is None:  # unless the damage took the height pointer's table block too
            assert "cannot be read either" in str(report["copy_read"]) and "Corruption" in str(report["finding"])
        else:
            assert 1 <= int(str(report["first_bad_height"])) <= BLOCKS, report


def test_a_deleted_block_is_named_by_start_and_check(net: Path) -> None:
    missing = BLOCKS - 17
    _delete_block(missing)(net)
    assert f"block {missing} is missing" in _start_refused(net)
    code, report = _check(net)
    assert not report["ok"] and report["first_bad_height"] == missing


def test_a_deep_hole_is_found_by_check(net: Path) -> None:
    _delete_block(DEEP)(net)
    code, report = _check(net)
    assert not report["ok"] and report["first_bad_height"] == DEEP


@pytest.mark.parametrize("prefix", [b"b/", b"c/"], ids=["block", "certificate"])
def test_a_hole_below_the_start_window_stops_the_node_that_reads_it(net: Path, prefix: bytes) -> None:
    _delete_block(DEEP, prefix)(net)
    node = node_process(net, _rpc_port(net))
    node.start()  # the window checked at start ends above the hole
    assert node.process is not None
    try:
        node.client().call("get_block", height=DEEP)
    except (RpcError, NodeUnreachable, NoAnswer) as exc:  # the answer names the damage, or the node stopped first
        assert "internal error" not in str(exc)
    else:
        raise AssertionError("a block missing from the store was served")
    assert node.process.wait(timeout=DEADLINE_S) == ExitCode.ERROR
    output = node.log_text()
    errors = [line for line in output.splitlines() if "level=error" in line]
    assert len(errors) == 1 and "event=store_damaged" in errors[0], output
    _assert_refusal_line([line for line in output.splitlines() if "level=" not in line], output)
    assert f"block {DEEP}" in _start_refused(net), "and it stays refused, where the window alone would pass it"
    code, report = _check(net)
    assert not report["ok"] and f"block {DEEP}" in str(report["found_while_running"])


def test_check_state_compares_the_stored_state_with_the_replayed_one(net: Path) -> None:
    key = _delete_state_key(net)
    assert _check(net)[1]["ok"], "only the replay reads the state"
    code, report = _check(net, "--state")
    assert not report["ok"] and repr(key[len(b"s/"):]) in str(report["finding"]), report


def test_resync_of_a_one_validator_chain_is_refused_and_names_the_restore(net: Path) -> None:
    result = alliance("resync", "--home", str(net / "node0"), check=False)
    assert result.returncode == ExitCode.ERROR and result.stderr.count("\n") == 1, result.stderr
    assert "a chain of one validator has no peers to rebuild from: restore the data directory" in result.stderr
    assert _data(net).is_dir() and not list(net.glob("node0/data.damaged-*"))


def test_check_refuses_a_running_node(pristine: Path, tmp_path: Path) -> None:
    net = tmp_path / "net"
    shutil.copytree(pristine, net)
    node = node_process(net, _rpc_port(net))
    node.start()
    try:
        result = alliance("check", "--home", str(net / "node0"), check=False)
        assert result.returncode == 1 and "running node; stop it first" in result.stderr
    finally:
        node.stop()


def _rpc_port(net: Path) -> int:
    return load_config(net / "node0").rpc_listen.port


@pytest.mark.parametrize("lose_safety_file", [False, True], ids=["rolled-back", "safety-file-lost-too"])
def test_resync_rebuilds_from_peers_and_never_signs_again_below_what_it_signed(
    tmp_path: Path, lose_safety_file: bool
) -> None:
    net, base = make_testnet(tmp_path, nodes=4)
    nodes = [node_process(net, base, i) for i in range(4)]
    for node in nodes:
        node.start()
    victim, path = nodes[3], safety_path(nodes[3].home / "data")
    try:
        _make_blocks(nodes[0].rpc_url, net, 60)
        assert victim.stop() == 0
        signed_before = SafetyFile.load(path)
        assert signed_before is not None and signed_before.record.safety is not None
        _truncate_half(victim.home / "data")
        if lose_safety_file:
            path.unlink()
        refused = subprocess.run([*ALLIANCE, "run", "--home", str(victim.home)], capture_output=True, text=True,
                                 timeout=DEADLINE_S)
        assert refused.returncode != 0 and "alliance resync" in refused.stderr

        marker = victim.home / "data.corrupt"  # as a running node writes it on finding damage
        marker.write_text("block 5 is missing from the store\n")
        moved = alliance("resync", "--home", str(victim.home))
        assert "damaged" in moved.stdout and list(victim.home.glob("data.damaged-*"))
        assert not marker.exists() and list(victim.home.glob("data.damaged-*.corrupt")), "the marker goes with it"
        marked = SafetyFile.load(path)
        assert marked is not None
        assert marked.record.sign_from == (UNKNOWN if lose_safety_file else signed_before.record.signed_up_to + 1)

        _make_blocks(nodes[0].rpc_url, net, 10, prefix="while-away")
        victim.start()
        _make_blocks(nodes[0].rpc_url, net, 10, prefix="after")
        tip = nodes[0].client().status()["height"]
        wait_for(lambda: victim.client().status()["height"] >= tip, "the resynced node to catch up")
        _make_blocks(victim.rpc_url, net, 5, prefix="voting")  # caught up: it takes part again
        tip = nodes[0].client().status()["height"]
        wait_for(lambda: victim.client().status()["height"] >= tip, "the resynced node to commit the last blocks")
        with nodes[0].client() as a, victim.client() as b:
            for height in range(1, tip + 1):
                assert a.call("get_block", height=height)["hash"] == b.call("get_block", height=height)["hash"]
    finally:
        for node in nodes:
            node.stop()
    after = SafetyFile.load(path)
    assert after is not None
    sign_from = after.record.sign_from
    assert sign_from > signed_before.record.signed_up_to, "its floor is above anything it signed before"
    if not lose_safety_file:
        assert sign_from == marked.record.sign_from
    safety = after.record.safety
    assert safety is not None and safety.height >= sign_from, "it signs again, and only from its floor"
