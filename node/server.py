"""The composition root: one node's parts, built bottom-up and started in one nursery."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import trio
from nacl.signing import SigningKey

from consensus.config import ReplicaConfig
from consensus.quorum import fault_tolerance
from consensus.replica import Replica
from node.api.access import AccessGate, AccessPolicy, load_tokens
from node.api.endpoints import OpsApp, RpcApp
from node.api.http_server import bind, serve_http
from node.api.lookup import ChainLookup
from node.api.consensus_view import ConsensusMethods
from node.api.members import MembershipGauges
from node.api.rpc import RpcService
from node.api.status import NodeStatus
from node.api.subscriptions import Hub
from node.api.tls import check_tls
from node.api.ws import EventSocket
from node.chain.crypto import NodeCrypto
from node.chain.genesis import Genesis, load_genesis
from node.chain.ledger import GenesisMismatch, Ledger
from node.config import NodeConfig, is_loopback
from node.disk.safety_file import UNKNOWN
from node.disk.snapshot_files import SnapshotFiles, SnapshotWriter, restored_record, snapshot_root
from node.disk.store_guard import DamageWatch, Guarded, damaged, open_guarded, resync_record
from node.errors import AllianceError
from node.keys import load_key
from node.ops.metrics import Metrics
from node.p2p.fetch import TxFetcher
from node.p2p.gossip import TxGossip
from node.p2p.outbox import PeerOutbox
from node.p2p.peers import PeerNetwork
from node.p2p.router import Router
from node.p2p.snapshot_server import SnapshotServer
from node.p2p.state_sync import StateSyncFailed, state_sync
from node.p2p.sync import HeightAnnouncer, Syncer
from node.pipeline.commit import CommitPipeline
from node.pipeline.consensus_watch import ConsensusWatch
from node.pipeline.driver import Driver, Inbox, Wakeup, now_ms
from node.pipeline.pruner import Pruner
from node.pipeline.sign_floor import SIGN_NOTHING, learn_sign_from
from node.txpool.admission import Admission
from node.txpool.mempool import Mempool
from node.txpool.txlog import TxLog
from node.txpool.verifier import Verifier
from storage.chain import ChainStore
from storage.kv import StoreCorrupt
from storage.leveldb import LevelDBStore

log = logging.getLogger("alliance.node")


@dataclass(frozen=True)
class Node:
    """A started node, as `run_node` hands it out: what `alliance run`'s notify task and tests read."""

    status: NodeStatus
    driver: Driver


def _replica(config: NodeConfig, genesis: Genesis, crypto: NodeCrypto, ledger: Ledger, guarded: Guarded) -> Replica:
    """The replica at the ledger's next height, told the validators of that height and the one after
    (the driver tells it of each later height as blocks commit)."""
    height = ledger.height + 1
    replica_config = ReplicaConfig(
        chain_id=genesis.chain_id,
        validators=ledger.members(height).validator_keys,
        round_timeout_ms=config.round_timeout_ms,
        round_timeout_max_ms=config.round_timeout_max_ms,
    )
    sign_from = SIGN_NOTHING if guarded.sign_from == UNKNOWN else guarded.sign_from
    known = {height + 1: ledger.members(height + 1).validator_keys}
    safety = guarded.safety_file.record.safety
    if safety is not None and any(signed.sender != crypto.public_key for signed in safety.sent):
        # Governance replaced this node's key: what the old key signed binds the old key only.
        log.info("event=safety_state_of_another_key height=%d", safety.height)
        safety = None
    replica = Replica(replica_config, crypto, height, safety, sign_from, known)
    _log_role(ledger.members(height).role_of(crypto.public_key), crypto.public_key, height)
    return replica


def _log_role(role: str | None, key: bytes, height: int) -> None:
    if role == "validators":
        return
    # Peers refuse a key that is no member (their log: peers_refused), and this node acknowledges no
    # client transaction until governance admits it; it signs from the height it becomes a validator.
    log.info("event=node_follows key=%s height=%d role=%s", key.hex(), height,
             "observer" if role == "observers" else "none")


def access_policy(config: NodeConfig) -> AccessPolicy:
    """The RPC listener's access policy, its TLS files checked first (before the store is opened, so
    that a mistake in them is the start's one error)."""
    for files, section in ((config.rpc_tls, "rpc"), (config.metrics_tls, "metrics")):
        if files is not None:
            check_tls(files, section)
    tokens = load_tokens(config.rpc_tokens_file) if config.rpc_tokens_file is not None else []
    return AccessPolicy(config.rpc_access, tokens)


def log_access(config: NodeConfig, policy: AccessPolicy) -> None:
    """Says how the RPC listener is guarded, once the node serves; warns where tokens cross the network
    in clear, or where nothing can get in."""
    tls, tokens = config.rpc_tls, len(policy.tokens)
    log.info("event=rpc_access mode=%s tokens=%d tls=%s client_certs=%s metrics_tls=%s", config.rpc_access,
             tokens, "on" if tls else "off", "required" if tls and tls.client_ca else "off",
             "on" if config.metrics_tls else "off")
    if tokens and tls is None and not is_loopback(config.rpc_listen.host):
        log.warning("event=rpc_tokens_in_clear listen=%s reason=%r", config.rpc_listen,
                    "tokens are accepted without TLS on a non-loopback address: anyone on the path can read them")
    if config.rpc_access == "closed" and not tokens:
        log.warning("event=rpc_closed_without_tokens listen=%s reason=%r", config.rpc_listen,
                    "access is closed and no token is configured: every RPC request is refused (docs/configuration.md)")


def _greeter(heights: HeightAnnouncer, gossip: TxGossip) -> Callable[[bytes], None]:
    """What a peer is told as its session opens: our height, and what we acknowledged."""

    def on_connect(peer: bytes) -> None:
        heights.announce(peer)
        gossip.greet(peer)

    return on_connect


def _open_ledger(config: NodeConfig, genesis: Genesis, stack: ExitStack) -> Ledger:
    """The ledger in the data directory, closed with `stack`."""
    try:
        kv = LevelDBStore.open(config.data_dir)
    except StoreCorrupt as exc:
        raise damaged(config, str(exc), len(genesis.validators)) from None
    stack.callback(kv.close)
    try:
        store = ChainStore(kv)
        if store.restoring():
            log.warning("event=state_sync_abandoned reason=%r", "a restore did not finish: the store is emptied")
            store.abandon_restore()
        return Ledger(store, genesis)
    except GenesisMismatch as exc:
        raise AllianceError(f"{config.data_dir}: {exc}") from None
    except StoreCorrupt as exc:
        raise damaged(config, str(exc), len(genesis.validators)) from None


async def _state_synced(config: NodeConfig, genesis: Genesis, key: SigningKey, ledger: Ledger, guarded: Guarded,
                        metrics: Metrics) -> tuple[Ledger, Guarded, dict[str, str]]:
    """The store restored from a peer's snapshot (node/p2p/state_sync.py) when `sync.state_sync` is on
    and it is empty, or more than `sync.state_sync_behind_blocks` below the newest snapshot offered:
    the ledger over it, the guard with a sign floor above the restored height, and what was done (the
    status' `sync`). Otherwise catches up by blocks, and says why."""
    if not config.state_sync or len(genesis.validators) == 1:
        return ledger, guarded, {"mode": "blocks", "state_sync": "off"}
    held = ledger.height
    if held and config.archive_dir is not None:
        return ledger, guarded, {"mode": "blocks", "state_sync": "not needed: the node archives its blocks"}
    above = held + config.state_sync_behind_blocks if held else 0
    with bind(config.p2p_listen, "p2p.listen") as sock:
        try:
            height, leaves = await state_sync(genesis, key, ledger, metrics, sock, config.snapshot_timeout_ms / 1000,
                                              above, lambda: _lower_committed_floor(guarded))
        except StateSyncFailed as exc:
            return _blocks_instead(config, genesis, ledger, guarded, held, str(exc))
    try:
        ledger = Ledger(ledger.store, genesis, leaves)  # the restored state's tree, checked against its header
    except StoreCorrupt as exc:
        raise damaged(config, str(exc), len(genesis.validators)) from None
    # Never sign at or below the restored height: those heights were decided without this store.
    record = restored_record(guarded.safety_file.record, height)
    guarded.safety_file.write(record)
    log.info("event=state_synced height=%d sign_from=%d replaced_height=%d", height, record.sign_from, held)
    return ledger, Guarded(guarded.safety_file, record.sign_from), {"mode": "state", "state_sync": f"restored at {height}"}


def _lower_committed_floor(guarded: Guarded) -> None:
    """Before the store's blocks are deleted for a restore: the safety file no longer says they are
    held (a crash then leaves an emptied store, not one that looks damaged), and still forbids signing
    at any height this node may have signed at."""
    guarded.safety_file.write(resync_record(guarded.safety_file))


def _blocks_instead(config: NodeConfig, genesis: Genesis, ledger: Ledger, guarded: Guarded, held: int,
                    reason: str) -> tuple[Ledger, Guarded, dict[str, str]]:
    """After a state sync that restored nothing: the node catches up by blocks from what its store holds."""
    if held and ledger.store.height() == held:
        log.info("event=state_sync_not_needed height=%d reason=%r", held, reason)
        return ledger, guarded, {"mode": "blocks", "state_sync": f"not needed: {reason}"}
    log.warning("event=state_sync_fallback reason=%r", reason)
    if ledger.store.height() != held:  # emptied for a restore that then failed
        try:
            ledger = Ledger(ledger.store, genesis)
        except StoreCorrupt as exc:
            raise damaged(config, str(exc), len(genesis.validators)) from None
        guarded = Guarded(guarded.safety_file, guarded.safety_file.record.sign_from)
    return ledger, guarded, {"mode": "blocks", "state_sync": f"fell back: {reason}"}


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
    policy = access_policy(config)
    crypto = NodeCrypto(key)
    with ExitStack() as stack:
        ledger = _open_ledger(config, genesis, stack)
        guarded = open_guarded(config, ledger.store, genesis)
        stack.callback(guarded.safety_file.close)
        metrics = Metrics()
        gate = AccessGate(policy, metrics)
        ledger, guarded, joined = await _state_synced(config, genesis, key, ledger, guarded, metrics)
        replica = _replica(config, genesis, crypto, ledger, guarded)
        rpc_sock = stack.enter_context(bind(config.rpc_listen, "rpc.listen"))
        p2p_sock = stack.enter_context(bind(config.p2p_listen, "p2p.listen"))
        metrics_sock = stack.enter_context(bind(config.metrics_listen, "metrics.listen"))
        metrics.chain_height.set(ledger.height)
        gauges = MembershipGauges(ledger, metrics)  # validators in force: what the alerts' quorum is computed from
        gauges.committed(ledger.height)
        metrics.mempool_txs_max.set(config.mempool_txs_max)
        outbox = PeerOutbox(ledger, metrics)
        running = trio.CancelScope()  # every task of the node: what damage found while running cancels
        watch = DamageWatch(config, len(ledger.members(ledger.height + 1).validators), stop=running.cancel)
        mempool = Mempool(config.mempool_txs_max)
        verifier = Verifier(ledger, mempool)
        # Next to the data directory, not in it: LevelDB's directory holds LevelDB's files only.
        txlog = TxLog(config.data_dir.with_name(config.data_dir.name + ".txlog"))
        recovered = txlog.recover()
        stack.callback(txlog.close)
        # Admission tells the consensus loop of pending transactions through its inbox, built before the
        # driver: the driver is given the gossip, which needs admission.
        inbox = Inbox(mempool, metrics)
        admission = Admission(genesis, ledger, mempool, verifier, inbox, txlog, node_key=crypto.public_key)
        gossip = TxGossip(outbox, admission, metrics)
        pipeline = CommitPipeline(ledger, mempool, replica.me, config.block_txs_max)
        fetcher = TxFetcher(outbox, pipeline.held_tx, genesis.chain_id)
        lookup = ChainLookup(ledger, admission)
        hub = Hub(lookup.block, lookup.tx, metrics)
        heights = HeightAnnouncer(ledger, outbox)
        snapshots = SnapshotFiles(snapshot_root(config.data_dir), config.snapshot_keep)
        writer = SnapshotWriter(ledger, snapshots, config.snapshot_interval_blocks, metrics)
        # The driver asks for catch-up through it; the syncer, built after the driver (it commits through
        # the driver), waits on it.
        sync_wanted = Wakeup()
        pruner = Pruner(ledger, config.retain_blocks, config.archive_dir) if config.retain_blocks else None
        consensus_watch = ConsensusWatch(now_ms)
        driver = Driver(replica, pipeline, mempool, inbox, metrics, outbox, guarded.safety_file, fetcher, gossip,
                        txlog, sync_wanted, watch=consensus_watch, on_committed=(
                            hub.publish, lambda height: heights.announce(), gauges.committed, writer.committed,
                            # The network is built below (its router needs the syncer, which needs the
                            # driver); it is looked up at the first commit, once it exists.
                            lambda height: network.follow(ledger.members(height + 1)),
                            *(() if pruner is None else (pruner.committed,))))
        syncer = Syncer(ledger, outbox, driver, sync_wanted, on_store_damaged=watch.report)
        metrics.peers_best_height.set_function(lambda: syncer.peers_height)
        storage_closed = trio.Event()
        status = NodeStatus(config, genesis, ledger, replica, outbox, syncer, storage_closed, joined)
        rpc = RpcService(ledger, driver, admission, lookup, metrics, status.status,
                         on_admitted=gossip.announce, on_store_damaged=watch.report, archive=config.archive_dir,
                         consensus=ConsensusMethods(ledger, replica, consensus_watch, outbox).methods())
        network = PeerNetwork(genesis.chain_id, key, ledger.members(ledger.height + 1), metrics, outbox,
                              handler=Router(syncer, gossip, fetcher, inbox, metrics,
                                             SnapshotServer(snapshots, outbox, metrics)).route,
                              on_connect=_greeter(heights, gossip))
        node = Node(status, driver)
        try:
            with running:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(verifier.run)
                    # Before the replica resumes (a block it sealed may hold them) and before peers' gossip.
                    await _readmit(admission, txlog, recovered)
                    nursery.start_soon(txlog.run)
                    await nursery.start(driver.run)
                    await nursery.start(network.serve, p2p_sock)
                    nursery.start_soon(syncer.run)
                    nursery.start_soon(gossip.run)
                    nursery.start_soon(writer.run)
                    if pruner is not None:
                        nursery.start_soon(pruner.run)
                    if guarded.sign_from == UNKNOWN:
                        reports = fault_tolerance(len(ledger.members(ledger.height + 1).validators)) + 1
                        nursery.start_soon(learn_sign_from, syncer, replica, guarded.safety_file, reports)
                    await nursery.start(partial(serve_http, RpcApp(rpc, gate), rpc_sock,
                                                websocket=EventSocket(hub, rpc, gate), tls=config.rpc_tls))
                    await nursery.start(partial(serve_http, OpsApp(metrics, status), metrics_sock,
                                                tls=config.metrics_tls))
                    log_access(config, policy)
                    log.info("event=node_started name=%s height=%d rpc=%s p2p=%s metrics=%s chain_id=%s",
                             config.name, ledger.height, config.rpc_listen, config.p2p_listen,
                             config.metrics_listen, genesis.chain_id)
                    task_status.started(node)
        except* StoreCorrupt as group:  # a read by the driver or the catch-up found damage
            raise watch.report(group.exceptions[0]) from None
        finally:
            storage_closed.set()
            guarded.safety_file.save_committed(ledger.height)  # a rollback while stopped is then seen
            log.info("event=node_stopped height=%d", ledger.height)
        if watch.found is not None:
            raise watch.found
