// Steps 2 to 6 of a state proof (docs/proofs.md section 6) over the state tree of docs/encoding.md
// (node/chain/state_tree.py): state keys, the bucket's records, the value and the fold to the root.

import { compareBytes, concat, equal, sha256, toHex } from "./bytes.js";
import { JsonFloat } from "./json.js";
import { decodeCanonical } from "./msgpack.js";
import { ProofInvalid, has, isInteger, isObject } from "./proof_shape.js";

export const DEPTH = 18; // levels of the state tree
const KV_KEY_BYTES_MAX = 256;
const EMPTY = new Uint8Array(32);
const utf8 = new TextEncoder();
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const PY_SPACE = " \t\n\r\x0b\x0c"; // what Python's bytes.fromhex skips between bytes

const keyInvalid = (detail) => new ProofInvalid(`state key: ${detail}`);

// The state key a query names: "kv/" + the key's UTF-8 (1..256 bytes), "nt/" + the 32-byte digest.
export function stateKeyOf(family, key) {
  if (family === "kv") {
    if (typeof key !== "string") throw keyInvalid("a kv key is a string");
    if (LONE_SURROGATE.test(key)) throw keyInvalid("a kv key is valid Unicode (no lone surrogates)");
    const bytes = utf8.encode(key);
    if (bytes.length < 1 || bytes.length > KV_KEY_BYTES_MAX) {
      throw keyInvalid(`a kv key is 1 to ${KV_KEY_BYTES_MAX} bytes of UTF-8`);
    }
    return concat(utf8.encode("kv/"), bytes);
  }
  if (family === "notary") {
    const digest = typeof key === "string" && key.length === 64 && key === key.toLowerCase() ? pyFromHex(key) : null;
    if (digest === null) throw keyInvalid("a notary key is a digest of 64 lowercase hex characters");
    return concat(utf8.encode("nt/"), digest);
  }
  throw keyInvalid('family must be "kv" or "notary"');
}

// Python's bytes.fromhex: pairs of hex digits, ASCII whitespace allowed between them; null if not.
function pyFromHex(text) {
  const out = [];
  for (let i = 0; i < text.length;) {
    if (PY_SPACE.includes(text[i])) { i++; continue; }
    const pair = text.slice(i, i + 2);
    if (!/^[0-9a-fA-F]{2}$/.test(pair)) return null;
    out.push(parseInt(pair, 16));
    i += 2;
  }
  return Uint8Array.from(out);
}

// The first DEPTH bits of a key hash, big-endian.
export const bucketOf = (kh) => ((kh[0] << 10) | (kh[1] << 2) | (kh[2] >> 6)) >>> 0;

// The records of a bucket: 64 bytes each (kh || vh), of `bucket`, strictly in kh order.
function records(blob, bucket) {
  if (blob.length % 64) {
    throw new ProofInvalid(`records: a bucket is 64-byte records; this one is ${blob.length} bytes`);
  }
  const found = [];
  for (let at = 0; at < blob.length; at += 64) found.push(blob.subarray(at, at + 64));
  found.forEach((record, i) => {
    if (bucketOf(record) !== bucket) throw new ProofInvalid(`records: record ${i} is not of bucket ${bucket}`);
    if (i && compareBytes(found[i - 1].subarray(0, 32), record.subarray(0, 32)) >= 0) {
      throw new ProofInvalid(`records: record ${i} is not after record ${i - 1} in key-hash order`);
    }
  });
  return found;
}

// What `query` answers for a stored value (node/chain/state_proof.py query_result), null if it cannot.
export function queryResult(family, raw) {
  let value;
  try {
    value = decodeCanonical(raw);
  } catch {
    return null;
  }
  const names = family === "kv" ? ["value", "owner", "height"] : ["recorder", "height", "time", "tx_hash", "meta"];
  const binary = family === "kv" ? ["value", "owner"] : ["recorder", "tx_hash"];
  if (!Array.isArray(value) || value.length !== names.length) return null;
  const out = {};
  for (const [i, name] of names.entries()) {
    const item = value[i];
    // Python calls .hex() on the binary fields, and cannot put binary anywhere else in JSON.
    if (binary.includes(name) !== (item instanceof Uint8Array)) return null;
    out[name] = item instanceof Uint8Array ? toHex(item) : item;
  }
  return out;
}

// Equal as Python's json.dumps(sort_keys=True) sees them: 1, 1.0 and true all differ.
function sameJson(a, b) {
  if (isInteger(a) || isInteger(b)) return isInteger(a) && isInteger(b) && BigInt(a) === BigInt(b);
  if (a instanceof JsonFloat || b instanceof JsonFloat) return false; // a state value holds no floats
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  }
  if (a instanceof Map) return sameJson(Object.fromEntries(a), b);
  if (b instanceof Map) return sameJson(a, Object.fromEntries(b));
  if (isObject(a) || isObject(b)) {
    if (!isObject(a) || !isObject(b)) return false;
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => has(b, k) && sameJson(a[k], b[k]));
  }
  return a === b;
}

// Step 5: the key's record matches the value, or no record holds the key.
export async function checkStateValue(family, blob, bucket, kh, value, result) {
  const found = records(blob, bucket).filter((r) => equal(r.subarray(0, 32), kh)).map((r) => r.subarray(32));
  if (value === null) {
    if (found.length) throw new ProofInvalid("value: the records hold the key, the proof says it is absent");
    if (result !== null) throw new ProofInvalid("value: result must be null for an absent key");
    return;
  }
  if (!found.length) throw new ProofInvalid("value: the records do not hold the key, the proof gives it a value");
  if (!equal(found[0], await sha256(value))) {
    throw new ProofInvalid("value: the key's record is not the hash of state_value");
  }
  const decoded = queryResult(family, value);
  if (decoded === null) throw new ProofInvalid("value: state_value is not a state value of its family");
  if (!sameJson(result, decoded)) throw new ProofInvalid("value: result is not state_value decoded");
}

export async function leafHash(blob) {
  return blob.length ? sha256(concat([0], blob)) : EMPTY;
}

async function nodeHash(left, right) {
  return equal(left, EMPTY) && equal(right, EMPTY) ? EMPTY : sha256(concat(left, right));
}

// The root that `leaf` at `bucket` and its siblings (bucket level first) hash to.
export async function fold(bucket, leaf, siblings) {
  let node = leaf;
  let index = bucket;
  for (const sibling of siblings) {
    node = index & 1 ? await nodeHash(sibling, node) : await nodeHash(node, sibling);
    index >>>= 1;
  }
  return node;
}
