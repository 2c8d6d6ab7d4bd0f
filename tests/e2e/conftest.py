"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nodeproc import NodeProcess, make_testnet, node_process


@pytest.fixture
def single(tmp_path: Path) -> Iterator[tuple[Path, NodeProcess]]:
    """A one-validator testnet in tmp_path with its node running; stopped afterwards if still up."""
    net, base = make_testnet(tmp_path)
    node = node_process(net, base)
    node.start()
    yield net, node
    if node.process is not None and node.process.poll() is None:
        node.stop()
