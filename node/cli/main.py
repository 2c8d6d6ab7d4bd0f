"""Entry point of the `alliance` console script."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator

from node.chain.proof import ProofInvalid
from node.cli import (
    archive_cmd, bench, check, client_cmds, consensus_cmd, genesis_cmd, gov_cmd, history_cmd, localnet, run, setup,
    snapshot_cmd, token_cmd,
)
from node.client import BadAnswer, NodeUnreachable, NotFound, RpcError
from node.errors import AllianceError, ExitCode
from node.ops.logs import stderr_is_journal
from node.version import VERSION
from storage.kv import StorageError

Handler = Callable[[argparse.Namespace], None]


def _command(sub: argparse._SubParsersAction, name: str, handler: Handler, help_text: str,  # type: ignore[type-arg]
             description: str = "") -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description or help_text)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alliance", description="A node for permissioned consortium blockchains (PBFT consensus, LevelDB)."
    )
    parser.add_argument("--version", action="version", version=f"alliance {VERSION}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    p = _command(sub, "keygen", setup.cmd_keygen, "write a new Ed25519 private key (PKCS#8 PEM, mode 0600)",
                 "Writes a new private key in the format of `openssl genpkey -algorithm ed25519` and prints "
                 "its public key (64 hex characters).")
    p.add_argument("--out", required=True, help="file to create (never overwritten)")

    p = _command(sub, "testnet", setup.cmd_testnet, "write a ready local consortium to a directory",
                 "Writes DIR/genesis.toml, DIR/node<i>/ (node.toml, node.key, genesis.toml), DIR/client.key and "
                 "DIR/admin0.key .. DIR/admin<K-1>.key, the admins (admin_threshold K // 2 + 1). "
                 "Node i listens on 127.0.0.1: RPC P+10i, peers P+10i+1, metrics P+10i+2.")
    p.add_argument("--nodes", type=int, required=True, help="number of validator nodes")
    p.add_argument("--out", required=True, help="directory to write (must not hold a testnet already)")
    p.add_argument("--chain-id", default=setup.DEFAULT_CHAIN_ID, help="chain id (default: %(default)s)")
    p.add_argument("--base-port", type=int, default=setup.DEFAULT_BASE_PORT, help="first port (default: %(default)s)")
    p.add_argument("--admins", type=int, default=1, metavar="K", help="number of admins (default: %(default)s)")

    p = _command(sub, "init", setup.cmd_init, "prepare the home of a node that joins a running chain",
                 "Writes DIR/node.toml, DIR/genesis.toml (a copy of FILE) and DIR/node.key (a new key, or a copy of "
                 "--key, mode 0600) and prints the node's public key, for the admins to propose it. The node listens "
                 "on 127.0.0.1: RPC P, peers P+1, metrics P+2; it finds its peers from the genesis and the chain.")
    p.add_argument("--out", required=True, metavar="DIR", help="directory of the node home (must not hold one already)")
    p.add_argument("--genesis", required=True, metavar="FILE", help="the chain's genesis file")
    p.add_argument("--key", metavar="FILE", help="use this private key (mode 0600) instead of a new one")
    p.add_argument("--base-port", type=int, default=setup.DEFAULT_BASE_PORT, metavar="P",
                   help="first port (default: %(default)s)")

    p = _command(sub, "run", run.cmd_run, "run one node in the foreground until SIGTERM or SIGINT",
                 "Runs the node configured by DIR/node.toml; see docs/configuration.md.")
    p.add_argument("--home", required=True, help="node directory holding node.toml")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override log_level")
    p.add_argument("--profile", metavar="FILE",
                   help="run the node under cProfile and write its pstats to FILE on a clean exit")

    check.add_parsers(sub, _command)
    snapshot_cmd.add_parser(sub, _command)
    archive_cmd.add_parser(sub, _command)
    token_cmd.add_parser(sub, _command)

    p = _command(sub, "localnet", localnet.cmd_localnet, "run a local testnet as separate processes with a live view",
                 "Creates a testnet in --home if there is none, starts every node as its own process, shows "
                 "a row per node (height, view, peers, mempool, tx/s, blocks/s, from its /metrics) each second; "
                 "Ctrl-C, SIGTERM, SIGHUP or the end of its parent stops them all.")
    p.add_argument("--nodes", type=int, default=4, help="number of nodes (default: %(default)s)")
    p.add_argument("--home", default="localnet", help="directory of the testnet (default: ./%(default)s)")
    p.add_argument("--base-port", type=int, default=setup.DEFAULT_BASE_PORT, help="first port (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="delete the testnet in --home first and start a new chain")
    p.add_argument("--load", type=float, default=0, help="submit this many demo transactions per second")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")

    p = _command(sub, "bench", bench.cmd_bench, "benchmark a local consortium; prints one JSON object on its last line",
                 "Starts --nodes `alliance run` processes on a fresh testnet, waits until they are all connected, "
                 "signs kv puts before the clock starts, sends them over JSON-RPC from a separate load process at "
                 "--rate tx/s (or as fast as possible) for --duration seconds, counts commits from the blocks and "
                 "prints one JSON object (fields: docs/performance.md). Progress goes to stderr.")
    p.add_argument("--nodes", type=int, default=4, help="number of validator nodes (default: %(default)s)")
    p.add_argument("--duration", type=float,
                   help=f"seconds of load, the measured window (default: {bench.DEFAULT_DURATION_S:g})")
    p.add_argument("--rate", type=float, default=0, help="offered transactions per second; 0 (the default): "
                   f"as fast as possible, with up to {bench.RATE_CEILING} tx/s x duration pre-signed "
                   f"({bench.RATE_CEILING_ONE_NODE} with --nodes 1)")
    p.add_argument("--txs", type=int, help="pre-sign at most this many transactions")
    p.add_argument("--batch", type=int, help=f"transactions per JSON-RPC request (default: {bench.BATCH_FAST} as fast "
                   f"as possible, one batch per {bench.BATCH_INTERVAL_S * 1000:g} ms at a fixed rate)")
    p.add_argument("--connections", type=int, default=2, help="keep-alive connections per node (default: %(default)s)")
    p.add_argument("--signers", type=int, help="processes that sign before the start (default: one per CPU)")
    p.add_argument("--home", help="directory of the testnet, kept afterwards (default: a temporary one, deleted)")
    p.add_argument("--fresh", action="store_true", help="delete the testnet in --home first and start a new chain")
    p.add_argument("--base-port", type=int, default=bench.DEFAULT_BASE_PORT, help="first port (default: %(default)s)")
    p.add_argument("--poll-ms", type=float, default=10, help="with --catch-up, how often the restarted node "
                   "is asked for its height, in milliseconds (default: %(default)g)")
    p.add_argument("--catch-up", type=int, metavar="TXS", help="measure catch-up instead of a fixed window: stop "
                   f"node{bench.CATCH_UP_NODE}, send exactly TXS transactions to the others, time how long the chain "
                   "takes to commit them, then restart the node and time how long it takes to reach the others' "
                   "height (takes no --duration or --txs)")
    p.add_argument("--join", type=int, metavar="TXS", help="as --catch-up TXS, the nodes writing a snapshot "
                   "twice over the chain (every TXS/2000 blocks, at least 5); then start the node from an empty data directory and time how long it takes to reach "
                   "the others' height by state sync, then by blocks from the genesis (join_* figures)")
    p.add_argument("--join-runs", type=int, default=1, metavar="N", help="with --join, time each way of joining N "
                   "times, in turn, and report the median (default: %(default)s)")
    p.add_argument("--profile", metavar="DIR", help="run each node under cProfile; write DIR/node<i>.pstats and "
                   "print each node's top functions to stderr")
    p.add_argument("--profile-sort", choices=["tottime", "cumtime"], default="tottime",
                   help="order of the printed profile rows (default: %(default)s)")
    p.add_argument("--profile-top", type=int, default=15, help="profile rows printed per node (default: %(default)s)")

    p = _command(sub, "status", client_cmds.cmd_status, "print a node's status")
    client_cmds.add_client_options(p)
    p = _command(sub, "consensus", consensus_cmd.cmd_consensus,
                 "print what a node sees of the round it is deciding, and what that round still lacks")
    client_cmds.add_client_options(p)
    p.add_argument("--json", action="store_true", help="print the consensus_state answer as JSON")

    tx = _command(sub, "tx", lambda a: tx.print_help(), "key-value transactions: put, get, delete")
    tx_sub = tx.add_subparsers(title="tx commands", metavar="COMMAND", required=True)
    p = _command(tx_sub, "put", client_cmds.cmd_tx_put, "set KEY to VALUE (UTF-8), waiting for the commit")
    p.add_argument("key_name", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    client_cmds.add_client_options(p, signing=True)
    p = _command(tx_sub, "get", client_cmds.cmd_tx_get, "read KEY: value, owner and height")
    p.add_argument("key_name", metavar="KEY")
    p.add_argument("--prove", metavar="OUT.json",
                   help="also fetch KEY's state proof (present or absent) and write it to OUT.json")
    p.add_argument("--compact", action="store_true",
                   help="with --prove: check the proof against the genesis and write it in its compact binary "
                        "form (under 2 KB; docs/proofs.md), which `alliance verify-proof` reads too")
    client_cmds.add_genesis_option(p, "with --compact: the genesis file of the chain")
    client_cmds.add_client_options(p)
    p = _command(tx_sub, "delete", client_cmds.cmd_tx_delete, "delete KEY (its owner only)")
    p.add_argument("key_name", metavar="KEY")
    client_cmds.add_client_options(p, signing=True)

    p = _command(sub, "notarize", client_cmds.cmd_notarize, "record the SHA-256 of FILE on the chain",
                 "Records the SHA-256 of FILE, waits for the commit and prints the result; with --proof, also "
                 "fetches the transaction's proof and writes it to OUT.json, for `alliance verify-proof` or "
                 "`alliance lookup --proof` (docs/proofs.md).")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--meta", help="a note stored with the digest (at most 1 KiB)")
    p.add_argument("--proof", metavar="OUT.json", help="write the proof of the committed record to OUT.json")
    client_cmds.add_client_options(p, signing=True)

    genesis_cmd.add_parser(sub)
    gov_cmd.add_parser(sub)

    p = _command(sub, "lookup", client_cmds.cmd_lookup, "show who recorded the SHA-256 of FILE, and when",
                 "Shows the notary record of FILE's SHA-256. With --verify, also fetches the state proof of the "
                 "record (or of its absence) and the proof of the recording transaction and checks them against the "
                 "genesis; with --proof, checks a saved proof without "
                 "contacting any node.")
    p.add_argument("file", metavar="FILE")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--verify", action="store_true", help="check the record with its proof, against the genesis")
    how.add_argument("--proof", metavar="PROOF.json", help="check FILE against this proof only, offline")
    how.add_argument("--history", action="store_true", help="list every committed transaction that recorded "
                     "FILE's digest (or tried to), newest first")
    history_cmd.add_history_options(p)
    client_cmds.add_genesis_option(p, "genesis file to check the proof against")
    client_cmds.add_client_options(p)

    p = _command(sub, "history", client_cmds.cmd_history, "list the committed transactions that touched a record",
                 "Lists every committed transaction that touched KEY (a kv key, or with --family notary a "
                 "digest in hex), newest first, with height, index, tx_hash, sender, op and receipt code "
                 "(code 0: it took effect); one page, or all of them with --all.")
    p.add_argument("key_name", metavar="KEY")
    p.add_argument("--family", choices=["kv", "notary"], default="kv", help="the record's family (default: kv)")
    history_cmd.add_history_options(p)
    client_cmds.add_client_options(p)

    p = _command(sub, "verify-proof", client_cmds.cmd_verify_proof, "check a transaction or state proof offline",
                 "Checks PROOF.json (from get_proof, query with prove, `alliance notarize --proof` or "
                 "`alliance tx get --prove`, or a compact state proof from `--prove --compact`) against the genesis, with no "
                 "node involved; prints what it proves and exits 0 only if it holds (docs/proofs.md).")
    p.add_argument("proof_file", metavar="PROOF.json")
    client_cmds.add_genesis_option(p, "genesis file of the chain")
    return parser


class OutputFailed(AllianceError):
    """stdout cannot be written: a full disk, an I/O error."""


@contextlib.contextmanager
def _output_errors() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        _quiet_stdout()  # what is still buffered goes nowhere, and not as a second error at exit
        raise OutputFailed(f"cannot write the output: {exc.strerror or exc}") from None


class _Stdout(io.TextIOWrapper):
    """stdout whose write failures are one OutputFailed; a closed pipe stays a (quiet) BrokenPipeError."""

    def write(self, text: str) -> int:
        with _output_errors():
            return super().write(text)

    def flush(self) -> None:
        with _output_errors():
            super().flush()


def main(argv: list[str] | None = None) -> None:
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper):
        sys.stdout = _Stdout(out.detach(), out.encoding, out.errors, line_buffering=out.line_buffering)
    status = _run(argv)
    try:
        sys.stdout.flush()  # a closed pipe or a full disk shows here, not as an error at exit
    except BrokenPipeError:
        _quiet_stdout()
    except OutputFailed as exc:
        _report(exc)
        status = status or ExitCode.ERROR
    sys.exit(status)


def _run(argv: list[str] | None) -> int | str | None:
    """The command's exit status; a mistake of the user's is reported in one line on stderr."""
    try:
        args = build_parser().parse_args(argv)
        args.handler(args)
    except SystemExit as exc:  # argparse: --help, --version, and a wrong command line (2)
        return exc.code
    except BrokenPipeError:
        _quiet_stdout()
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        user_error = _user_error(exc)
        if user_error is None:
            raise
        _report(user_error)
        return exit_code(user_error)
    return ExitCode.OK


def _quiet_stdout() -> None:
    """The reader of stdout went away (`| head`): nothing more to say, and no error at exit either."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


USER_ERRORS = (AllianceError, StorageError, RpcError, ProofInvalid)


def _user_error(exc: BaseException) -> BaseException | None:
    """The first mistake of the user's, or answer of the node's, inside (nested) exception groups."""
    if isinstance(exc, USER_ERRORS):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _user_error(inner)
            if found is not None:
                return found
    return None


def exit_code(exc: BaseException) -> ExitCode:
    """The exit status of a failure, by class (docs/client-protocol.md, section 5)."""
    if isinstance(exc, NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(exc, RpcError):
        return ExitCode.REFUSED
    if isinstance(exc, (NodeUnreachable, BadAnswer)):
        return ExitCode.UNREACHABLE
    if isinstance(exc, ProofInvalid):
        return ExitCode.VERIFICATION_FAILED
    if isinstance(exc, AllianceError):
        return exc.exit_code
    return ExitCode.ERROR


def _message(exc: BaseException) -> str:
    if isinstance(exc, ProofInvalid):
        return f"proof invalid: {exc.reason}"
    if isinstance(exc, RpcError):
        detail = f" ({exc.data['reason']})" if isinstance(exc.data, dict) and "reason" in exc.data else ""
        return f"error: node refused: {exc.message}{detail} [code {exc.code}]"
    return f"error: {exc}"


def _report(exc: BaseException) -> None:
    priority = "<3>" if stderr_is_journal() else ""  # under systemd, the journal files it as an error
    with contextlib.suppress(BrokenPipeError):
        print(f"{priority}alliance: {_message(exc)}", file=sys.stderr)


if __name__ == "__main__":
    main()
