"""Acknowledged means durable: a node SIGKILLed just after it answered send_tx commits all it acknowledged.

Each round sends transactions without `wait` (a batch, single calls, and a
second client sending batches all along), kills the node at a varied instant
right after answers arrived, and restarts it. Every answer a client received
in full is an acknowledgement; at the end each acknowledged transaction must
be committed.
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from node.chain.tx import Transaction, sign_tx
from node.keys import load_key
from tests.e2e.nodeproc import NodeProcess, alliance, make_testnet, node_process, wait_for

ROUNDS = 10
BATCH = 100


class Sender:
    """Signs fresh transactions and records the hashes of those the node acknowledged."""

    def __init__(self, key: SigningKey, chain_id: str, port: int) -> None:
        self.key, self.chain_id, self.port = key, chain_id, port
        self.acknowledged: list[str] = []
        self.lock = threading.Lock()

    def tx(self) -> Transaction:
        args = {"key": f"durable-{secrets.token_hex(6)}", "value": secrets.token_bytes(16)}
        return sign_tx(self.key, self.chain_id, "kv", "put", args, secrets.randbits(64))

    def send(self, txs: list[Transaction]) -> bool:
        """Sends `txs` in one request (a batch unless one); False once the node no longer answers."""
        calls = [{"jsonrpc": "2.0", "method": "send_tx", "params": {"tx": tx.raw.hex()}, "id": i}
                 for i, tx in enumerate(txs)]
        body = json.dumps(calls if len(calls) > 1 else calls[0]).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/", body, {"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError):
            return False
        finally:
            conn.close()
        answers = answer if isinstance(answer, list) else [answer]
        with self.lock:
            for item in answers:
                if "result" in item:
                    self.acknowledged.append(item["result"]["tx_hash"])
        return True

    def send_until_refused(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.send([self.tx() for _ in range(20)]):
            pass


def _round(node: NodeProcess, sender: Sender, rng: random.Random) -> None:
    stop = threading.Event()
    background = threading.Thread(target=sender.send_until_refused, args=(stop,))
    background.start()
    try:
        assert sender.send([sender.tx() for _ in range(BATCH)])
        for _ in range(rng.randrange(4)):
            assert sender.send([sender.tx()])
        time.sleep(rng.choice([0, 0, 0.002, 0.005, 0.01, 0.03]))
        node.kill9()
    finally:
        stop.set()
        background.join(timeout=30)


def _committed(node: NodeProcess, hashes: list[str]) -> list[str]:
    """The hashes of `hashes` not committed yet."""
    client = node.client()
    left = []
    for start in range(0, len(hashes), 500):
        chunk = hashes[start:start + 500]
        results = client.batch([("get_tx", {"tx_hash": h}) for h in chunk])
        left += [h for h, r in zip(chunk, results) if r["status"] != "committed"]
    return left


def _check_all_committed(node: NodeProcess, acknowledged: list[str]) -> None:
    left: list[str] = []

    def all_committed() -> bool:
        left[:] = _committed(node, acknowledged)
        return not left

    try:
        wait_for(all_committed, "every acknowledged transaction to commit", poll_s=0.5)
    except AssertionError:
        raise AssertionError(f"{len(left)} of {len(acknowledged)} acknowledged transactions lost") from None


@pytest.mark.parametrize(("validators", "rounds"), [(1, 10), (4, 6)])
def test_every_acknowledged_transaction_commits_after_kills_right_after_the_answers(
    tmp_path: Path, validators: int, rounds: int
) -> None:
    """The killed node is the only validator, or one of four (the others go on meanwhile)."""
    net, base = make_testnet(tmp_path, validators)
    nodes = [node_process(net, base, i) for i in range(validators)]
    for node in nodes:
        node.start()
    node = nodes[0]
    sender = Sender(load_key(net / "client.key"), node.client().status()["chain_id"], node.rpc_port)
    rng = random.Random(secrets.randbits(32))
    try:
        for _ in range(rounds):
            _round(node, sender, rng)
            node.start()
        assert len(sender.acknowledged) >= rounds * BATCH
        _check_all_committed(node, sender.acknowledged)
        assert "event=txlog_recovered" in "".join(log.read_text() for log in node.logs)
    finally:
        for each in nodes:
            if each.process is not None and each.process.poll() is None:
                each.stop()


def test_a_damaged_mempool_log_stops_the_start_in_one_line_naming_the_file(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path)
    node = node_process(net, base)
    node.start()
    sender = Sender(load_key(net / "client.key"), node.client().status()["chain_id"], node.rpc_port)
    assert sender.send([sender.tx() for _ in range(5)])
    node.stop()
    [segment] = sorted((node.home / "data.txlog").glob("*.txlog"))
    data = bytearray(segment.read_bytes())
    data[10] ^= 0xFF  # inside the first record, others after it
    segment.write_bytes(bytes(data))
    result = alliance("run", "--home", str(node.home), check=False, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"mempool log {segment} is damaged at byte 0 (checksum mismatch)" in line and "move the file away" in line
    segment.rename(tmp_path / "damaged.txlog")  # the way out the message names
    node.start()
    assert node.client().status()["chain_id"] == sender.chain_id  # serving again
    node.stop()
