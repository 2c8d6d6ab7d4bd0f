// Reading a genesis.toml in the browser: the TOML that `alliance genesis` and `alliance testnet` write
// (top-level keys with string, integer and array values, and arrays of tables such as [[validators]]),
// and the checks of node/chain/genesis.py that matter to a verifier. Anything else is a clear Error.

const MEMBER_FIELDS = { validators: ["name", "pubkey", "address"], observers: ["name", "pubkey", "address"],
  clients: ["name", "pubkey"], admins: ["name", "pubkey"] };
const TOP_FIELDS = ["chain_id", "genesis_time_ms", "validators", "observers", "clients", "admins", "admin_threshold"];

export function parseGenesis(text) {
  if (typeof text !== "string") throw new Error("genesis: the genesis must be given as the text of genesis.toml");
  const data = parseToml(text);
  for (const key of Object.keys(data)) {
    if (!TOP_FIELDS.includes(key)) throw new Error(`genesis: unknown field '${key}'`);
  }
  if (typeof data.chain_id !== "string" || data.chain_id === "") {
    throw new Error("genesis: chain_id must be a non-empty string");
  }
  const genesis = { chain_id: data.chain_id };
  for (const [role, fields] of Object.entries(MEMBER_FIELDS)) genesis[role] = members(data, role, fields);
  if (genesis.validators.length === 0) throw new Error("genesis: at least one validator is required");
  genesis.genesis_time_ms = data.genesis_time_ms ?? 0;
  if (data.admin_threshold !== undefined) genesis.admin_threshold = data.admin_threshold;
  return genesis;
}

function members(data, role, fields) {
  const entries = data[role] ?? [];
  if (!Array.isArray(entries)) throw new Error(`genesis: ${role} must be an array of tables`);
  return entries.map((entry, i) => {
    const where = `${role}[${i}]`;
    if (typeof entry !== "object" || Array.isArray(entry) || typeof entry.name !== "string") {
      throw new Error(`genesis: ${where} needs a string 'name'`);
    }
    for (const key of Object.keys(entry)) {
      if (!fields.includes(key)) throw new Error(`genesis: ${where}: unknown field '${key}'`);
    }
    if (typeof entry.pubkey !== "string" || !/^[0-9a-fA-F]{64}$/.test(entry.pubkey)) {
      throw new Error(`genesis: ${where}.pubkey is not 64 hex characters`);
    }
    return { ...entry, pubkey: entry.pubkey.toLowerCase() };
  });
}

// ---- the TOML subset ----------------------------------------------------------------------

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

function parseToml(text) {
  const root = Object.create(null);
  let table = root;
  text.split(/\r?\n/).forEach((raw, i) => {
    const where = `genesis: line ${i + 1}`;
    const line = stripComment(raw, where).trim();
    if (line === "") return;
    const header = /^\[\[\s*([A-Za-z0-9_-]+)\s*\]\]$/.exec(line);
    if (header) {
      const name = header[1];
      if (!(name in root)) root[name] = [];
      if (!Array.isArray(root[name]) || root[name].inline) throw new Error(`${where}: ${name} is not an array of tables`);
      table = Object.create(null);
      root[name].push(table);
      return;
    }
    if (line.startsWith("[")) throw new Error(`${where}: only [[arrays of tables]] are supported here`);
    const eq = line.indexOf("=");
    const key = eq < 0 ? "" : line.slice(0, eq).trim();
    if (!BARE_KEY.test(key)) throw new Error(`${where}: expected key = value`);
    if (key in table) throw new Error(`${where}: the key '${key}' is defined twice`);
    const reader = { text: line, at: eq + 1, where };
    table[key] = readValue(reader);
    skipSpace(reader);
    if (reader.at !== line.length) throw new Error(`${where}: unexpected text after the value of '${key}'`);
  });
  return root;
}

// Removes a # comment that is not inside a string.
function stripComment(line, where) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === "#") return line.slice(0, i);
  }
  if (quote) throw new Error(`${where}: unterminated string`);
  return line;
}

function skipSpace(reader) {
  while (reader.at < reader.text.length && " \t".includes(reader.text[reader.at])) reader.at++;
}

function readValue(reader) {
  skipSpace(reader);
  const rest = reader.text.slice(reader.at);
  if (rest.startsWith('"')) return readBasicString(reader);
  if (rest.startsWith("'")) {
    const end = reader.text.indexOf("'", reader.at + 1);
    if (end < 0) throw new Error(`${reader.where}: unterminated string`);
    const value = reader.text.slice(reader.at + 1, end);
    reader.at = end + 1;
    return value;
  }
  if (rest.startsWith("[")) return readArray(reader);
  const number = /^[+-]?(?:0|[1-9](?:_?[0-9])*)(?![0-9A-Za-z_.:+-])/.exec(rest);
  if (number) {
    reader.at += number[0].length;
    const value = Number(number[0].replace(/_/g, ""));
    if (!Number.isSafeInteger(value)) throw new Error(`${reader.where}: integer out of range`);
    return value;
  }
  throw new Error(`${reader.where}: unsupported value (strings, integers and arrays only)`);
}

function readArray(reader) {
  reader.at++;
  const out = [];
  out.inline = true;
  for (;;) {
    skipSpace(reader);
    if (reader.text[reader.at] === "]") { reader.at++; return out; }
    out.push(readValue(reader));
    skipSpace(reader);
    if (reader.text[reader.at] === ",") reader.at++;
    else if (reader.text[reader.at] !== "]") throw new Error(`${reader.where}: expected , or ] in an array`);
  }
}

const ESCAPES = { b: "\b", t: "\t", n: "\n", f: "\f", r: "\r", '"': '"', "\\": "\\" };

function readBasicString(reader) {
  const { text } = reader;
  let out = "";
  reader.at++;
  for (;;) {
    if (reader.at >= text.length) throw new Error(`${reader.where}: unterminated string`);
    const c = text[reader.at++];
    if (c === '"') return out;
    if (c !== "\\") { out += c; continue; }
    const e = text[reader.at++];
    const hex = e === "u" ? 4 : e === "U" ? 8 : 0;
    if (e in ESCAPES) out += ESCAPES[e];
    else if (hex && new RegExp(`^[0-9a-fA-F]{${hex}}$`).test(text.slice(reader.at, reader.at + hex))) {
      out += String.fromCodePoint(parseInt(text.slice(reader.at, reader.at + hex), 16));
      reader.at += hex;
    } else throw new Error(`${reader.where}: invalid escape in a string`);
  }
}
