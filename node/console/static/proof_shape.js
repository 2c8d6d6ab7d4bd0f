// Step 1 of docs/proofs.md section 3 (and of section 6's state proofs): the exact shape of a proof,
// as node/chain/proof.py checks it, with the same reasons. Values come from json.js (integers as
// BigInt) or from JSON.parse (integers as Numbers, where 4.0 and 4 can no longer be told apart).

import { compareBytes, fromHex } from "./bytes.js";
import { JsonFloat } from "./json.js";

export const UINT64_MAX = (1n << 64n) - 1n;
const LOWER_HEX = /^(?:[0-9a-f]{2})+$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const PROOF_KEYS = ["version", "tx_hash", "tx", "receipt", "index", "tx_path", "receipt_path", "header",
  "commit", "validator_changes"];
export const STATE_PROOF_KEYS = ["version", "family", "key", "state_key", "state_value", "result", "bucket",
  "records", "siblings", "header", "commit", "validator_changes"];
const RECEIPT_KEYS = ["code", "log"];
const HEADER_KEYS = ["version", "chain_id", "height", "prev_hash", "time", "proposer", "tx_count", "tx_root",
  "receipt_root", "state_root", "validators_hash", "next_validators_hash"];
const COMMIT_KEYS = ["height", "block_hash", "signatures"];
const SIGNATURE_KEYS = ["validator", "signature"];
const CHANGE_KEYS = ["header", "commit", "validators"];

export class ProofInvalid extends Error {}

export const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof JsonFloat)
    && !(value instanceof Uint8Array);
}

// Python's repr of a str (its ASCII escapes; other characters as they are), so that reasons read
// exactly as the CLI's.
export function repr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const named = { "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };
  const body = Array.from(text, (c) => named[c] ?? (c === quote ? `\\${c}`
    : c < " " || c === "\x7f" ? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}` : c)).join("");
  return `${quote}${body}${quote}`;
}

export function jsonObject(value, keys, where) {
  if (!isObject(value)) throw new ProofInvalid(`shape: ${where} must be an object`);
  const missing = keys.find((k) => !has(value, k));
  if (missing !== undefined) throw new ProofInvalid(`shape: ${where} lacks the key ${repr(missing)}`);
  const extra = Object.keys(value).filter((k) => !keys.includes(k)).sort(byCodePoint);
  if (extra.length) throw new ProofInvalid(`shape: ${where} has the unknown key ${repr(extra[0])}`);
  return value;
}

const utf8 = new TextEncoder();
const byCodePoint = (a, b) => compareBytes(utf8.encode(a), utf8.encode(b)); // Python's order of str

export function isInteger(value) {
  return typeof value === "bigint" || (typeof value === "number" && Number.isInteger(value));
}

export function jsonVersion(value, expected, where) {
  if (!isInteger(value) || BigInt(value) !== BigInt(expected)) {
    throw new ProofInvalid(`shape: ${where} must be ${expected}`);
  }
}

export function jsonUint(value, where) {
  if (!isInteger(value) || BigInt(value) < 0n || BigInt(value) > UINT64_MAX) {
    throw new ProofInvalid(`shape: ${where} must be an integer in 0..2**64-1`);
  }
  return BigInt(value);
}

export function jsonStr(value, where) {
  if (typeof value !== "string") throw new ProofInvalid(`shape: ${where} must be a string`);
  if (LONE_SURROGATE.test(value)) throw new ProofInvalid(`shape: ${where} is not valid Unicode text`);
  return value;
}

export function jsonList(value, where) {
  if (!Array.isArray(value)) throw new ProofInvalid(`shape: ${where} must be an array`);
  return value;
}

// Non-empty lowercase hex; exactly `size` bytes when given.
export function jsonHex(value, where, size = null) {
  const wrongSize = size !== null && typeof value === "string" && value.length !== 2 * size;
  if (typeof value !== "string" || wrongSize || !LOWER_HEX.test(value)) {
    const length = size !== null ? `${2 * size} ` : "an even number of ";
    throw new ProofInvalid(`shape: ${where} must be ${length}lowercase hex characters`);
  }
  return fromHex(value);
}

export function jsonHashes(value, where) {
  return jsonList(value, where).map((item, i) => jsonHex(item, `${where}[${i}]`, 32));
}

function header(value, where) {
  const h = jsonObject(value, HEADER_KEYS, where);
  jsonVersion(h.version, 4, `${where}.version`);
  const hash = (name) => jsonHex(h[name], `${where}.${name}`, 32);
  const int = (name) => jsonUint(h[name], `${where}.${name}`);
  const chainId = jsonStr(h.chain_id, `${where}.chain_id`);
  const height = int("height");
  const prevHash = hash("prev_hash");
  const time = int("time");
  const proposer = hash("proposer");
  const txCount = int("tx_count");
  return {
    chainId, height, prevHash, time, proposer, txCount, txRoot: hash("tx_root"), receiptRoot: hash("receipt_root"),
    stateRoot: hash("state_root"), validatorsHash: hash("validators_hash"),
    nextValidatorsHash: hash("next_validators_hash"),
  };
}

function signatures(value, where) {
  return jsonList(value, where).map((item, i) => {
    const entry = jsonObject(item, SIGNATURE_KEYS, `${where}[${i}]`);
    return [jsonHex(entry.validator, `${where}[${i}].validator`, 32),
      jsonHex(entry.signature, `${where}[${i}].signature`, 64)];
  });
}

// A header with its commit certificate: {header, commitHeight, blockHash, signatures: [[key, seal]]}.
export function parseCertified(obj, where) {
  const commit = jsonObject(obj.commit, COMMIT_KEYS, `${where}commit`);
  return {
    header: header(obj.header, `${where}header`),
    commitHeight: jsonUint(commit.height, `${where}commit.height`),
    blockHash: jsonHex(commit.block_hash, `${where}commit.block_hash`, 32),
    signatures: signatures(commit.signatures, `${where}commit.signatures`),
  };
}

export function parseChanges(top) {
  return jsonList(top.validator_changes, "validator_changes").map((item, i) => {
    const where = `validator_changes[${i}]`;
    const step = jsonObject(item, CHANGE_KEYS, where);
    return { block: parseCertified(step, `${where}.`), validators: jsonHashes(step.validators, `${where}.validators`) };
  });
}

// A transaction proof whose shape is right, with its values decoded.
export function parseTransactionProof(proof) {
  const top = jsonObject(proof, PROOF_KEYS, "proof");
  jsonVersion(top.version, 2, "version");
  const receipt = jsonObject(top.receipt, RECEIPT_KEYS, "receipt");
  const txHash = jsonHex(top.tx_hash, "tx_hash", 32);
  const tx = jsonHex(top.tx, "tx");
  const code = jsonUint(receipt.code, "receipt.code");
  const log = jsonStr(receipt.log, "receipt.log");
  const index = jsonUint(top.index, "index");
  const txPath = jsonHashes(top.tx_path, "tx_path");
  const receiptPath = jsonHashes(top.receipt_path, "receipt_path");
  const block = parseCertified(top, "");
  return { txHash, tx, code, log, index, txPath, receiptPath, block, changes: parseChanges(top) };
}
