// The console's router and its chain pages: overview, blocks, transaction, history.
import { h, table, kv, short, age, when } from "./dom.js";
import { call, batch, token, subscribeBlocks, RpcError } from "./rpc.js";
import { evidencePage } from "./evidence.js";

const page = document.getElementById("page");
const live = document.getElementById("live");
const BLOCKS_SHOWN = 20;
const POLL_MS = 2000;
let names = new Map(); // pubkey -> member name, from get_members

const nameOf = (pubkey) => names.get(pubkey) || short(pubkey);
const errorBox = (e) => h("p", { class: "bad" }, e instanceof RpcError || e instanceof Error ? e.message : String(e));

const ROLES = ["validators", "observers", "clients", "admins"];
const namesOf = (members) => new Map(ROLES.flatMap((k) => members[k] || []).map((m) => [m.pubkey, m.name]));

// The members' names by public key, from the node: to label keys, never to decide anything.
async function loadNames() {
  names = namesOf(await call("get_members"));
  return names;
}

function vote(last) {
  return last ? `h${last.height} v${last.view}, ${age(last.at)}` : "none";
}

function stuckView(state) {
  if (state instanceof RpcError && state.code === -32601) {
    return h("section", {}, h("h2", {}, "Consensus"), h("p", { class: "hint" }, "This node does not report consensus_state."));
  }
  if (state instanceof Error) return h("section", {}, h("h2", {}, "Consensus"), errorBox(state));
  return h("section", { id: "consensus" },
    h("h2", {}, "Consensus, as this node sees it"),
    h("p", { class: "waiting", id: "waiting-for" }, state.waiting_for || "Not waiting for anything."),
    table(["validator", "connected", "height", "view", "last proposal", "last prepare", "last commit"],
      state.validators.map((v) => [v.name || short(v.pubkey),
        h("span", { class: v.connected ? "up" : "down" }, v.connected ? "yes" : "no"),
        v.height ?? "", v.view ?? "", vote(v.last_proposal), vote(v.last_prepare), vote(v.last_commit)])));
}

async function overview() {
  const [status, members, state] = await batch([["status", {}], ["get_members", {}], ["consensus_state", {}]]);
  if (status instanceof Error) return errorBox(status);
  if (!(members instanceof Error)) names = namesOf(members);
  return h("div", {},
    h("section", {}, h("h2", {}, "Chain"), kv([
      ["chain id", h("span", { id: "ov-chain" }, status.chain_id)],
      ["this node", `${status.node.name} (${short(status.node.pubkey)})`],
      ["height", h("span", { id: "ov-height" }, status.height)],
      ["last block", h("a", { href: `#/block/${status.height}`, class: "mono" }, short(status.last_block_hash))],
      ["view", h("span", { id: "ov-view" }, status.view)],
      ["leader", nameOf(status.leader)],
      ["syncing", status.syncing ? "yes" : "no"],
    ])),
    stuckView(state),
    h("section", {}, h("h2", {}, "Peers"), table(["peer", "connected"],
      status.peers.map((p) => [p.name || short(p.pubkey),
        h("span", { class: p.connected ? "up" : "down" }, p.connected ? "connected" : "not connected")]))),
    members instanceof Error ? errorBox(members) : h("section", {}, h("h2", {}, `Members at height ${members.height}`),
      table(["role", "name", "public key", "address"], ROLES
        .flatMap((role) => (members[role] || []).map((m) => [role.replace(/s$/, ""), m.name, h("code", {}, short(m.pubkey)), m.address || ""])))));
}

async function blocks() {
  const tip = await call("get_block", { height: "latest" });
  const heights = [];
  for (let hgt = tip.height - 1; hgt >= 0 && heights.length < BLOCKS_SHOWN - 1; hgt--) heights.push(hgt);
  const older = heights.length ? await batch(heights.map((height) => ["get_block", { height }])) : [];
  const rows = [tip, ...older].filter((b) => !(b instanceof Error));
  return h("section", {}, h("h2", {}, "Latest blocks"),
    table(["height", "time", "proposer", "txs", "hash"], rows.map((b) => [
      h("a", { href: `#/block/${b.height}` }, b.height), when(b.time), nameOf(b.proposer), b.txs.length, h("code", {}, short(b.hash))])));
}

async function block(height) {
  const b = await call("get_block", { height: Number(height) });
  return h("section", {}, h("h2", {}, `Block ${b.height}`), kv([
    ["hash", h("code", {}, b.hash)], ["previous", h("code", {}, b.prev_hash)], ["time", when(b.time)],
    ["proposer", nameOf(b.proposer)], ["tx root", h("code", {}, b.tx_root)], ["state root", h("code", {}, b.state_root)],
    ["signed by", b.commit.signatures.map((s) => nameOf(s.validator)).join(", ")],
  ]), h("h2", {}, `${b.txs.length} transactions`),
  h("ul", {}, b.txs.map((t) => h("li", {}, h("a", { href: `#/tx/${t}`, class: "mono" }, t)))));
}

async function transaction(hash) {
  const t = await call("get_tx", { tx_hash: hash });
  const body = t.tx ? [["sender", nameOf(t.tx.sender)], ["nonce", t.tx.nonce], ["family", t.tx.family],
    ["op", t.tx.op], ["args", h("code", {}, JSON.stringify(t.tx.args))]] : [];
  return h("section", {}, h("h2", {}, "Transaction"), kv([
    ["hash", h("code", {}, t.tx_hash)], ["status", t.status],
    ["height", t.height === null ? "" : h("a", { href: `#/block/${t.height}` }, t.height)],
    ["index", t.index ?? ""], ["code", t.code ?? ""], ["log", t.log ?? ""], ...body]));
}

function history(params) {
  const results = h("div", { id: "hist-results" });
  const family = h("select", { id: "hist-family" }, h("option", { value: "kv" }, "kv key"), h("option", { value: "notary" }, "notary digest"));
  const key = h("input", { id: "hist-key", type: "text", size: 40, placeholder: "invoice/7/status or a SHA-256 hex" });
  family.value = params.get("family") || "kv";
  key.value = params.get("key") || "";
  async function load(before) {
    // A kv key is asked for exactly as typed (spaces are part of it); a digest is hex, so blanks around it are not.
    const p = { family: family.value, key: family.value === "kv" ? key.value : key.value.trim() };
    if (before !== undefined) p.before_height = before;
    try {
      const answer = await call("get_history", p);
      results.append(table(["height", "index", "tx", "sender", "op", "code"], answer.entries.map((e) => [
        h("a", { href: `#/block/${e.height}` }, e.height), e.index, h("a", { href: `#/tx/${e.tx_hash}`, class: "mono" }, short(e.tx_hash)),
        nameOf(e.sender), e.op, e.code])));
      if (answer.next_before_height !== null) {
        const more = h("button", { onclick: () => { more.remove(); load(answer.next_before_height); } }, "Older");
        results.append(more);
      } else if (!answer.entries.length && before === undefined) results.append(h("p", {}, "No transaction touched this key."));
    } catch (e) { results.append(errorBox(e)); }
  }
  const form = h("form", { onsubmit: (ev) => { ev.preventDefault(); results.replaceChildren(); load(); } },
    family, " ", key, " ", h("button", { type: "submit" }, "Show history"));
  if (key.value) load();
  return h("section", {}, h("h2", {}, "History of a record"), form, results);
}

let socket = null;
let poll = null;

function stopLive() {
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  clearInterval(poll); poll = null;
  live.textContent = "";
}

// The overview follows the chain over /ws; while the socket is down it polls (and retries the socket).
function startLive(refresh) {
  let pending = false;
  const refreshSoon = () => { if (!pending) { pending = true; setTimeout(() => { pending = false; refresh(); }, 200); } };
  socket = subscribeBlocks(refreshSoon, (open) => {
    live.textContent = open ? "Live: updated on each new block." : `Socket closed: polling every ${POLL_MS / 1000} s.`;
    if (open) { clearInterval(poll); poll = null; return; }
    socket = null;
    if (!poll) poll = setInterval(() => { refresh(); if (!socket) startLive(refresh); }, POLL_MS);
  });
}

async function show(render) {
  try { page.replaceChildren(await render()); } catch (e) { page.replaceChildren(errorBox(e)); }
}

async function route() {
  stopLive();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, arg] = path.split("/");
  const params = new URLSearchParams(query || "");
  document.body.dataset.page = name || "overview";
  if (!name || name === "overview") {
    await show(overview);
    startLive(() => { if ((location.hash.replace(/^#\/?/, "") || "overview").startsWith("overview")) show(overview); });
  } else if (name === "blocks") await show(blocks);
  else if (name === "block") await show(() => block(arg));
  else if (name === "tx") await show(() => transaction(arg));
  else if (name === "history") await show(() => history(params));
  else if (name === "evidence") await show(() => evidencePage(call, loadNames));
  else page.replaceChildren(h("p", {}, "No such page."));
}

const tokenInput = document.getElementById("token");
tokenInput.value = token.get();
document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token.set(tokenInput.value.trim());
  route();
});
window.addEventListener("hashchange", route);
route();
