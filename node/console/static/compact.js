// The compact form of a state proof (docs/proofs.md, "The compact form"), expanded into the JSON form
// that verify.js then checks, as node/chain/compact_proof.py expands it, with the same reasons.

import { sha256, toHex } from "./bytes.js";
import { CodecError, decodeCanonical, encode } from "./msgpack.js";
import { ProofInvalid } from "./proof_shape.js";
import { DEPTH, bucketOf, queryResult, stateKeyOf } from "./state.js";

const FIELDS = 8; // [version, family, key, state_value, records, siblings, block, validator_changes]
const HEADER_SHAPE = "header must be [4, chain_id, height, prev_hash, time, proposer, tx_count, tx_root, "
  + "receipt_root, state_root, validators_hash, next_validators_hash]";
const HEADER_HASHES = [3, 5, 7, 8, 9, 10, 11];

const isBytes = (value, size) => value instanceof Uint8Array && (size === undefined || value.length === size);
const shape = (detail) => new ProofInvalid(`shape: ${detail}`);

// A compact proof's bytes start with 98 (an array of 8), which no JSON text does.
export const isCompact = (bytes) => bytes instanceof Uint8Array && bytes[0] === (0x90 | FIELDS);

// The JSON state proof the bytes stand for; `validators` are the genesis ones (Uint8Array keys).
export async function expandStateProof(bytes, validators) {
  let obj;
  try {
    obj = decodeCanonical(bytes);
  } catch (err) {
    if (err instanceof CodecError) throw shape(`not a compact proof: ${err.message}`);
    throw err;
  }
  if (!Array.isArray(obj) || obj.length !== FIELDS) throw shape(`a compact proof is an array of ${FIELDS}`);
  const [version, family, key, value, blob, siblings, block, steps] = obj;
  if (version !== 1n) throw shape("version must be 1");
  if (typeof family !== "string" || typeof key !== "string") throw shape("family and key must be strings");
  if (!(value === null || isBytes(value)) || !isBytes(blob)) {
    throw shape("state_value must be binary or nil, records binary");
  }
  if (!isBytes(siblings, 32 * DEPTH)) throw shape(`siblings must be ${32 * DEPTH} bytes`);
  if (!Array.isArray(steps)) throw shape("validator_changes must be an array");
  let inForce = validators;
  const changes = [];
  for (const [i, step] of steps.entries()) {
    const where = `validator_changes[${i}]`;
    if (!Array.isArray(step) || step.length !== 3 || !Array.isArray(step[2])) {
      throw shape(`${where} must be [header, signatures, validators]`);
    }
    if (!step[2].every((v) => isBytes(v, 32))) throw shape(`${where}.validators must be keys of 32 bytes`);
    changes.push({ ...await certified(step.slice(0, 2), inForce, `${where}.`), validators: step[2].map(toHex) });
    inForce = step[2];
  }
  const stateKey = stateKeyOf(family, key);
  return {
    version: 1n, family, key, state_key: toHex(stateKey), state_value: value === null ? null : toHex(value),
    result: value === null ? null : queryResult(family, value), bucket: BigInt(bucketOf(await sha256(stateKey))),
    records: toHex(blob), siblings: Array.from({ length: DEPTH }, (_, i) => toHex(siblings.subarray(32 * i, 32 * i + 32))),
    ...await certified(block, inForce, ""), validator_changes: changes,
  };
}

// The "header" and "commit" of a compact [header, [[index, signature], ...]].
async function certified(value, inForce, where) {
  if (!Array.isArray(value) || value.length !== 2 || !Array.isArray(value[1])) {
    throw shape(`${where}block must be [header, signatures]`);
  }
  const h = value[0];
  if (!Array.isArray(h) || h.length !== 12 || h[0] !== 4n) throw shape(`${where}header: ${HEADER_SHAPE}`);
  const intsOk = [h[2], h[4], h[6]].every((n) => typeof n === "bigint" && n >= 0n) && h[2] > 0n;
  if (typeof h[1] !== "string" || !intsOk || !HEADER_HASHES.every((i) => isBytes(h[i], 32))) {
    throw shape(`${where}header: header fields have the wrong types`);
  }
  const signatures = value[1].map((seal, j) => {
    if (!Array.isArray(seal) || seal.length !== 2 || typeof seal[0] !== "bigint" || !isBytes(seal[1], 64)) {
      throw shape(`${where}signatures[${j}] must be [index, 64-byte signature]`);
    }
    if (seal[0] < 0n || seal[0] >= BigInt(inForce.length)) {
      throw shape(`${where}signatures[${j}] names validator ${seal[0]} of ${inForce.length}`);
    }
    return { validator: toHex(inForce[Number(seal[0])]), signature: toHex(seal[1]) };
  });
  const header = {
    version: 4n, chain_id: h[1], height: h[2], prev_hash: toHex(h[3]), time: h[4], proposer: toHex(h[5]),
    tx_count: h[6], tx_root: toHex(h[7]), receipt_root: toHex(h[8]), state_root: toHex(h[9]),
    validators_hash: toHex(h[10]), next_validators_hash: toHex(h[11]),
  };
  return { header, commit: { height: h[2], block_hash: toHex(await sha256(encode(h))), signatures } };
}
