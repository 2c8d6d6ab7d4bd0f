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
  const time = data.genesis_time_ms ?? 0;
  if (!Number.isSafeInteger(time) || time < 0) {
    throw new Error("genesis: genesis_time_ms must be a non-negative integer");
  }
  const genesis = { chain_id: data.chain_id, genesis_time_ms: time };
  for (const [role, fields] of Object.entries(MEMBER_FIELDS)) genesis[role] = members(data, role, fields);
  if (genesis.validators.length === 0) throw new Error("genesis: at least one validator is required");
  checkUnique(genesis, Object.keys(MEMBER_FIELDS), "pubkey", "a public key");
  checkUnique(genesis, ["validators", "observers"], "name", "a name");
  checkUnique(genesis, ["clients", "admins"], "name", "a name");
  const threshold = data.admin_threshold;
  if (threshold !== undefined) {
    if (!Number.isSafeInteger(threshold) || threshold < 1 || threshold > genesis.admins.length) {
      throw new Error(`genesis: admin_threshold = ${threshold} must be a positive integer `
        + `the ${genesis.admins.length} admins can meet`);
    }
    genesis.admin_threshold = threshold;
  }
  return genesis;
}

// What node/chain/genesis.py refuses: a key in two roles, a name twice among the nodes or the senders.
function checkUnique(genesis, roles, field, what) {
  const where = new Map();
  for (const role of roles) {
    genesis[role].forEach((m, i) => {
      if (where.has(m[field])) {
        throw new Error(`genesis: ${what} is listed twice, as ${where.get(m[field])} and ${role}[${i}]`);
      }
      where.set(m[field], `${role}[${i}]`);
    });
  }
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
    const nameBytes = new TextEncoder().encode(entry.name).length;
    if (nameBytes < 1 || nameBytes > 64) throw new Error(`genesis: ${where}.name must be 1..64 bytes of UTF-8`);
    if (typeof entry.pubkey !== "string" || !/^[0-9a-fA-F]{64}$/.test(entry.pubkey)) {
      throw new Error(`genesis: ${where}.pubkey is not 64 hex characters`);
    }
    if (fields.includes("address")) {
      const match = typeof entry.address === "string" ? /^(.+):([0-9]+)$/.exec(entry.address) : null;
      if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
        throw new Error(`genesis: ${where}.address must be 'host:port' with a port in 1..65535`);
      }
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
      if (!Array.isArray(root[name]) || root[name].inline) {
        throw new Error(`${where}: ${name} is not an array of tables`);
      }
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
