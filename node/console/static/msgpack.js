// Canonical MessagePack (docs/encoding.md), as node/chain/canonical.py writes and reads it: only nil,
// bool, int, str, bin, array and map; maps with str keys in UTF-8 byte order; every value in its
// shortest form. `encode` writes what msgpack.packb(value, use_bin_type=True) writes; `decodeCanonical`
// accepts exactly the bytes that canonical.unpack accepts.
//
// Values: null, booleans, integers as BigInt (or safe-integer Numbers when encoding), strings,
// Uint8Array for bin, arrays, and Map (str keys, in their order) for maps.

import { compareBytes } from "./bytes.js";

const MAX_DEPTH = 32; // canonical.py refuses containers nested deeper
const STACK_MAX = 1024; // msgpack's own limit of open containers
const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);

export class CodecError extends Error {
  constructor(reason, detail) {
    super(`${reason}: ${detail}`);
    this.reason = reason;
  }
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// ---- encoding -----------------------------------------------------------------------------

export function encode(value) {
  const out = [];
  write(value, out);
  return Uint8Array.from(out);
}

function pushUint(out, n, bytes) {
  for (let shift = BigInt(8 * (bytes - 1)); shift >= 0n; shift -= 8n) out.push(Number((n >> shift) & 0xffn));
}

function writeInt(n, out) {
  if (n < INT64_MIN || n > UINT64_MAX) throw new CodecError("malformed", "integer out of range");
  if (n >= 0n) {
    if (n < 128n) out.push(Number(n));
    else if (n < 256n) { out.push(0xcc); pushUint(out, n, 1); }
    else if (n < 65536n) { out.push(0xcd); pushUint(out, n, 2); }
    else if (n < 4294967296n) { out.push(0xce); pushUint(out, n, 4); }
    else { out.push(0xcf); pushUint(out, n, 8); }
  } else if (n >= -32n) out.push(Number(n & 0xffn));
  else if (n >= -128n) { out.push(0xd0); pushUint(out, n & 0xffn, 1); }
  else if (n >= -32768n) { out.push(0xd1); pushUint(out, n & 0xffffn, 2); }
  else if (n >= -2147483648n) { out.push(0xd2); pushUint(out, n & 0xffffffffn, 4); }
  else { out.push(0xd3); pushUint(out, n & UINT64_MAX, 8); }
}

function writeHead(out, size, fix, fixMax, codes) {
  if (size <= fixMax) out.push(fix | size);
  else if (codes[0] !== null && size < 256) { out.push(codes[0]); pushUint(out, BigInt(size), 1); }
  else if (size < 65536) { out.push(codes[1]); pushUint(out, BigInt(size), 2); }
  else { out.push(codes[2]); pushUint(out, BigInt(size), 4); }
}

function write(value, out) {
  if (value === null) out.push(0xc0);
  else if (value === false) out.push(0xc2);
  else if (value === true) out.push(0xc3);
  else if (typeof value === "bigint") writeInt(value, out);
  else if (typeof value === "number" && Number.isSafeInteger(value)) writeInt(BigInt(value), out);
  else if (typeof value === "string") {
    const bytes = utf8.encode(value);
    writeHead(out, bytes.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
    for (const b of bytes) out.push(b);
  } else if (value instanceof Uint8Array) {
    writeHead(out, value.length, 0xc4, -1, [0xc4, 0xc5, 0xc6]);
    for (const b of value) out.push(b);
  } else if (Array.isArray(value)) {
    writeHead(out, value.length, 0x90, 15, [null, 0xdc, 0xdd]);
    for (const item of value) write(item, out);
  } else if (value instanceof Map) {
    writeHead(out, value.size, 0x80, 15, [null, 0xde, 0xdf]);
    for (const [k, v] of value) { write(k, out); write(v, out); }
  } else throw new CodecError("malformed", `type ${typeof value} is not allowed`);
}

// ---- decoding -----------------------------------------------------------------------------

// Decodes `bytes`, refusing anything that is not its own canonical encoding, with the faults in the
// order canonical.unpack meets them: while parsing (msgpack's own errors, map keys at each map's end),
// extra bytes, then floats and nesting, then a re-encoding that differs.
export function decodeCanonical(bytes) {
  const reader = { bytes, at: 0 };
  const value = read(reader, 0);
  if (reader.at !== bytes.length) throw new CodecError("malformed", "not MessagePack (ExtraData)");
  if (value instanceof Float) throw new CodecError("malformed", "type float is not allowed");
  if (Array.isArray(value) || value instanceof Map) checkDecoded(value, 0);
  const again = encode(value);
  if (again.length !== bytes.length || again.some((b, i) => b !== bytes[i])) {
    throw new CodecError("not_canonical", "bytes differ from the canonical encoding");
  }
  return value;
}

class Float {} // msgpack reads floats; canonical.py refuses them after parsing

function checkDecoded(obj, depth) {
  if (depth > MAX_DEPTH) throw new CodecError("malformed", `nesting deeper than ${MAX_DEPTH}`);
  for (const value of obj instanceof Map ? obj.values() : obj) {
    if (Array.isArray(value) || value instanceof Map) checkDecoded(value, depth + 1);
    else if (value instanceof Float) throw new CodecError("malformed", "type float is not allowed");
  }
}

const incomplete = () => new CodecError("malformed", "not MessagePack (ValueError)");

function take(reader, n) {
  if (reader.at + n > reader.bytes.length) throw incomplete();
  const out = reader.bytes.subarray(reader.at, reader.at + n);
  reader.at += n;
  return out;
}

function uint(reader, n) {
  let value = 0n;
  for (const b of take(reader, n)) value = (value << 8n) | BigInt(b);
  return value;
}

function sint(reader, n) {
  const value = uint(reader, n);
  const bits = BigInt(8 * n);
  return value >= 1n << (bits - 1n) ? value - (1n << bits) : value;
}

function str(reader, n) {
  const raw = take(reader, n);
  try {
    return strictUtf8.decode(raw);
  } catch {
    throw new CodecError("malformed", "not MessagePack (UnicodeDecodeError)");
  }
}

function container(reader, size, depth, isMap) {
  if (size > 0 && depth >= STACK_MAX) throw new CodecError("malformed", "not MessagePack (StackError)");
  const items = [];
  for (let i = 0; i < size; i++) {
    const item = read(reader, depth + 1);
    if (!isMap) { items.push(item); continue; }
    const value = read(reader, depth + 1);
    if (typeof item !== "string" && !(item instanceof Uint8Array)) throw incomplete(); // strict_map_key
    items.push([item, value]);
  }
  return isMap ? sortedMap(items) : items;
}

// canonical.py's object_pairs_hook: str keys, in UTF-8 byte order, none twice.
function sortedMap(pairs) {
  let previous = null;
  for (const [key] of pairs) {
    if (typeof key !== "string") throw new CodecError("malformed", `map key ${bytesRepr(key)} is not a string`);
    const keyBytes = utf8.encode(key);
    if (previous !== null && compareBytes(keyBytes, previous) <= 0) {
      throw new CodecError("not_canonical", "map keys are not sorted and unique");
    }
    previous = keyBytes;
  }
  return new Map(pairs);
}

// Python's repr of bytes.
function bytesRepr(bytes) {
  const text = Array.from(bytes, (b) => String.fromCharCode(b)).join("");
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const named = { 9: "\\t", 10: "\\n", 13: "\\r", 92: "\\\\" };
  const body = Array.from(bytes, (b) => named[b] ?? (b === quote.charCodeAt(0) ? `\\${quote}`
    : b >= 32 && b < 127 ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`)).join("");
  return `b${quote}${body}${quote}`;
}

function ext(reader, size) {
  const [code] = take(reader, 1);
  take(reader, size);
  throw new CodecError("malformed", `extension type ${(code << 24) >> 24} is not allowed`);
}

function read(reader, depth) {
  const [b] = take(reader, 1);
  if (b <= 0x7f) return BigInt(b);
  if (b >= 0xe0) return BigInt(b - 0x100);
  if (b >= 0xa0 && b <= 0xbf) return str(reader, b & 0x1f);
  if (b >= 0x90 && b <= 0x9f) return container(reader, b & 0x0f, depth, false);
  if (b >= 0x80 && b <= 0x8f) return container(reader, b & 0x0f, depth, true);
  switch (b) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: case 0xc5: case 0xc6: return take(reader, Number(uint(reader, 1 << (b - 0xc4)))).slice();
    case 0xcc: case 0xcd: case 0xce: case 0xcf: return uint(reader, 1 << (b - 0xcc));
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return sint(reader, 1 << (b - 0xd0));
    case 0xd9: case 0xda: case 0xdb: return str(reader, Number(uint(reader, 1 << (b - 0xd9))));
    case 0xdc: case 0xdd: return container(reader, Number(uint(reader, 2 << (b - 0xdc))), depth, false);
    case 0xde: case 0xdf: return container(reader, Number(uint(reader, 2 << (b - 0xde))), depth, true);
    case 0xca: case 0xcb: take(reader, b === 0xca ? 4 : 8); return new Float();
    case 0xc7: case 0xc8: case 0xc9: return ext(reader, Number(uint(reader, 1 << (b - 0xc7))));
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return ext(reader, 1 << (b - 0xd4));
    default: throw new CodecError("malformed", "not MessagePack (FormatError)"); // 0xc1, never used
  }
}
