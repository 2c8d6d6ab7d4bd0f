"""The sans-I/O core shared by Client and AsyncClient.

Every operation is a generator (an `Op`): it yields a JSON-RPC payload to post, receives the node's
decoded JSON answer, and returns a typed result. The sync and async clients only move payloads, so
requests, signing and decoding are written once, here.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nacl.signing import SigningKey, VerifyKey

from node import keys
from node.client.errors import BadAnswer, InvalidInput, RpcError, rpc_error
from node.client.types import (
    Block, History, KvEntry, Members, NotaryRecord, ProposalInfo, Status, TxInfo, block_from, history_from,
    kv_entry_from, members_from,
    notary_record_from, proposal_from, status_from, tx_body_from, tx_hash_from, tx_info_from,
)
from node.chain.membership import ChangeMalformed, parse_change
from node.chain.tx import NONCE_MAX, Transaction, sign_tx, tx_json

if TYPE_CHECKING:
    from node.client.proofs import VerifiedProof

T = TypeVar("T")
Op = Generator[Any, Any, T]
FILE_CHUNK = 1 << 20


# ---- keys, digests, transactions (no node needed) -----------------------------------------


def generate_key() -> SigningKey:
    """A new random Ed25519 client key."""
    return SigningKey.generate()


def load_key(path: str | Path) -> SigningKey:
    """Reads a PKCS#8 PEM key file (refused if group or others can read it)."""
    return keys.load_key(Path(path))


def save_key(path: str | Path, key: SigningKey) -> None:
    """Writes `key` to a new file with mode 0600 (refuses to overwrite)."""
    keys.write_key(Path(path), key)


def public_key_hex(key: SigningKey | VerifyKey) -> str:
    """The 64-hex-character public key, as genesis files and the node show it."""
    return keys.pubkey_hex(key)


def file_digest(path: str | Path) -> bytes:
    """SHA-256 of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(FILE_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    return digest.digest()


def hash_hex(value: str | bytes, what: str = "hash") -> str:
    """A 32-byte hash as 64 lowercase hex characters, from hex or bytes."""
    if isinstance(value, bytes):
        if len(value) != 32:
            raise InvalidInput(f"{what} must be 32 bytes, got {len(value)}")
        return value.hex()
    try:
        ok = isinstance(value, str) and len(value) == 64 and len(bytes.fromhex(value)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise InvalidInput(f"{what} must be 64 hex characters, got {value!r:.80}")
    return value.lower()


def build_tx(
    key: SigningKey, chain_id: str, family: str, op: str, args: dict[str, Any], nonce: int | None = None
) -> Transaction:
    """A signed transaction; the nonce is fresh and random unless given."""
    if nonce is None:
        nonce = secrets.randbits(64)
    if not 0 <= nonce <= NONCE_MAX:
        raise InvalidInput(f"nonce must be in 0..2**64-1, got {nonce}")
    try:
        return sign_tx(key, chain_id, family, op, args, nonce)
    except (TypeError, ValueError) as exc:  # args that canonical msgpack cannot encode
        raise InvalidInput(f"cannot encode transaction: {exc}") from None


def kv_put_args(key: str, value: bytes | str) -> dict[str, Any]:
    return {"key": key, "value": value.encode() if isinstance(value, str) else value}


def notary_args(digest: bytes | str, meta: str = "") -> dict[str, Any]:
    args: dict[str, Any] = {"digest": bytes.fromhex(hash_hex(digest, "digest"))}
    if meta:
        args["meta"] = meta
    return args


KEY_FIELDS = ("pubkey", "old", "new")


def propose_args(change: dict[str, Any], expires: int | None = None) -> dict[str, Any]:
    """The args of a gov propose: `change` as the protocol defines it, its keys as hex or bytes."""
    if not isinstance(change, dict):
        raise InvalidInput(f"change must be a dict with a kind, got {change!r:.80}")
    wire = {k: bytes.fromhex(hash_hex(v, k)) if k in KEY_FIELDS and isinstance(v, str) else v
            for k, v in change.items()}
    try:
        parse_change(wire)
    except ChangeMalformed as exc:
        raise InvalidInput(f"change: {exc}") from None
    args: dict[str, Any] = {"change": wire}
    if expires is not None:
        if type(expires) is not int or expires < 0:
            raise InvalidInput(f"expires must be a height (an integer >= 0), got {expires!r}")
        args["expires"] = expires
    return args


def pending_info(tx: Transaction) -> TxInfo:
    """What is known of a transaction the node has just accepted without waiting: it is pending."""
    return TxInfo(tx.hash.hex(), "pending", None, None, None, None, tx_body_from(tx_json(tx)))


# ---- JSON-RPC answers ----------------------------------------------------------------------


def result_of(answer: Any) -> Any:
    """The result of one JSON-RPC answer, or its typed error raised."""
    if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
        raise BadAnswer(f"not a JSON-RPC answer: {answer!r:.200}")
    if "error" in answer:
        raise rpc_error(answer["error"])
    return answer["result"]


def batch_results(requests: list[dict[str, Any]], answers: Any) -> list[Any]:
    """Results in request order; a failed call's place holds its typed RpcError."""
    if isinstance(answers, dict):  # the whole batch refused (e.g. parse error)
        raise rpc_error(answers.get("error"))
    if not isinstance(answers, list):
        raise BadAnswer(f"a batch must be answered with an array, got {answers!r:.200}")
    by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
    out: list[Any] = []
    for request in requests:
        if request["id"] not in by_id:
            raise BadAnswer(f"the batch answer has no answer for id {request['id']}")
        try:
            out.append(result_of(by_id[request["id"]]))
        except RpcError as exc:
            out.append(exc)
    return out


def _decoded(results: list[Any], decode: Callable[[Any], T]) -> list[T | RpcError]:
    return [r if isinstance(r, RpcError) else decode(r) for r in results]


# ---- operations -----------------------------------------------------------------------------


class Core:
    """Request ids, the signing key and the chain id (fetched once) of one client."""

    def __init__(self, key: SigningKey | None = None) -> None:
        self.key = key
        self.chain_id: str | None = None
        self._next_id = 0

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        return {"jsonrpc": "2.0", "method": method, "params": params, "id": self._next_id}

    def call(self, method: str, params: dict[str, Any]) -> Op[Any]:
        return result_of((yield self.request(method, params)))

    def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> Op[list[Any]]:
        requests = [self.request(m, p) for m, p in calls]
        if not requests:
            return []
        return batch_results(requests, (yield requests))

    # -- queries

    def status(self) -> Op[Status]:
        status = status_from((yield from self.call("status", {})))
        self.chain_id = status.chain_id
        return status

    def get_tx(self, tx_hash: str | bytes) -> Op[TxInfo]:
        return tx_info_from((yield from self.call("get_tx", {"tx_hash": hash_hex(tx_hash, "tx_hash")})))

    def get_block(self, height: int | str = "latest") -> Op[Block]:
        if not (height == "latest" or (type(height) is int and height >= 1)):
            raise InvalidInput(f'height must be a positive integer or "latest", got {height!r}')
        return block_from((yield from self.call("get_block", {"height": height})))

    def kv_get(self, key: str) -> Op[KvEntry | None]:
        return kv_entry_from((yield from self.call("query", {"family": "kv", "key": key})))

    def notary_lookup(self, digest: str | bytes) -> Op[NotaryRecord | None]:
        params = {"family": "notary", "key": hash_hex(digest, "digest")}
        return notary_record_from((yield from self.call("query", params)))

    def notary_lookup_file(self, path: str | Path) -> Op[NotaryRecord | None]:
        return (yield from self.notary_lookup(file_digest(path)))

    def get_members(self, height: int | None = None) -> Op[Members]:
        if height is not None and not (type(height) is int and height >= 0):
            raise InvalidInput(f"height must be an integer >= 0, got {height!r}")
        params = {} if height is None else {"height": height}
        return members_from((yield from self.call("get_members", params)))

    def get_proposal(self, proposal: str | bytes) -> Op[ProposalInfo]:
        params = {"proposal": hash_hex(proposal, "proposal")}
        return proposal_from((yield from self.call("get_proposal", params)))

    def get_history(self, family: str, key: str | bytes, limit: int | None = None,
                    before_height: int | None = None) -> Op[History]:
        """A page of the committed transactions that touched a kv key or a notary digest, newest first."""
        if family not in ("kv", "notary"):
            raise InvalidInput(f'family must be "kv" or "notary", got {family!r}')
        params: dict[str, Any] = {"family": family,
                                  "key": hash_hex(key, "digest") if family == "notary" else key}
        if limit is not None:
            if not (type(limit) is int and 1 <= limit <= 1000):
                raise InvalidInput(f"limit must be an integer in 1..1000, got {limit!r}")
            params["limit"] = limit
        if before_height is not None:
            if not (type(before_height) is int and before_height >= 1):
                raise InvalidInput(f"before_height must be a positive integer, got {before_height!r}")
            params["before_height"] = before_height
        return history_from((yield from self.call("get_history", params)))

    def consensus_state(self) -> Op[dict[str, Any]]:
        state = yield from self.call("consensus_state", {})
        if not isinstance(state, dict):
            raise BadAnswer(f"consensus_state: expected a JSON object, got {state!r:.100}")
        return state

    def get_proof(self, tx_hash: str | bytes) -> Op[dict[str, Any]]:
        proof = yield from self.call("get_proof", {"tx_hash": hash_hex(tx_hash, "tx_hash")})
        if not isinstance(proof, dict):
            raise BadAnswer(f"get_proof: expected a JSON object, got {proof!r:.100}")
        return proof

    def state_proof(self, family: str, key: str, height: int | None = None) -> Op[dict[str, Any]]:
        """`query` with `prove` (docs/proofs.md): the key's state proof at `height` (default: the tip)."""
        params: dict[str, Any] = {"family": family, "key": key, "prove": True,
                                  "height": "latest" if height is None else height}
        proof = yield from self.call("query", params)
        if not isinstance(proof, dict):
            raise BadAnswer(f"query: expected a state proof object, got {proof!r:.100}")
        return proof

    def verified_proof(
        self,
        tx_hash: str | bytes,
        genesis: str | Path | None,
        chain_id: str | None,
        validators: Sequence[str | bytes] | None,
    ) -> Op[VerifiedProof]:
        """The proof checked against the genesis (or chain id and validators), never against the node;
        what it is checked against is read and refused before anything is sent."""
        from node.client.proofs import trust_anchor  # imported when used: it brings in the consensus code
        from node.chain.proof import verify_proof

        anchor = trust_anchor(genesis, chain_id, validators)
        return verify_proof((yield from self.get_proof(tx_hash)), *anchor)

    # -- transactions

    def chain(self) -> Op[str]:
        if self.chain_id is None:
            yield from self.status()
        assert self.chain_id is not None
        return self.chain_id

    def sign(self, family: str, op: str, args: dict[str, Any], nonce: int | None = None) -> Op[Transaction]:
        if self.key is None:
            raise InvalidInput("this client has no key: pass key=load_key(PATH) to sign transactions")
        return build_tx(self.key, (yield from self.chain()), family, op, args, nonce)

    def send(self, tx: Transaction, wait: bool = True, timeout_s: float = 10) -> Op[TxInfo]:
        [result] = yield from self.send_batch([tx], wait, timeout_s)
        if isinstance(result, RpcError):
            raise result
        return result

    def send_batch(
        self, txs: list[Transaction], wait: bool = False, timeout_s: float = 10
    ) -> Op[list[TxInfo | RpcError]]:
        params = [{"tx": tx.raw.hex(), "wait": wait, "timeout": timeout_s} for tx in txs]
        results = yield from self.batch([("send_tx", p) for p in params])
        if wait:
            return _decoded(results, tx_info_from)
        return [r if isinstance(r, RpcError) else _accepted(tx, r) for tx, r in zip(txs, results)]

    def submit(
        self, family: str, op: str, args: dict[str, Any], wait: bool = True, timeout_s: float = 10
    ) -> Op[TxInfo]:
        tx = yield from self.sign(family, op, args)
        return (yield from self.send(tx, wait, timeout_s))

    def kv_put(self, key: str, value: bytes | str, wait: bool = True, timeout_s: float = 10) -> Op[TxInfo]:
        return (yield from self.submit("kv", "put", kv_put_args(key, value), wait, timeout_s))

    def kv_delete(self, key: str, wait: bool = True, timeout_s: float = 10) -> Op[TxInfo]:
        return (yield from self.submit("kv", "delete", {"key": key}, wait, timeout_s))

    def notarize(self, digest: str | bytes, meta: str = "", wait: bool = True, timeout_s: float = 10) -> Op[TxInfo]:
        return (yield from self.submit("notary", "record", notary_args(digest, meta), wait, timeout_s))

    def notarize_file(self, path: str | Path, meta: str = "", wait: bool = True, timeout_s: float = 10) -> Op[TxInfo]:
        return (yield from self.notarize(file_digest(path), meta, wait, timeout_s))

    def propose(
        self, change: dict[str, Any], expires: int | None = None, wait: bool = True, timeout_s: float = 10
    ) -> Op[TxInfo]:
        return (yield from self.submit("gov", "propose", propose_args(change, expires), wait, timeout_s))

    def approve(self, proposal: str | bytes, wait: bool = True, timeout_s: float = 10) -> Op[TxInfo]:
        args = {"proposal": bytes.fromhex(hash_hex(proposal, "proposal"))}
        return (yield from self.submit("gov", "approve", args, wait, timeout_s))


def _accepted(tx: Transaction, result: Any) -> TxInfo:
    if tx_hash_from(result) != tx.hash.hex():
        raise BadAnswer(f"send_tx answered tx_hash {result['tx_hash']}, expected {tx.hash.hex()}")
    return pending_info(tx)


def run(op: Op[T], post: Callable[[Any], Any]) -> T:
    """Runs an operation to its end, posting each payload it yields with `post`."""
    try:
        payload = op.send(None)
        while True:
            payload = op.send(post(payload))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
