// A strict JSON reader for proofs: what Python's json.loads reads, with what JSON.parse loses kept.
// Integers (no fraction, no exponent) become BigInt, so that 2**64 and 4.0 stay what they are;
// other numbers become JsonFloat; an object repeating a key is refused, as `alliance verify-proof`
// refuses it (most parsers silently keep the last one).

const MAX_DEPTH = 512; // far beyond any proof; bounds the recursion

export class JsonFloat {
  constructor(value) {
    this.value = value;
  }
}

export function parseJson(text) {
  const reader = { text, at: 0 };
  const value = readValue(reader, 0);
  skipSpace(reader);
  if (reader.at !== text.length) fail(reader, "extra data");
  return value;
}

function fail(reader, what) {
  throw new SyntaxError(`${what} at character ${reader.at}`);
}

function skipSpace(reader) {
  while (reader.at < reader.text.length && " \t\n\r".includes(reader.text[reader.at])) reader.at++;
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
const WORDS = [["true", true], ["false", false], ["null", null], ["NaN", NaN], ["Infinity", Infinity],
  ["-Infinity", -Infinity]];

function readValue(reader, depth) {
  if (depth > MAX_DEPTH) fail(reader, "nested too deeply");
  skipSpace(reader);
  const c = reader.text[reader.at];
  if (c === "{") return readObject(reader, depth);
  if (c === "[") return readArray(reader, depth);
  if (c === '"') return readString(reader);
  for (const [word, value] of WORDS) {
    if (reader.text.startsWith(word, reader.at)) {
      reader.at += word.length;
      return typeof value === "number" ? new JsonFloat(value) : value;
    }
  }
  NUMBER.lastIndex = reader.at;
  const match = NUMBER.exec(reader.text);
  if (!match) fail(reader, "expecting a value");
  reader.at += match[0].length;
  return match[1] === undefined && match[2] === undefined ? BigInt(match[0]) : new JsonFloat(Number(match[0]));
}

function expect(reader, char) {
  skipSpace(reader);
  if (reader.text[reader.at] !== char) fail(reader, `expecting '${char}'`);
  reader.at++;
}

function readArray(reader, depth) {
  reader.at++;
  const out = [];
  skipSpace(reader);
  if (reader.text[reader.at] === "]") { reader.at++; return out; }
  for (;;) {
    out.push(readValue(reader, depth + 1));
    skipSpace(reader);
    if (reader.text[reader.at] === "]") { reader.at++; return out; }
    expect(reader, ",");
  }
}

function readObject(reader, depth) {
  reader.at++;
  const out = Object.create(null);
  skipSpace(reader);
  if (reader.text[reader.at] === "}") { reader.at++; return out; }
  for (;;) {
    skipSpace(reader);
    if (reader.text[reader.at] !== '"') fail(reader, "expecting a property name in double quotes");
    const key = readString(reader);
    if (Object.prototype.hasOwnProperty.call(out, key)) fail(reader, `the key ${JSON.stringify(key)} appears twice`);
    expect(reader, ":");
    out[key] = readValue(reader, depth + 1);
    skipSpace(reader);
    if (reader.text[reader.at] === "}") { reader.at++; return out; }
    expect(reader, ",");
  }
}

const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

function readString(reader) {
  const { text } = reader;
  let out = "";
  reader.at++;
  for (;;) {
    if (reader.at >= text.length) fail(reader, "unterminated string");
    const c = text[reader.at++];
    if (c === '"') return out;
    if (c < " ") fail(reader, "invalid control character in a string");
    if (c !== "\\") { out += c; continue; }
    const e = text[reader.at++];
    if (e in ESCAPES) out += ESCAPES[e];
    else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(reader.at, reader.at + 4))) {
      out += String.fromCharCode(parseInt(text.slice(reader.at, reader.at + 4), 16));
      reader.at += 4;
    } else fail(reader, "invalid escape");
  }
}
