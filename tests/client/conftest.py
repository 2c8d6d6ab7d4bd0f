"""One real `alliance run` validator shared by the client tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.nodeproc import NodeProcess, make_testnet, node_process


@dataclass
class Chain:
    net: Path
    node: NodeProcess

    @property
    def url(self) -> str:
        return self.node.rpc_url

    @property
    def key_path(self) -> Path:
        return self.net / "client.key"

    @property
    def genesis_path(self) -> Path:
        return self.net / "genesis.toml"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    net, base = make_testnet(tmp_path_factory.mktemp("client"))
    node = node_process(net, base)
    node.start()
    try:
        yield Chain(net, node)
    finally:
        node.stop()
