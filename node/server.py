"""One node: storage, consensus driver, RPC and operations endpoints in one nursery."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from consensus.events import MessageReceived
from consensus.messages import MessageError, decode_signed, encode_signed
from consensus.replica import Replica, ReplicaConfig, fault_tolerance, quorum
from node.config import NodeConfig
from node.chain.crypto import NodeCrypto
from node.pipeline.driver import Driver
from node.errors import AllianceError, ConfigError
from node.api.subscriptions import Hub
from node.chain.genesis import Genesis, load_genesis
from node.keys import load_key
from node.chain.ledger import GenesisMismatch, Ledger
from node.txpool.mempool import Mempool
from node.txpool.admission import Admission
from node.p2p.fetch import TxFetcher
from node.p2p.gossip import TxGossip
from node.ops.metrics import Metrics
from node.p2p.peers import BLOCKS, CONSENSUS, FOUND_TXS, GET_BLOCKS, GET_TXS, STATUS, TXS, PeerNetwork, encode_frame
from node.api.rpc import RpcService
from node.disk.safety_file import UNKNOWN
from node.disk.store_guard import SIGN_NOTHING, DamageWatch, Guarded, damaged, learn_sign_from, open_guarded
from node.p2p.sync import Syncer
from node.txpool.txlog import TxLog
from node.txpool.verifier import Verifier
from node.version import VERSION
from node.api.web import (
    RPC_BODY_BYTES_MAX, BodyTooLarge, Receive, Scope, Send, bind, read_body, respond, respond_json, serve_http,
)
from node.api.ws import EventSocket
from storage.chain import ChainStore
from storage.kv import StoreCorrupt
from storage.leveldb import LevelDBStore

log = logging.getLogger("alliance.node")


@dataclass
class Node:
    config: NodeConfig
    genesis: Genesis
    ledger: Ledger
    driver: Driver
    metrics: Metrics
    network: PeerNetwork
    syncer: Syncer
    rpc: RpcService | None = None
    storage_open: bool = True

    @property
    def replica(self) -> Replica:
        return self.driver.replica

    def peers(self) -> list[dict[str, Any]]:
        me = self.replica.me
        return [
            {"name": m.name, "pubkey": m.pubkey.hex(), "connected": self.network.connected(m.pubkey)}
            for m in self.genesis.validators if m.pubkey != me
        ]

    def status(self) -> dict[str, Any]:
        replica = self.replica
        return {
            "chain_id": self.genesis.chain_id,
            "node": {"name": self.config.name, "pubkey": replica.me.hex()},
            "height": self.ledger.height,
            "last_block_hash": self.ledger.last_hash.hex(),
            "view": replica.round,
            "leader": replica.proposer(replica.height, replica.round).hex(),
            "validators": [m.pubkey.hex() for m in self.genesis.validators],
            "peers": self.peers(),
            "syncing": self.syncer.syncing,
            "version": VERSION,
        }

    def readiness(self) -> list[str]:
        """Why the node is not ready; empty when it is."""
        connected = 1 + sum(p["connected"] for p in self.peers())
        needed = quorum(len(self.genesis.validators))
        reasons = []
        if connected < needed:
            reasons.append(f"connected to {connected} of {needed} validators needed for a quorum")
        best = max(self.syncer.best_height, self.syncer.reported_height)  # also when their blocks are refused
        if self.syncer.syncing or best > self.ledger.height + 1:
            reasons.append(f"catching up: at height {self.ledger.height} of {best}")
        if not self.storage_open:
            reasons.append("storage is closed")
        return reasons

    # ---- HTTP endpoints --------------------------------------------------------------

    async def rpc_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/":
            return await respond_json(send, 404, {"error": "not found; JSON-RPC is served at POST /"})
        if scope["method"] != "POST":
            return await respond_json(send, 405, {"error": "method not allowed; use POST /"})
        try:
            body = await read_body(scope, receive, RPC_BODY_BYTES_MAX)
        except BodyTooLarge:
            return await respond_json(send, 413, {"error": f"request body over {RPC_BODY_BYTES_MAX} bytes"})
        assert self.rpc is not None
        answer = await self.rpc.handle(body)
        if answer is None:
            return await respond(send, 204, b"")
        await respond(send, 200, self.rpc.encode(answer))

    async def ops_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            return await respond_json(send, 405, {"error": "method not allowed; use GET"})
        path = scope["path"]
        if path == "/metrics":
            return await respond(send, 200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/healthz":
            ok = self.storage_open
            return await respond_json(send, 200 if ok else 503, {"ok": ok})
        if path == "/readyz":
            reasons = self.readiness()
            return await respond_json(send, 503 if reasons else 200, {"ready": not reasons, "reasons": reasons})
        await respond_json(send, 404, {"error": "not found; try /metrics, /healthz or /readyz"})


def _replica(config: NodeConfig, genesis: Genesis, crypto: NodeCrypto, ledger: Ledger, guarded: Guarded) -> Replica:
    validators = tuple(m.pubkey for m in genesis.validators)
    if crypto.public_key not in validators:
        raise ConfigError(f"this node's key {crypto.public_key.hex()} is not a validator in {config.genesis_file}")
    replica_config = ReplicaConfig(
        chain_id=genesis.chain_id,
        validators=validators,
        round_timeout_ms=config.round_timeout_ms,
        round_timeout_max_ms=config.round_timeout_max_ms,
    )
    sign_from = SIGN_NOTHING if guarded.sign_from == UNKNOWN else guarded.sign_from
    return Replica(replica_config, crypto, ledger.height + 1, guarded.safety_file.record.safety, sign_from)


def _wire(node: Node, gossip: TxGossip, hub: Hub) -> None:
    """Connects the parts: consensus messages, gossip and catch-up over the peer network, events."""
    driver, network, syncer, metrics = node.driver, node.network, node.syncer, node.metrics
    driver.broadcast = lambda signed: network.broadcast(encode_frame(CONSENSUS, encode_signed(signed)))
    driver.send_to = lambda peer, signed: network.send(peer, encode_frame(CONSENSUS, encode_signed(signed)))
    driver.request_sync = lambda height: syncer.wake()
    fetcher = TxFetcher(network, driver.held_tx, node.genesis.chain_id)
    driver.inline = gossip.unsent
    driver.fetch_txs = fetcher.fetch

    def on_committed(height: int) -> None:
        hub.publish(height)
        syncer.announce()

    driver.on_committed = on_committed

    def on_connect(peer: bytes) -> None:
        syncer.announce(peer)
        gossip.greet(peer)

    network.on_connect = on_connect
    assert node.rpc is not None
    node.rpc.on_admitted = gossip.announce

    def on_consensus(peer: bytes, fields: list[Any]) -> None:
        try:
            signed = decode_signed(fields[0] if fields and isinstance(fields[0], bytes) else b"")
        except MessageError:
            metrics.messages_dropped.labels("malformed").inc()
            return
        if signed.sender != peer:
            metrics.messages_dropped.labels("sender_mismatch").inc()
        elif syncer.syncing and signed.message.height <= syncer.best_height:
            metrics.messages_dropped.labels("decided").inc()  # catch-up brings that height
        else:
            driver.feed(MessageReceived(signed))

    handlers = {
        STATUS: syncer.on_status, CONSENSUS: on_consensus, TXS: gossip.on_txs,
        GET_BLOCKS: syncer.on_get_blocks, BLOCKS: syncer.on_blocks,
        GET_TXS: fetcher.on_get_txs, FOUND_TXS: fetcher.on_found_txs,
    }

    def route(peer: bytes, frame: list[Any]) -> None:
        handler = handlers.get(frame[0])
        if handler is None:
            metrics.p2p_frames_malformed.inc()
        else:
            handler(peer, frame[1:])

    network.handler = route


async def _readmit(admission: Admission, txlog: TxLog, recovered: list[bytes]) -> None:
    """What this node acknowledged before it stopped and is not committed yet: pending again.

    Each peer is sent them as it connects (TxGossip.greet).
    """
    pending = await admission.readmit(recovered)
    await txlog.start(pending)
    if recovered:
        log.info("event=txlog_recovered records=%d pending=%d", len(recovered), len(pending))


async def run_node(config: NodeConfig, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
    """Runs a node until cancelled; raises AllianceError/StorageError for what stops it starting."""
    genesis = load_genesis(config.genesis_file)
    key = load_key(config.key_file)
    crypto = NodeCrypto(key)
    with ExitStack() as stack:
        try:
            kv = LevelDBStore.open(config.data_dir)
        except StoreCorrupt as exc:
            raise damaged(config, str(exc), len(genesis.validators)) from None
        stack.callback(kv.close)
        try:
            ledger = Ledger(ChainStore(kv), genesis)
        except GenesisMismatch as exc:
            raise AllianceError(f"{config.data_dir}: {exc}") from None
        except StoreCorrupt as exc:
            raise damaged(config, str(exc), len(genesis.validators)) from None
        guarded = open_guarded(config, ledger.store, genesis)
        stack.callback(guarded.safety_file.close)
        replica = _replica(config, genesis, crypto, ledger, guarded)
        rpc_sock = stack.enter_context(bind(config.rpc_listen, "rpc.listen"))
        p2p_sock = stack.enter_context(bind(config.p2p_listen, "p2p.listen"))
        metrics_sock = stack.enter_context(bind(config.metrics_listen, "metrics.listen"))
        metrics = Metrics()
        metrics.chain_height.set(ledger.height)
        mempool = Mempool(config.mempool_txs_max)
        driver = Driver(replica, ledger, mempool, metrics, config.block_txs_max)
        driver.save_safety = guarded.safety_file.save_safety
        network = PeerNetwork(genesis.chain_id, key, genesis.validators, metrics)
        syncer = Syncer(ledger, network, driver, tuple(m.pubkey for m in genesis.validators))
        node = Node(config, genesis, ledger, driver, metrics, network, syncer)
        metrics.validators.set(len(genesis.validators))  # what the alerts' quorum is computed from
        metrics.mempool_txs_max.set(config.mempool_txs_max)
        metrics.peers_best_height.set_function(lambda: max(syncer.best_height, syncer.reported_height))
        verifier = Verifier(ledger, mempool)
        # Next to the data directory, not in it: LevelDB's directory holds LevelDB's files only.
        txlog = TxLog(config.data_dir.with_name(config.data_dir.name + ".txlog"))
        recovered = txlog.recover()
        stack.callback(txlog.close)
        admission = Admission(genesis, ledger, mempool, verifier, driver, txlog)
        node.rpc = RpcService(driver, admission, metrics, node.status)
        gossip = TxGossip(network, admission, metrics)
        hub = Hub(node.rpc.block_result, node.rpc.tx_result, metrics)
        _wire(node, gossip, hub)
        driver.on_txs_committed = txlog.forget
        watch = DamageWatch(config, len(genesis.validators))
        node.rpc.on_store_damaged = syncer.on_store_damaged = watch.report
        try:
            async with trio.open_nursery() as nursery:
                watch.stop = nursery.cancel_scope.cancel
                nursery.start_soon(verifier.run)
                # Before the replica resumes (a block it sealed may hold them) and before peers' gossip.
                await _readmit(admission, txlog, recovered)
                nursery.start_soon(txlog.run)
                await nursery.start(driver.run)
                await nursery.start(network.serve, p2p_sock)
                nursery.start_soon(syncer.run)
                nursery.start_soon(gossip.run)
                if guarded.sign_from == UNKNOWN:
                    reports = fault_tolerance(len(genesis.validators)) + 1
                    nursery.start_soon(learn_sign_from, syncer, replica, guarded.safety_file, reports)
                await nursery.start(partial(serve_http, node.rpc_app, rpc_sock, websocket=EventSocket(hub, node.rpc)))
                await nursery.start(serve_http, node.ops_app, metrics_sock)
                log.info("event=node_started name=%s height=%d rpc=%s p2p=%s metrics=%s chain_id=%s",
                         config.name, ledger.height, config.rpc_listen, config.p2p_listen,
                         config.metrics_listen, genesis.chain_id)
                task_status.started(node)
        except* StoreCorrupt as group:  # a read by the driver or the catch-up found damage
            raise watch.report(group.exceptions[0]) from None
        finally:
            node.storage_open = False
            guarded.safety_file.save_committed(ledger.height)  # a rollback while stopped is then seen
            log.info("event=node_stopped height=%d", ledger.height)
        if watch.found is not None:
            raise watch.found
