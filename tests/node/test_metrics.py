"""The registry's series: exported from the start, and no label value the node can give left out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from node.api.rpc import RpcService
from node.ops.metrics import MESSAGE_DROP_REASONS, RPC_METHODS, RPC_NON_METHODS, TX_REJECTION_REASONS, Metrics
from node.version import VERSION

ROOT = Path(__file__).resolve().parents[2]


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = Metrics().render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def source_labels(pattern: str, *dirs: str) -> set[str]:
    found: set[str] = set()
    for d in dirs:
        for path in [ROOT / d] if (ROOT / d).is_file() else (ROOT / d).rglob("*.py"):
            found |= set(re.findall(pattern, path.read_text()))
    return found


def test_build_info_and_process_series() -> None:
    values = samples()
    build = [labels for (name, labels) in values if name == "alliance_build_info"]
    assert len(build) == 1 and dict(build[0])["version"] == VERSION and dict(build[0])["python"]
    assert values[("alliance_build_info", build[0])] == 1
    names = {name for name, _ in values}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names


def test_every_labelled_counter_is_at_zero_from_the_start() -> None:
    values = samples()
    for reason in TX_REJECTION_REASONS:
        assert values[("alliance_txs_rejected_total", (("reason", reason),))] == 0
    for method in RPC_METHODS:
        for outcome in ("ok", "error"):
            assert values[("alliance_rpc_requests_total", (("method", method), ("outcome", outcome)))] == 0
    for method in RPC_NON_METHODS:
        assert values[("alliance_rpc_requests_total", (("method", method), ("outcome", "error")))] == 0
    for reason in MESSAGE_DROP_REASONS:
        assert values[("alliance_consensus_messages_dropped_total", (("reason", reason),))] == 0


def test_every_rpc_method_is_listed() -> None:
    service: Any = RpcService(None, None, None, None, Metrics(), dict, None, None)  # type: ignore[arg-type]
    assert set(service.methods) | {"send_tx", "subscribe", "unsubscribe", "consensus_state"} == set(RPC_METHODS)


def test_every_rejection_reason_the_node_gives_is_listed() -> None:
    given = source_labels(r'(?:TxError|CodecError|_refused)\(\s*"([a-z_]+)"', "node")
    given |= source_labels(r'Refused\(\w+, "([a-z_]+)"', "node")
    given |= source_labels(r'txs_rejected\.labels\("([a-z_]+)"\)', "node")
    assert "bad_signature" in given and "mempool_full" in given  # the patterns still find something
    assert given <= set(TX_REJECTION_REASONS)


def test_every_drop_reason_the_node_gives_is_listed() -> None:
    given = source_labels(r'dropped\["([a-z_]+)"\]', "consensus")
    given |= source_labels(r'return "([a-z_]+)"', "consensus/heights.py", "consensus/future_messages.py")
    given |= source_labels(r'messages_dropped\.labels\("([a-z_]+)"\)', "node")
    assert "old" in given and "sender_mismatch" in given
    assert given <= set(MESSAGE_DROP_REASONS)
