// Canonical MessagePack (docs/encoding.md), as node/chain/canonical.py writes and reads it: only nil,
// bool, int, str, bin, array and map; maps with str keys in UTF-8 byte order; every value in its
// shortest form. `encode` writes what msgpack.packb(value, use_bin_type=True) writes; `decodeCanonical`
// accepts exactly the bytes that canonical.unpack accepts.
//
// Values: null, booleans, integers as BigInt (or safe-integer Numbers when encoding), strings,
// Uint8Array for bin, arrays, and Map (str keys, in their order) for maps.

import { compareBytes } from "./bytes.js";

const MAX_DEPTH = 32; // canonical.py refuses containers nested deeper
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

// Decodes `bytes`, refusing anything that is not its own canonical encoding.
export function decodeCanonical(bytes) {
  const reader = { bytes, at: 0 };
  const value = read(reader, 0);
  if (reader.at !== bytes.length) throw new CodecError("malformed", "not MessagePack (ExtraData)");
  const again = encode(value);
  if (again.length !== bytes.length || again.some((b, i) => b !== bytes[i])) {
    throw new CodecError("not_canonical", "bytes differ from the canonical encoding");
  }
  return value;
}

function take(reader, n) {
  if (reader.at + n > reader.bytes.length) throw new CodecError("malformed", "not MessagePack (truncated)");
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
  try {
    return strictUtf8.decode(take(reader, n));
  } catch (err) {
    if (err instanceof CodecError) throw err;
    throw new CodecError("malformed", "not MessagePack (invalid UTF-8)");
  }
}

function container(reader, size, depth, isMap) {
  if (depth > MAX_DEPTH) throw new CodecError("malformed", `nesting deeper than ${MAX_DEPTH}`);
  if ((isMap ? 2 : 1) * size > reader.bytes.length - reader.at) {  // each element takes a byte at least
    throw new CodecError("malformed", "not MessagePack (truncated)");
  }
  if (!isMap) return Array.from({ length: size }, () => read(reader, depth + 1));
  const map = new Map();
  let previous = null;
  for (let i = 0; i < size; i++) {
    const key = read(reader, depth + 1);
    if (typeof key !== "string") throw new CodecError("malformed", "map key is not a string");
    const keyBytes = utf8.encode(key);
    if (previous !== null && compareBytes(keyBytes, previous) <= 0) {
      throw new CodecError("not_canonical", "map keys are not sorted and unique");
    }
    previous = keyBytes;
    map.set(key, read(reader, depth + 1));
  }
  return map;
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
    case 0xca: case 0xcb: throw new CodecError("malformed", "type float is not allowed");
    default: throw new CodecError("malformed", `extension or reserved byte 0x${b.toString(16)} is not allowed`);
  }
}
