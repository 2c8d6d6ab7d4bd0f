"""The driver's heartbeat, which the systemd watchdog reads: alive while idle or making progress."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
from nacl.signing import SigningKey

from consensus.config import ReplicaConfig
from consensus.replica import Replica
from node.chain.crypto import NodeCrypto
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.tx import sign_tx
from node.pipeline.driver import INLINE_TXS_MAX
from storage.chain import ChainStore
from storage.memory import MemoryStore
from tests.shell.chainkit import driver_over, submit

STALL_S = 30.0


async def test_the_loop_is_alive_while_idle_and_not_while_stuck_on_one_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    validator, client = SigningKey.generate(), SigningKey.generate()
    members = (Member("v0", bytes(validator.verify_key), ""),)
    genesis = Genesis("hb-test", 0, members, (Member("c", bytes(client.verify_key)),), ())
    ledger = Ledger(ChainStore(MemoryStore()), genesis)
    hang, stuck, release = [False], trio.Event(), trio.Event()

    async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
        if fn.__name__ == "commit" and hang[0]:
            stuck.set()
            await release.wait()  # a storage call that hangs inside the consensus loop
        return fn(*args)

    replica = Replica(ReplicaConfig("hb-test", (members[0].pubkey,)), NodeCrypto(validator), 1)
    driver = driver_over(replica, ledger, block_txs_max=1000, run_blocking=run_blocking)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        hang[0] = True
        await trio.sleep(STALL_S * 2)
        assert driver.loop_alive(STALL_S), "an idle loop is alive"
        for _ in range(INLINE_TXS_MAX + 1):  # a block large enough to be committed in a worker thread
            submit(driver, sign_tx(client, "hb-test", "kv", "put", {"key": "k", "value": b"v"}, secrets.randbits(64)))
        with trio.fail_after(STALL_S):
            await stuck.wait()
        await trio.sleep(STALL_S / 2)
        assert driver.loop_alive(STALL_S), "one event for less than the stall period"
        await trio.sleep(STALL_S)
        assert not driver.loop_alive(STALL_S), "stuck on one event for longer than the stall period"
        release.set()
        while ledger.height < 1:
            await trio.sleep(0.1)
        await trio.sleep(1)
        assert driver.loop_alive(STALL_S)
        nursery.cancel_scope.cancel()
