// Ed25519 verification with WebCrypto, refusing what libsodium (PyNaCl, the node's verifier) refuses
// before the curve equation: a signature's S not below the group order, R or the public key of small
// order, a public key whose y is not reduced. WebCrypto's cofactorless check accepts some of these
// (a signature with R the identity point, a validator key that is the identity), libsodium none.

import { toHex } from "./bytes.js";

const ORDER = (1n << 252n) + 27742317777372353535851937790883648493n;
// libsodium's ge25519_has_small_order list: the points of order 1, 2, 4 and 8, the last byte's top
// bit (the sign of x) ignored, including y = p and y = p + 1 written unreduced.
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

function littleEndian(bytes) {
  return bytes.reduceRight((n, b) => (n << 8n) | BigInt(b), 0n);
}

function smallOrder(point) {
  const masked = Uint8Array.from(point);
  masked[31] &= 0x7f;
  return SMALL_ORDER.includes(toHex(masked));
}

// libsodium's ge25519_is_canonical: y below p = 2^255 - 19.
function reduced(point) {
  return littleEndian(point.subarray(0, 32)) % (1n << 255n) < (1n << 255n) - 19n;
}

const imported = new Map();

export async function verifyEd25519(key, message, signature) {
  if (littleEndian(signature.subarray(32)) >= ORDER || smallOrder(signature.subarray(0, 32))) return false;
  if (!reduced(key) || smallOrder(key)) return false;
  const hex = toHex(key);
  try {
    if (!imported.has(hex)) {
      imported.set(hex, await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]));
    }
    return await crypto.subtle.verify({ name: "Ed25519" }, imported.get(hex), signature, message);
  } catch {
    return false; // a key that is no curve point verifies nothing
  }
}
