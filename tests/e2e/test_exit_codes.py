"""Exit status by class of failure (docs/client-protocol.md section 5.1), with real commands, and a
closed stdout that ends a command quietly."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from node.version import VERSION
from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, NodeProcess, alliance, free_base_port


def _status(result: subprocess.CompletedProcess[str], expected: int, message: str) -> None:
    assert result.returncode == expected, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("alliance: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr  # argparse also prints its usage line


def test_version() -> None:
    result = alliance("--version")
    assert result.stdout == f"alliance {VERSION}\n" and VERSION


def test_error_and_usage(tmp_path: Path) -> None:
    _status(alliance("run", "--home", str(tmp_path), check=False), 1, "node.toml does not exist")
    _status(alliance("verify-proof", str(tmp_path / "none.json"), check=False), 1, "does not exist")
    _status(alliance("status", "--no-such-option", check=False), 2, "unrecognized arguments")
    _status(alliance("notarize", str(tmp_path / "f"), "--proof", "p.json", "--no-wait", check=False), 2,
            "cannot go with --no-wait")


def test_node_unreachable() -> None:
    rpc = f"http://127.0.0.1:{free_base_port(1)}"
    _status(alliance("status", "--rpc", rpc, check=False), 3, "cannot reach node")
    _status(alliance("tx", "get", "k", "--rpc", rpc, check=False), 3, "cannot reach node")


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:27100", "http://127.0.0.1:port"])
def test_a_malformed_rpc_url_is_a_usage_error(url: str) -> None:
    for command in (["status"], ["tx", "get", "k"]):
        result = alliance(*command, "--rpc", url, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        [error] = [line for line in result.stderr.splitlines() if "error:" in line]
        assert "argument --rpc:" in error and "must look like http://HOST:PORT" in error, error


def test_a_node_that_never_answers_is_given_up_after_the_timeout() -> None:
    with socket.create_server(("127.0.0.1", free_base_port(1))) as silent:  # the kernel accepts; nobody answers
        rpc = f"http://127.0.0.1:{silent.getsockname()[1]}"
        for command in (["status"], ["tx", "get", "k"]):
            _status(alliance(*command, "--rpc", rpc, "--timeout", "0.5", check=False), 3, "no answer from node")
    for wrong in ("0", "-1", "nan", "soon"):
        result = alliance("status", "--timeout", wrong, check=False)
        assert result.returncode == 2 and "argument --timeout: " in result.stderr, result.stderr


@pytest.fixture
def proof(single: tuple[Path, NodeProcess], tmp_path: Path) -> Path:
    net, node = single
    document = tmp_path / "contract.pdf"
    document.write_bytes(b"%PDF contract")
    out = tmp_path / "contract.proof.json"
    alliance("notarize", str(document), "--proof", str(out), "--rpc", node.rpc_url, "--key", str(net / "client.key"))
    return out


def test_refused_not_found_and_verification_failed(single: tuple[Path, NodeProcess], proof: Path,
                                                   tmp_path: Path) -> None:
    net, node = single
    rpc = ["--rpc", node.rpc_url]
    stranger = tmp_path / "stranger.key"
    alliance("keygen", "--out", str(stranger))
    _status(alliance("tx", "put", "k", "v", *rpc, "--key", str(stranger), check=False), 4, "code -32002")
    document = tmp_path / "contract.pdf"
    _status(alliance("notarize", str(document), *rpc, "--key", str(net / "client.key"), check=False), 4,
            "committed with code 4")

    _status(alliance("tx", "get", "never-set", *rpc, check=False), 5, "no such key")
    other = tmp_path / "other.pdf"
    other.write_bytes(b"never notarized")
    _status(alliance("lookup", str(other), *rpc, check=False), 5, "is not recorded")

    genesis = ["--genesis", str(net / "genesis.toml")]
    assert alliance("verify-proof", str(proof), *genesis).returncode == 0
    _status(alliance("lookup", str(other), "--proof", str(proof), *genesis, check=False), 6, "does not show")
    tampered = json.loads(proof.read_text())
    tampered["header"]["time"] += 1
    proof.write_text(json.dumps(tampered))
    _status(alliance("verify-proof", str(proof), *genesis, check=False), 6, "proof invalid: ")


def _with_stdout_closed(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs alliance with a stdout whose reader has gone before anything is written, as `| head -c0`."""
    process = subprocess.Popen([*ALLIANCE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=DEADLINE_S)
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def test_a_closed_stdout_is_quiet(single: tuple[Path, NodeProcess], proof: Path) -> None:
    net, node = single
    for args in (["status", "--rpc", node.rpc_url], ["bench", "--help"], ["--version"],
                 ["verify-proof", str(proof), "--genesis", str(net / "genesis.toml")]):
        result = _with_stdout_closed(*args)
        assert result.returncode == 0 and result.stderr == "", (args, result.stderr)
    result = _with_stdout_closed("tx", "get", "never-set", "--rpc", node.rpc_url)  # a failure keeps its status
    assert result.returncode == 5 and "Traceback" not in result.stderr, result.stderr


def test_a_full_disk_on_stdout_is_one_error_line(single: tuple[Path, NodeProcess]) -> None:
    _, node = single
    for args in (["status", "--rpc", node.rpc_url], ["--version"]):
        with open("/dev/full", "w") as full:
            result = subprocess.run([*ALLIANCE, *args], stdout=full, stderr=subprocess.PIPE, text=True,
                                    timeout=DEADLINE_S)
        _status(result, 1, "cannot write the output: No space left on device")
