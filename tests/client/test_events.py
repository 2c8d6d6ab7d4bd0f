"""Event streams of both clients: blocks and transaction commits from a real node; a drop from a
WebSocket server that drops its subscriber at once."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket
from websockets.sync.server import ServerConnection, serve

from node.client import (
    AsyncClient, Block, Client, CommitTimeout, InvalidInput, NodeUnreachable, Overloaded, SubscriptionDropped,
    load_key,
)
from node.api.http_server import Limits
from node.api.subscriptions import CONNECTIONS_MAX
from tests.client.conftest import Chain
from tests.e2e.nodeproc import free_base_port

DROP_REASON = "fell 1024 notifications behind"


def test_blocks_follow_commits_in_height_order(chain: Chain) -> None:
    with Client(chain.url, key=load_key(chain.key_path)) as client, client.blocks() as blocks:
        receipts = [client.kv_put(f"block-{i}", "b") for i in range(3)]
        seen: list[Block] = []
        for block in blocks:
            seen.append(block)
            if block.height == receipts[-1].height:
                break
        assert [b.height for b in seen] == list(range(seen[0].height, receipts[-1].height + 1))
        assert seen[0].height <= receipts[0].height
        assert {r.tx_hash for r in receipts} <= {h for b in seen for h in b.txs}
        assert seen[-1] == client.get_block(seen[-1].height)


def test_wait_for_tx_committed_pending_and_never(chain: Chain) -> None:
    with Client(chain.url, key=load_key(chain.key_path)) as client:
        done = client.kv_put("waited", "w")
        assert client.wait_for_tx(done.tx_hash, timeout_s=10) == done
        pending = client.send(client.sign("kv", "put", {"key": "waited-2", "value": b"w"}), wait=False)
        committed = client.wait_for_tx(pending.tx_hash, timeout_s=30)
        assert committed.ok and committed == client.get_tx(pending.tx_hash)
        with pytest.raises(CommitTimeout) as timed_out:
            client.wait_for_tx("cd" * 32, timeout_s=0.5)
        assert timed_out.value.tx_hash == "cd" * 32
        with pytest.raises(InvalidInput):
            client.wait_for_tx("cd")


async def test_async_blocks_and_wait_for_tx(chain: Chain) -> None:
    async with AsyncClient(chain.url, key=load_key(chain.key_path)) as client:
        async with client.blocks() as blocks:
            receipt = await client.kv_put("async-event", "e")
            async for block in blocks:
                if receipt.tx_hash in block.txs:
                    assert block.height == receipt.height
                    break
        pending = await client.send(await client.sign("kv", "put", {"key": "async-wait", "value": b"w"}), wait=False)
        assert (await client.wait_for_tx(pending.tx_hash)).ok
        with pytest.raises(CommitTimeout):
            await client.wait_for_tx("ef" * 32, timeout_s=0.5)


async def test_unreachable_event_streams() -> None:
    url = f"http://127.0.0.1:{free_base_port()}"
    with pytest.raises(NodeUnreachable):
        Client(url).blocks(open_timeout_s=2)
    async with AsyncClient(url) as client:
        with pytest.raises(NodeUnreachable):
            async with client.blocks(open_timeout_s=2):
                pass


async def test_streams_ignore_proxy_settings(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    dead_proxy = f"http://127.0.0.1:{free_base_port(1)}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    await trio.to_thread.run_sync(lambda: Client(chain.url).blocks().close())
    async with AsyncClient(chain.url) as client, client.blocks():
        pass


async def test_a_node_with_every_connection_taken_refuses_streams_as_overloaded(chain: Chain) -> None:
    async with AsyncClient(chain.url) as client:
        with trio.fail_after(60):
            async with contextlib.AsyncExitStack() as held:
                await take_every_connection(held, client)
                with pytest.raises(Overloaded) as refused_async:
                    async with client.blocks():
                        pass
                with pytest.raises(Overloaded) as refused_sync:
                    await trio.to_thread.run_sync(lambda: Client(chain.url).blocks())
            for refused in (refused_async.value, refused_sync.value):  # this address's share is taken
                assert refused.code == -32004 and f"over {Limits.per_address_max} connections" in refused.message
            while True:  # the node frees the connections once they are closed
                try:
                    async with client.blocks():
                        break
                except Overloaded:
                    await trio.sleep(0.05)


async def take_every_connection(held: contextlib.AsyncExitStack, client: AsyncClient) -> None:
    """Opens subscribed streams (an idle connection would make room for a newer one), kept open by `held`,
    until the node refuses one."""
    for _ in range(CONNECTIONS_MAX + 1):
        try:
            await held.enter_async_context(client.blocks())
        except Overloaded:
            return
    pytest.fail(f"the node accepted more than {CONNECTIONS_MAX} WebSocket connections")


async def test_an_unanswered_subscribe_times_out_in_both_flavours(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()  # the subscribe request, never answered
        await trio.sleep_forever()

    port = free_base_port(1)
    await nursery.start(serve_websocket, handler, "127.0.0.1", port, None)
    url = f"http://127.0.0.1:{port}"
    with trio.fail_after(10):
        async with AsyncClient(url) as client:
            with pytest.raises(NodeUnreachable, match="no answer to subscribe"):
                async with client.blocks(open_timeout_s=0.3):
                    pass
        with pytest.raises(NodeUnreachable, match="no answer to subscribe"):
            await trio.to_thread.run_sync(lambda: Client(url).blocks(open_timeout_s=0.3))


# ---- a dropped subscriber -----------------------------------------------------------------------


def _answer_then_drop(request: str) -> list[str]:
    call = json.loads(request)
    return [
        json.dumps({"jsonrpc": "2.0", "result": "sub-1", "id": call["id"]}),
        json.dumps({"jsonrpc": "2.0", "method": "subscription_dropped", "params": {"reason": DROP_REASON}}),
    ]


@pytest.fixture
def dropping_server() -> Iterator[str]:
    def handler(ws: ServerConnection) -> None:
        for frame in _answer_then_drop(str(ws.recv())):
            ws.send(frame)
        ws.close(1008)

    port = free_base_port(1)
    with serve(handler, "127.0.0.1", port) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        yield f"http://127.0.0.1:{port}"
        server.shutdown()
        thread.join()


def test_sync_stream_raises_subscription_dropped(dropping_server: str) -> None:
    with Client(dropping_server).blocks() as blocks, pytest.raises(SubscriptionDropped) as dropped:
        next(blocks)
    assert dropped.value.reason == DROP_REASON


async def test_async_stream_raises_subscription_dropped(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for frame in _answer_then_drop(str(await ws.get_message())):
            await ws.send_message(frame)
        await ws.aclose(1008)

    port = free_base_port(1)
    await nursery.start(serve_websocket, handler, "127.0.0.1", port, None)
    async with AsyncClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(SubscriptionDropped) as dropped:
            async with client.blocks() as blocks:
                await blocks.next_event()
    assert dropped.value.reason == DROP_REASON
