"""Client commands: status, tx put/get, notarize, lookup, verify-proof (transaction and state proofs)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from node.chain.compact_proof import compact_state_proof, is_compact, verify_compact_state_proof
from node.chain.genesis import load_genesis
from node.chain.proof import ProofInvalid, VerifiedProof, verify_proof
from node.chain.state_proof import VerifiedState, is_state_proof, verify_state_proof
from node.chain.tx import to_json
from node.cli.history_cmd import print_history
from node.client import Client, NotFound, RpcError, file_digest
from node.client.sync import split_url
from node.errors import AllianceError, ExitCode, VerificationFailed
from node.keys import load_key


DEFAULT_TIMEOUT_S = 10.0
COMMIT_WAIT_MAX_S = 60.0  # the longest send_tx waits for a commit (docs/client-protocol.md section 3)
COMMIT_MARGIN_S = 5.0  # for the node's answer once its commit wait is over


class UsageError(AllianceError):
    """Options that do not go together."""

    exit_code = ExitCode.USAGE


class Absent(AllianceError):
    """The node holds no such key or notary record."""

    exit_code = ExitCode.NOT_FOUND


class TxFailed(AllianceError):
    """The transaction committed, with a failure code: the chain refused what it asked."""

    exit_code = ExitCode.REFUSED


def rpc_url(text: str) -> str:
    """An --rpc value checked on the command line, so that a malformed one is a usage error (exit 2)."""
    try:
        split_url(text)
    except AllianceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def add_client_options(parser: argparse.ArgumentParser, signing: bool = False) -> None:
    parser.add_argument("--rpc", type=rpc_url, default=os.environ.get("ALLIANCE_RPC", "http://127.0.0.1:26600"),
                        help="node RPC URL (default: $ALLIANCE_RPC or http://127.0.0.1:26600)")
    parser.add_argument("--token", default=os.environ.get("ALLIANCE_TOKEN"),
                        help="bearer token for a node with access control (default: $ALLIANCE_TOKEN)")
    parser.add_argument("--ca", default=os.environ.get("ALLIANCE_CA"), metavar="FILE",
                        help="CA certificate (PEM) of an https node (default: $ALLIANCE_CA, else the system's CAs)")
    parser.add_argument("--client-cert", metavar="FILE", help="client certificate (PEM), for a node that asks for one")
    parser.add_argument("--client-key", metavar="FILE", help="key of --client-cert, if not in the same file")
    commit = f"; the commit is waited for as long (at most 60 s), plus {COMMIT_MARGIN_S:g} s" if signing else ""
    parser.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"seconds to wait for each answer of the node before giving up, exit 3{commit} "
                        "(default: %(default)g)")
    if signing:
        parser.add_argument("--key", default=os.environ.get("ALLIANCE_KEY", "client.key"),
                            help="client private key file (default: $ALLIANCE_KEY or ./client.key)")
        wait = parser.add_mutually_exclusive_group()
        wait.add_argument("--wait", action="store_true", help="wait for the commit (the default)")
        wait.add_argument("--no-wait", action="store_true", help="return once accepted, without waiting for commit")


def connect(args: argparse.Namespace, timeout_s: float, key: SigningKey | None = None) -> Client:
    """A client of --rpc with the command line's token and TLS files."""
    return Client(args.rpc, timeout_s=timeout_s, key=key, token=args.token, ca_file=args.ca,
                  client_cert=args.client_cert, client_key=args.client_key)


def _client(args: argparse.Namespace) -> Client:
    """A client whose every request gives up after --timeout, plus the node's commit wait if there is one."""
    waits = hasattr(args, "no_wait") and not args.no_wait
    return connect(args, args.timeout + (COMMIT_MARGIN_S if waits else 0))


def add_genesis_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--genesis", help=f"{help_text} (default: $ALLIANCE_GENESIS or ./genesis.toml)")


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _submit(args: argparse.Namespace, client: Client, family: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
    """Signs and submits; a transaction committed with a failure code is printed, then raised."""
    key = load_key(Path(args.key))
    result = client.submit(key, family, op, params, wait=not args.no_wait,
                           timeout_s=min(args.timeout, COMMIT_WAIT_MAX_S))
    if result.get("code") not in (None, 0):
        _print(result)
        raise TxFailed(f"transaction committed with code {result['code']}: {result['log']}")
    return result


def cmd_status(args: argparse.Namespace) -> None:
    _print(_client(args).status())


def cmd_tx_put(args: argparse.Namespace) -> None:
    _print(_submit(args, _client(args), "kv", "put", {"key": args.key_name, "value": args.value.encode()}))


def cmd_tx_delete(args: argparse.Namespace) -> None:
    _print(_submit(args, _client(args), "kv", "delete", {"key": args.key_name}))


def cmd_tx_get(args: argparse.Namespace) -> None:
    client = _client(args)
    if args.compact and not args.prove:
        raise UsageError("--compact is for --prove")
    if args.genesis and not args.compact:
        raise UsageError("--genesis is for --compact")
    if args.prove:
        _check_writable(Path(args.prove))
        proof = client.query("kv", args.key_name, prove=True)
        if args.compact:  # the indices of its signers need the genesis validators; it is checked against them
            try:
                write_atomic(Path(args.prove), compact_state_proof(proof, *genesis_keys(args.genesis)))
            except ProofInvalid as exc:
                raise VerificationFailed(f"the node at {args.rpc} answered a proof that does not hold: {exc}") from None
        else:
            write_atomic(Path(args.prove), json.dumps(proof, indent=2) + "\n")
        entry = proof.get("result")
    else:
        entry = client.query("kv", args.key_name)
    if entry is None:
        raise Absent(f"no such key {args.key_name!r}")
    value = bytes.fromhex(entry["value"])
    try:
        entry["value_text"] = value.decode()
    except UnicodeDecodeError:
        pass
    _print(entry)


# ---- notarize and lookup: the evidence flow ------------------------------------------------------


def cmd_notarize(args: argparse.Namespace) -> None:
    if args.proof and args.no_wait:
        raise UsageError("--proof needs the commit, so it cannot go with --no-wait")
    digest = file_digest(Path(args.file))
    if args.proof:
        _check_writable(Path(args.proof))  # before the digest is recorded, which cannot be done twice
    params: dict[str, Any] = {"digest": digest}
    if args.meta:
        params["meta"] = args.meta
    client = _client(args)
    result = _submit(args, client, "notary", "record", params)
    if args.proof:
        try:
            proof = client.call("get_proof", tx_hash=result["tx_hash"])
            write_atomic(Path(args.proof), json.dumps(proof, indent=2) + "\n")
        except (AllianceError, RpcError) as exc:
            _print(result)  # the record stands: say which transaction holds it, so its proof can be fetched later
            raise AllianceError(f"recorded in tx {result['tx_hash']}, but its proof was not saved: {exc}; "
                                "fetch it with the get_proof method") from None
        result = {**result, "proof": args.proof}
    _print(result)


def cmd_history(args: argparse.Namespace) -> None:
    print_history(_client(args), args.family, args.key_name, args)


def cmd_lookup(args: argparse.Namespace) -> None:
    if args.genesis and not (args.verify or args.proof):
        raise UsageError("--genesis is for --verify or --proof")
    if (args.limit is not None or args.before_height is not None or args.all) and not args.history:
        raise UsageError("--limit, --before-height and --all are for --history")
    digest = file_digest(Path(args.file))
    if args.history:
        print_history(_client(args), "notary", digest.hex(), args)
        return
    if args.proof:
        verified = _verify_file(read_proof(Path(args.proof)), args)
        _print(recorded_file(verified, digest, args.file))
        return
    client = _client(args)
    if args.verify:
        state = _verify_state_file(client.query("notary", digest.hex(), prove=True), args)
        record = state.result
        if record is None:
            raise Absent(f"{args.file} (sha256 {digest.hex()}) is not recorded, proved absent at height {state.height}")
    else:
        record = client.query("notary", digest.hex())
    if record is None:
        raise Absent(f"{args.file} (sha256 {digest.hex()}) is not recorded")
    if not args.verify:
        _print({"digest": digest.hex(), **record})
        return
    if not isinstance(record, dict) or not isinstance(record.get("tx_hash"), str):
        raise AllianceError(f"the node at {args.rpc} answered a malformed notary record: {record!r:.200}")
    try:
        tx_proof = client.call("get_proof", tx_hash=record["tx_hash"])
    except NotFound as exc:  # a pruned node, or one started from a snapshot: the state proof stands alone
        _print({"digest": digest.hex(), **record, "verified": True, "proved_at_height": state.height,
                "tx_proof": f"not held by the node at {args.rpc}: {exc}"})
        return
    verified = _verify_file(tx_proof, args)
    evidence = recorded_file(verified, digest, args.file)
    differing = [k for k in ("recorder", "height", "time", "tx_hash", "meta") if record.get(k) != evidence[k]]
    if differing:
        raise VerificationFailed(f"the node's record of {args.file} disagrees with its proof on {', '.join(differing)}")
    _print({**evidence, "proved_at_height": state.height})


def _verify_file(proof: Any, args: argparse.Namespace) -> VerifiedProof:
    chain_id, validators = genesis_keys(args.genesis)
    return verify_proof(proof, chain_id, validators)


def _verify_state_file(proof: Any, args: argparse.Namespace) -> VerifiedState:
    """A JSON state proof, or a compact one's bytes (read_proof), checked against the genesis."""
    chain_id, validators = genesis_keys(args.genesis)
    verify = verify_compact_state_proof if isinstance(proof, bytes) else verify_state_proof
    return verify(proof, chain_id, validators)


def recorded_file(verified: VerifiedProof, digest: bytes, name: str) -> dict[str, Any]:
    """The notary record a verified proof establishes for the file `name` of SHA-256 `digest`."""
    tx = verified.tx
    failure = ""
    if (tx.family, tx.op) != ("notary", "record"):
        failure = f"it proves a {tx.family}.{tx.op} transaction, not notary.record"
    elif tx.args.get("digest") != digest:
        failure = f"it records another digest, not sha256 {digest.hex()}"
    elif verified.code != 0:
        failure = f"its notary.record failed with code {verified.code}: {verified.log}"
    if failure:
        raise VerificationFailed(f"the proof does not show {name} recorded: {failure}")
    return {
        "digest": digest.hex(), "recorder": tx.sender.hex(), "height": verified.height, "time": verified.time_ms,
        "tx_hash": tx.hash.hex(), "meta": tx.args.get("meta", ""), "verified": True,
        "block_hash": verified.block_hash.hex(),
    }


# ---- verify-proof ---------------------------------------------------------------------------------


def cmd_verify_proof(args: argparse.Namespace) -> None:
    proof = read_proof(Path(args.proof_file))
    if isinstance(proof, bytes) or is_state_proof(proof):
        _print(state_summary(_verify_state_file(proof, args), args))
    else:
        _print(proof_summary(_verify_file(proof, args)))


def state_summary(verified: VerifiedState, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "family": verified.family, "key": verified.key, "present": verified.present,
        "result": verified.result, "height": verified.height, "block_hash": verified.block_hash.hex(),
        "time": verified.time_ms, "time_utc": _utc(verified.time_ms), "chain_id": verified.header.chain_id,
        "genesis": str(args.genesis or os.environ.get("ALLIANCE_GENESIS") or "genesis.toml"),
        "signatures": verified.signatures, "quorum": verified.quorum,
        "validators": len(verified.validators), "validator_changes": verified.validator_changes,
    }


def proof_summary(verified: VerifiedProof) -> dict[str, Any]:
    tx = verified.tx
    return {
        "tx_hash": tx.hash.hex(), "chain_id": tx.chain_id, "height": verified.height, "index": verified.index,
        "block_hash": verified.block_hash.hex(), "time": verified.time_ms, "time_utc": _utc(verified.time_ms),
        "sender": tx.sender.hex(), "family": tx.family, "op": tx.op, "args": to_json(tx.args),
        "code": verified.code, "log": verified.log,
        "signatures": verified.signatures, "quorum": verified.quorum,
        "validators": len(verified.validators), "validator_changes": verified.validator_changes,
    }


def _utc(time_ms: int) -> str:
    try:
        return datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        return "out of range"


def read_proof(path: Path) -> Any:
    """A JSON proof, decoded; a compact state proof's bytes as they are."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AllianceError(f"proof file {path} does not exist") from None
    except OSError as exc:
        raise AllianceError(f"cannot read proof file {path}: {exc}") from None
    if is_compact(data):
        return data
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise AllianceError(f"cannot read proof file {path}: neither JSON nor a compact proof ({exc})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise AllianceError(f"proof file {path} is not valid JSON: {detail}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a repeated key: JSON would let a later copy silently win."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("an object repeats a key")
    return obj


def genesis_keys(option: str | None) -> tuple[str, list[bytes]]:
    """The chain id and validator keys of the genesis file given, or of the default one."""
    path = Path(option or os.environ.get("ALLIANCE_GENESIS") or "genesis.toml")
    genesis = load_genesis(path)
    return genesis.chain_id, [m.pubkey for m in genesis.validators]


def _check_writable(path: Path) -> None:
    directory = path.parent
    if path.is_dir() or not directory.is_dir() or not os.access(directory, os.W_OK):
        raise AllianceError(f"cannot write {path}: not a file in a writable directory")


def write_atomic(path: Path, text: str | bytes) -> None:
    """Writes `text` to `path` so that it holds either the old content or all of the new, never a part."""
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise AllianceError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise AllianceError(f"cannot write {path}: {exc.strerror}") from None
