// Checking a proof in the browser, against a genesis the user supplies: exactly the checks, in the
// order, of docs/proofs.md (section 3 for transaction proofs, section 6 for state proofs), as
// `alliance verify-proof` runs them (node/chain/proof.py, node/chain/state_proof.py). SHA-256 and
// Ed25519 are WebCrypto's, which a browser offers only in a secure context (https, or http on
// 127.0.0.1/localhost).
//
//   parseGenesis(text) -> genesis                     (throws Error on a file it cannot read)
//   sha256Hex(bytes) -> Promise<hex>
//   verifyProof(proof, genesis) -> Promise<{ok: true, kind, height, block_hash, present, checks, ...}
//                                          | {ok: false, reason}>   (never throws)
//   expandCompact(bytes, genesis) -> Promise<the JSON form of a compact state proof | null>
//
// `proof` is best given as the JSON text: then integers keep their exact value and type (4.0 is not
// 4) and an object repeating a key is refused, as the CLI does. A parsed object is accepted too, and a
// Uint8Array: a compact state proof (compact.js), or the bytes of a JSON text.

import { concat, equal, sha256, toHex } from "./bytes.js";
import { expandStateProof, isCompact } from "./compact.js";
import { verifyEd25519 } from "./ed25519.js";
import { parseGenesis } from "./genesis.js";
import { JsonFloat, parseJson } from "./json.js";
import { decodeCanonical, encode } from "./msgpack.js";
import {
  ProofInvalid, STATE_PROOF_KEYS, UINT64_MAX, has, isObject, jsonHex, jsonList, jsonObject, jsonStr, jsonUint,
  jsonVersion, parseCertified, parseChanges, parseTransactionProof, repr,
} from "./proof_shape.js";
import { DEPTH, bucketOf, checkStateValue, fold, leafHash, stateKeyOf } from "./state.js";

export { parseGenesis };

const COMMIT_PREFIX = new TextEncoder().encode("alliance-commit-v1\x00");
const TX_PREFIX = new TextEncoder().encode("alliance-tx-v1\x00");
const TX_BYTES_MAX = 64 * 1024;

export async function sha256Hex(bytes) {
  return toHex(await sha256(bytes));
}

export async function verifyProof(proof, genesis) {
  try {
    if (typeof crypto === "undefined" || !crypto.subtle) {
      return { ok: false, reason: "no WebCrypto here: open the page over https or on 127.0.0.1/localhost" };
    }
    const { chainId, validators } = genesisKeys(genesis);
    if (isCompact(proof)) return await verifyState(await expandStateProof(proof, validators), chainId, validators);
    let value = proof instanceof Uint8Array ? new TextDecoder().decode(proof) : proof;
    if (typeof value === "string") {
      try {
        value = parseJson(value);
      } catch (err) {
        return { ok: false, reason: `shape: the proof is not valid JSON: ${err.message}` };
      }
    }
    const isState = isObject(value) && has(value, "state_key");
    return await (isState ? verifyState : verifyTransaction)(value, chainId, validators);
  } catch (err) {
    if (err instanceof ProofInvalid) return { ok: false, reason: err.message };
    return { ok: false, reason: `the verifier failed: ${err instanceof Error ? err.message : err}` };
  }
}

// The JSON form of a compact state proof (to show what it holds), or null when it does not expand.
export async function expandCompact(bytes, genesis) {
  try {
    return await expandStateProof(bytes, genesisKeys(genesis).validators);
  } catch {
    return null;
  }
}

function genesisKeys(genesis) {
  if (genesis instanceof Error || typeof genesis === "string") { // what parseGenesis threw, or said
    const message = genesis instanceof Error ? genesis.message : genesis;
    throw new ProofInvalid(message.startsWith("genesis: ") ? message : `genesis: ${message}`);
  }
  if (!isObject(genesis) || typeof genesis.chain_id !== "string" || !Array.isArray(genesis.validators)) {
    throw new ProofInvalid("genesis: not a genesis (give what parseGenesis returns)");
  }
  const validators = genesis.validators.map((v, i) => {
    if (!isObject(v) || typeof v.pubkey !== "string" || !/^[0-9a-fA-F]{64}$/.test(v.pubkey)) {
      throw new ProofInvalid(`genesis: validators[${i}].pubkey is not 64 hex characters`);
    }
    return jsonHex(v.pubkey.toLowerCase(), "pubkey", 32);
  });
  return { chainId: genesis.chain_id, validators };
}

// ---- the certified block: steps 2 to 6 of section 3 ----------------------------------------------

function headerBytes(h) {
  return encode([4n, h.chainId, h.height, h.prevHash, h.time, h.proposer, h.txCount, h.txRoot, h.receiptRoot,
    h.stateRoot, h.validatorsHash, h.nextValidatorsHash]);
}

const validatorsHash = (keys) => sha256(encode(keys));

function quorum(n) {
  return Math.floor((n + Math.floor((n - 1) / 3)) / 2) + 1;
}

async function checkBlockHash(block, where) {
  const computed = await sha256(headerBytes(block.header));
  if (!equal(computed, block.blockHash)) {
    throw new ProofInvalid(`${where || "block hash: "}the header hashes to ${toHex(computed)}, `
      + `not commit.block_hash ${toHex(block.blockHash)}`);
  }
  if (block.commitHeight !== block.header.height) {
    throw new ProofInvalid(`${where || "commit height: "}commit.height ${block.commitHeight} `
      + `is not header.height ${block.header.height}`);
  }
}

// Every seal is a distinct member's valid seal over the block hash, and there are a quorum of them.
async function checkCertificate(block, validators, where) {
  const members = new Set(validators.map(toHex));
  const seen = new Set();
  const message = concat(COMMIT_PREFIX, block.blockHash);
  for (const [i, [validator, seal]] of block.signatures.entries()) {
    const hex = toHex(validator);
    if (!members.has(hex)) {
      throw new ProofInvalid(`${where}signature ${i} is by ${hex}, not a validator of that height`);
    }
    if (seen.has(hex)) throw new ProofInvalid(`${where}validator ${hex} signs more than once`);
    seen.add(hex);
    if (!await verifyEd25519(validator, message, seal)) {
      throw new ProofInvalid(`${where}signature ${i} by ${hex} does not verify`);
    }
  }
  const needed = quorum(validators.length);
  if (seen.size < needed) {
    throw new ProofInvalid(`${where}${seen.size} signatures, below the quorum of ${needed} `
      + `of ${validators.length} validators`);
  }
  return needed;
}

async function walkChanges(changes, chainId, genesis, height, checks) {
  let inForce = genesis;
  let previous = 0n;
  for (const [i, change] of changes.entries()) {
    const h = change.block.header;
    const where = `validator change: validator_changes[${i}] (block ${h.height}): `;
    if (h.chainId !== chainId) {
      throw new ProofInvalid(`${where}header.chain_id is ${repr(h.chainId)}, `
        + `not the genesis chain id ${repr(chainId)}`);
    }
    if (!(previous < h.height && h.height < height)) {
      throw new ProofInvalid(`${where}its height must be above ${previous} (the previous step's) `
        + `and below ${height} (the proof's block)`);
    }
    await checkBlockHash(change.block, where);
    if (!equal(h.validatorsHash, await validatorsHash(inForce))) {
      throw new ProofInvalid(`${where}header.validators_hash is not the hash of the validators in force, `
        + "the genesis ones changed by the steps before it (is a step missing or out of order?)");
    }
    const needed = await checkCertificate(change.block, inForce, `${where}certificate: `);
    const next = change.validators;
    if (!next.length || new Set(next.map(toHex)).size !== next.length) {
      throw new ProofInvalid(`${where}validators must list at least one key, none twice`);
    }
    if (!equal(h.nextValidatorsHash, await validatorsHash(next))) {
      throw new ProofInvalid(`${where}header.next_validators_hash is not the hash of its validators`);
    }
    if (equal(h.nextValidatorsHash, h.validatorsHash)) {
      throw new ProofInvalid(`${where}the validators do not change after this block`);
    }
    checks.push(`validator change ${i + 1}: block ${h.height} (hash ${toHex(change.block.blockHash)}), signed by `
      + `${change.block.signatures.length} of its ${inForce.length} validators (quorum ${needed}), hands over to `
      + `the ${next.length} validators it lists`);
    inForce = next;
    previous = h.height;
  }
  return inForce;
}

async function verifyCertified(block, changes, chainId, genesis, checks) {
  const h = block.header;
  if (h.chainId !== chainId) {
    throw new ProofInvalid(`chain id: the proof is for chain ${repr(h.chainId)}, the genesis is ${repr(chainId)}`);
  }
  checks.push(`block ${h.height} is of chain ${repr(chainId)}, the genesis' chain id`);
  await checkBlockHash(block, "");
  checks.push(`block ${h.height}'s header hashes to ${toHex(block.blockHash)}, the block hash its certificate signs`);
  if (!genesis.length) throw new ProofInvalid("certificate: the genesis lists no validators");
  const inForce = await walkChanges(changes, chainId, genesis, h.height, checks);
  if (!equal(h.validatorsHash, await validatorsHash(inForce))) {
    throw new ProofInvalid(`validators: header.validators_hash is not the hash of the ${inForce.length} validators `
      + `in force after ${changes.length} validator changes (is a change missing?)`);
  }
  checks.push(changes.length
    ? `block ${h.height} was decided by the ${inForce.length} validators reached from the genesis through `
      + `${changes.length} validator change${changes.length > 1 ? "s" : ""}`
    : `block ${h.height} was decided by the ${inForce.length} validators of the genesis`);
  const needed = await checkCertificate(block, inForce, "certificate: ");
  checks.push(`${block.signatures.length} of ${inForce.length} validators signed block ${h.height} (quorum ${needed}), `
    + "each a valid Ed25519 signature of its block hash");
  return inForce;
}

function result(kind, block, present, checks, extra) {
  return {
    ok: true, kind, height: Number(block.header.height), block_hash: toHex(block.blockHash), present,
    time: Number(block.header.time), chain_id: block.header.chainId, checks, ...extra,
  };
}

// ---- transaction proofs: steps 7 to 9 -------------------------------------------------------

// The JSON of a decoded value, binary as hex (what `alliance verify-proof` prints as args).
function toJson(value) {
  if (value instanceof Uint8Array) return toHex(value);
  if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (Array.isArray(value)) return value.map(toJson);
  if (value instanceof Map) return Object.fromEntries(Array.from(value, ([k, v]) => [k, toJson(v)]));
  return value;
}

// node/chain/tx.py _check_fields: the first field of the wrong type, or null.
function fieldFault(obj) {
  if (!Array.isArray(obj) || obj.length !== 8) return "a transaction is an array of 8 elements";
  const [version, chainId, sender, nonce, family, op, args, signature] = obj;
  if (version !== 1n) return "version must be 1";
  if (typeof chainId !== "string") return "chain_id must be a string";
  if (!(sender instanceof Uint8Array) || sender.length !== 32) return "sender must be 32 bytes";
  if (typeof nonce !== "bigint" || nonce < 0n || nonce > UINT64_MAX) return "nonce must be an integer in 0..2**64-1";
  if (typeof family !== "string" || typeof op !== "string") return "family and op must be strings";
  if (!(args instanceof Map)) return "args must be a map";
  if (!(signature instanceof Uint8Array) || signature.length !== 64) return "signature must be 64 bytes";
  return null;
}

function decodeTx(raw) {
  const malformed = (detail) => new ProofInvalid(`transaction: tx is not a canonical transaction (${detail})`);
  if (raw.length > TX_BYTES_MAX) {
    throw malformed(`oversize: transaction is ${raw.length} bytes, more than ${TX_BYTES_MAX}`);
  }
  let obj;
  try {
    obj = decodeCanonical(raw);
  } catch (err) {
    throw malformed(err.message);
  }
  const fault = fieldFault(obj);
  if (fault !== null) throw malformed(`malformed: ${fault}`);
  const [, chainId, sender, nonce, family, op, args, signature] = obj;
  return { chainId, sender, nonce, family, op, args, signature };
}

async function checkTransaction(parts, chainId) {
  const tx = decodeTx(parts.tx);
  if (tx.chainId !== chainId) {
    throw new ProofInvalid(`transaction: tx chain id ${repr(tx.chainId)} is not ${repr(chainId)}`);
  }
  const signing = concat(TX_PREFIX, [0x97], parts.tx.subarray(1, parts.tx.length - 66));
  if (!await verifyEd25519(tx.sender, signing, tx.signature)) {
    throw new ProofInvalid("transaction: the client signature of tx does not verify");
  }
  const hash = await sha256(signing);
  if (!equal(hash, parts.txHash)) {
    throw new ProofInvalid(`transaction: tx hashes to ${toHex(hash)}, not tx_hash ${toHex(parts.txHash)}`);
  }
  return tx;
}

// RFC 6962 inclusion (node/chain/merkle.py): the last node of an odd level moves up unchanged.
async function verifyPath(item, index, size, path, root) {
  let digest = await sha256(concat([0], item));
  const remaining = [...path];
  for (let width = size; width > 1n; width = (width + 1n) / 2n, index /= 2n) {
    if ((index ^ 1n) < width) {
      if (!remaining.length) return false;
      const other = remaining.shift();
      digest = await sha256(index % 2n ? concat([1], other, digest) : concat([1], digest, other));
    }
  }
  return !remaining.length && equal(digest, root);
}

async function verifyTransaction(proof, chainId, genesis) {
  const parts = parseTransactionProof(proof);
  const checks = ["the proof has the shape of a transaction proof (docs/proofs.md, version 2)"];
  await verifyCertified(parts.block, parts.changes, chainId, genesis, checks);
  const tx = await checkTransaction(parts, chainId);
  checks.push(`the transaction ${toHex(parts.txHash)} (${tx.family}.${tx.op}) is canonical, of this chain, `
    + `and signed by its sender ${toHex(tx.sender)}`);
  const h = parts.block.header;
  if (parts.index >= h.txCount) {
    throw new ProofInvalid(`index: index ${parts.index} is not below header.tx_count ${h.txCount}`);
  }
  if (!await verifyPath(parts.txHash, parts.index, h.txCount, parts.txPath, h.txRoot)) {
    throw new ProofInvalid(`tx path: tx_path does not prove tx_hash at index ${parts.index} under header.tx_root`);
  }
  checks.push(`the Merkle path from the transaction to the block's tx_root holds (index ${parts.index} `
    + `of ${h.txCount} transactions)`);
  const item = encode([parts.txHash, parts.code, parts.log]);
  if (!await verifyPath(item, parts.index, h.txCount, parts.receiptPath, h.receiptRoot)) {
    throw new ProofInvalid(`receipt path: receipt_path does not prove the receipt at index ${parts.index} `
      + "under header.receipt_root");
  }
  checks.push(`the Merkle path from the receipt (code ${parts.code}) to the block's receipt_root holds`);
  return result("transaction", parts.block, true, checks, {
    tx_hash: toHex(parts.txHash), index: Number(parts.index), receipt: { code: Number(parts.code), log: parts.log },
    tx: { sender: toHex(tx.sender), nonce: toJson(tx.nonce), family: tx.family, op: tx.op, args: toJson(tx.args) },
  });
}

// ---- state proofs: section 6 -----------------------------------------------------------------

async function verifyState(proof, chainId, genesis) {
  const top = jsonObject(proof, STATE_PROOF_KEYS, "proof");
  jsonVersion(top.version, 1, "version");
  const family = jsonStr(top.family, "family");
  const stateKey = jsonHex(top.state_key, "state_key");
  const value = top.state_value === null ? null : jsonHex(top.state_value, "state_value");
  const bucket = jsonUint(top.bucket, "bucket");
  const blob = top.records === "" ? new Uint8Array(0) : jsonHex(top.records, "records");
  if (!Array.isArray(top.siblings) || top.siblings.length !== DEPTH) {
    throw new ProofInvalid(`shape: siblings must be an array of ${DEPTH} hashes`);
  }
  const siblings = jsonList(top.siblings, "siblings").map((s, i) => jsonHex(s, `siblings[${i}]`, 32));
  const block = parseCertified(top, "");
  const changes = parseChanges(top);
  const checks = ["the proof has the shape of a state proof (docs/proofs.md section 6, version 1)"];
  if (!equal(stateKeyOf(family, top.key), stateKey)) {
    throw new ProofInvalid("state key: state_key is not the state key of family and key");
  }
  const kh = await sha256(stateKey);
  const keyBucket = bucketOf(kh);
  if (bucket !== BigInt(keyBucket)) {
    throw new ProofInvalid(`bucket: the key hash is in bucket ${keyBucket}, not ${bucket}`);
  }
  checks.push(`the state key is that of ${family} ${JSON.stringify(top.key)}, `
    + `in bucket ${keyBucket} of the state tree`);
  await checkStateValue(family, blob, keyBucket, kh, value, top.result);
  checks.push(value === null
    ? "no record of the bucket holds the key: it is absent"
    : "the bucket's record of the key is the hash of the value, and the result is that value decoded");
  const root = await fold(keyBucket, await leafHash(blob), siblings);
  if (!equal(root, block.header.stateRoot)) {
    throw new ProofInvalid(`state root: records and siblings fold to ${toHex(root)}, not header.state_root`);
  }
  checks.push(`the Merkle path from the key's bucket to the block's state_root holds (${DEPTH} levels)`);
  await verifyCertified(block, changes, chainId, genesis, checks);
  return result("state", block, value !== null, checks, { family, key: top.key, result: plain(top.result) });
}

// The result as the caller can use it (JSON numbers rather than BigInt).
function plain(value) {
  if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (value instanceof JsonFloat) return value.value;
  if (Array.isArray(value)) return value.map(plain);
  if (isObject(value)) return Object.fromEntries(Object.keys(value).map((k) => [k, plain(value[k])]));
  return value;
}
