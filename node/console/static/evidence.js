// Evidence: a file's SHA-256 computed here, its record's state proof fetched from the node, and the proof
// checked here (verify.js: Merkle path and the validators' Ed25519 certificate) against a genesis the
// user supplies, so that the answer does not rest on trusting the node.
import { h, kv, short, when } from "./dom.js";

const encoder = new TextEncoder();

async function verifier() {
  try { return await import("./verify.js"); } catch { return null; }
}

function verdict(id, ok, text, checks = []) {
  const box = document.getElementById(id);
  box.className = ok ? "ok" : "bad";
  box.dataset.verdict = ok ? "verified" : "not-verified";
  box.replaceChildren(h("p", {}, h("strong", {}, ok ? "" : "NOT verified: "), text),
    h("ul", { class: "checks" }, checks.map((c) => h("li", {}, c))));
}

function genesisNames(genesis, fallback) {
  const named = new Map(fallback);
  for (const v of (genesis && genesis.validators) || []) if (v.pubkey && v.name) named.set(v.pubkey, v.name);
  return named;
}

export async function evidencePage(call, loadNames) {
  if (!globalThis.crypto || !crypto.subtle) {
    return h("section", { class: "bad", id: "ev-insecure" }, "Evidence checks need WebCrypto, which the browser gives ",
      "only to a secure page: open the console over https, or over http on 127.0.0.1 or localhost.");
  }
  const genesisFile = h("input", { id: "ev-genesis-file", type: "file", accept: ".toml,text/plain" });
  const genesisText = h("textarea", { id: "ev-genesis-text", placeholder: "or paste genesis.toml here" });
  genesisFile.addEventListener("change", async () => { genesisText.value = await genesisFile.files[0].text(); });
  const fileInput = h("input", { id: "ev-file", type: "file" });
  const drop = h("div", { class: "drop", id: "ev-drop" }, "Drop a file here, or choose one: ", fileInput);
  const proofFile = h("input", { id: "pf-file", type: "file", accept: ".json,.bin,application/json,application/octet-stream" });
  const proofText = h("textarea", { id: "pf-text", placeholder: "or paste a proof (JSON) here" });
  let compact = null; // a compact proof file (binary): its bytes, and the label shown for it in the text area
  proofFile.addEventListener("change", async () => {
    const file = proofFile.files[0];
    const bytes = new Uint8Array(await file.arrayBuffer());
    compact = bytes[0] === 0x98 ? { bytes, label: `compact state proof ${file.name} (${bytes.length} bytes)` } : null;
    proofText.value = compact ? compact.label : new TextDecoder().decode(bytes);
  });
  let memberNames = new Map(); // pubkey -> name, from the node: only to label keys, never to decide

  // The genesis the user gave, parsed, with its own SHA-256; null (and a verdict said) when there is none.
  async function suppliedGenesis(lib, id) {
    const text = genesisText.value.trim();
    if (!text) { verdict(id, false, "supply the genesis.toml of the chain you trust (file or pasted) first"); return null; }
    try {
      const genesis = lib.parseGenesis(text);
      const digest = await lib.sha256Hex(encoder.encode(genesisText.value));
      return { genesis, about: `chain id ${genesis.chain_id}, genesis SHA-256 ${short(digest)}` };
    } catch (e) { verdict(id, false, `the genesis does not parse: ${e.message || e}`); return null; }
  }

  // `given` is the proof as the node sent it, or the JSON text the user gave (exact integers: see verify.js).
  async function check(given, proof, id, describe) {
    const lib = await verifier();
    if (!lib) return verdict(id, false, "the in-browser verifier (verify.js) is not installed on this node");
    const supplied = await suppliedGenesis(lib, id);
    if (!supplied) return;
    const result = await lib.verifyProof(given, supplied.genesis);
    if (!result.ok) return verdict(id, false, `${result.reason} (checked against the genesis you supplied: ${supplied.about})`);
    if (given instanceof Uint8Array) proof = await lib.expandCompact(given, supplied.genesis); // for the signers' names
    const named = genesisNames(supplied.genesis, memberNames);
    const signers = (proof.commit.signatures || []).map((s) => named.get(s.validator) || short(s.validator)).join(", ");
    verdict(id, true, `${describe(result)}, proved by the certificate of validators ${signers} of the genesis you supplied (${supplied.about}).`,
      result.checks);
  }

  async function checkFile(file) {
    const lib = await verifier();
    if (!lib) return verdict("ev-result", false, "the in-browser verifier (verify.js) is not installed on this node");
    const digest = await lib.sha256Hex(new Uint8Array(await file.arrayBuffer()));
    document.getElementById("ev-digest").replaceChildren(kv([["file", file.name], ["size", `${file.size} bytes`], ["SHA-256", h("code", {}, digest)]]));
    const record = document.getElementById("ev-record");
    record.replaceChildren();
    let proof;
    try {
      proof = await call("query", { family: "notary", key: digest, prove: true });
    } catch (e) { return verdict("ev-result", false, `the node gave no proof: ${e.message}`); }
    if (!proof || proof.family !== "notary" || String(proof.key).toLowerCase() !== digest) {
      return verdict("ev-result", false, "the node answered a proof of another record");
    }
    const found = proof.result;
    try { memberNames = await loadNames(); } catch { /* names are a convenience */ }
    await check(proof, proof, "ev-result", (r) => {
      if (!r.present) return `Verified absent at height ${r.height}: no record of this file's SHA-256 ${short(digest)} in the state`;
      record.replaceChildren(h("h2", {}, "The record"), kv([["recorder", h("code", {}, found.recorder)], ["height", found.height],
        ["time", when(found.time)], ["transaction", h("a", { href: `#/tx/${found.tx_hash}`, class: "mono" }, short(found.tx_hash))],
        ["meta", h("code", {}, JSON.stringify(found.meta))]]));
      return `Verified: this file's SHA-256 ${short(digest)} was recorded at height ${found.height} by ${memberNames.get(found.recorder) || short(found.recorder)} ` +
        `(${when(found.time)}; the proof is of the state at height ${r.height})`;
    });
  }

  fileInput.addEventListener("change", () => fileInput.files[0] && checkFile(fileInput.files[0]));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); if (ev.dataTransfer.files[0]) checkFile(ev.dataTransfer.files[0]); });

  async function checkProofText() {
    const given = compact && proofText.value === compact.label ? compact.bytes : proofText.value;
    let proof = null;
    if (!(given instanceof Uint8Array)) {
      try { proof = JSON.parse(given); } catch { return verdict("pf-result", false, "the proof is not JSON"); }
    }
    await check(given, proof, "pf-result", (r) => r.kind === "transaction"
      ? `Verified: the transaction is in block ${r.height} (${short(r.block_hash)})`
      : r.present ? `Verified: ${r.family} ${short(r.key)} holds this value at height ${r.height}`
        : `Verified absent at height ${r.height}: ${r.family} ${short(r.key)} has no value`);
  }

  return h("div", {},
    h("section", {}, h("h2", {}, "1. The genesis you trust"),
      h("p", { class: "hint" }, "Proofs are checked against this genesis, not against what the node says."),
      genesisFile, genesisText),
    h("section", {}, h("h2", {}, "2. Check a file"), drop, h("div", { id: "ev-digest" }), h("div", { id: "ev-result" }), h("div", { id: "ev-record" })),
    h("section", {}, h("h2", {}, "Or verify a proof file"),
      h("p", { class: "hint" }, "A proof from alliance tx get --prove (or --prove --compact), alliance notarize --proof, get_proof or query with prove."),
      proofFile, proofText, h("button", { id: "pf-verify", onclick: checkProofText }, "Verify proof"), h("div", { id: "pf-result" })));
}
