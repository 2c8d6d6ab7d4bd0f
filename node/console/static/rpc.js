// JSON-RPC over POST / and live blocks over /ws, with the access token the user typed (this tab only).
const TOKEN_KEY = "alliance.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (value) => (value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY)),
};

export class RpcError extends Error {
  constructor(message, code, data) { super(message); this.code = code; this.data = data; }
}

let nextId = 1;

async function post(body) {
  const headers = { "Content-Type": "application/json" };
  if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
  const response = await fetch("/", { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401) {
    const why = token.get() ? "this node does not know this access token" : "this node needs an access token";
    throw new RpcError(`${why} (see Access token above)`, 401);
  }
  if (response.status === 403) throw new RpcError("the access token does not allow this", 403);
  if (!response.ok) throw new RpcError(`HTTP ${response.status}`, response.status);
  return JSON.parse(await response.text(), exactIntegers);
}

// An integer no double holds exactly (a 64-bit nonce) is kept as the text of its digits, where the browser
// gives the reviver the source; heights, indices and times are far below 2**53 and stay numbers.
function exactIntegers(key, value, context) {
  return Number.isInteger(value) && !Number.isSafeInteger(value) && context && context.source ? context.source : value;
}

function unwrap(answer) {
  if (answer.error) throw new RpcError(answer.error.message, answer.error.code, answer.error.data);
  return answer.result;
}

export async function call(method, params = {}) {
  return unwrap(await post({ jsonrpc: "2.0", id: nextId++, method, params }));
}

// Several calls in one batch; each entry is a result or an RpcError.
export async function batch(calls) {
  const first = nextId;
  nextId += calls.length;
  const answers = await post(calls.map(([method, params], i) => ({ jsonrpc: "2.0", id: first + i, method, params })));
  const byId = new Map(answers.map((a) => [a.id, a]));
  return calls.map((_, i) => { try { return unwrap(byId.get(first + i)); } catch (e) { return e; } });
}

// Calls onBlock for each committed block while the socket is open; onState(true/false) on open/close.
export function subscribeBlocks(onBlock, onState) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token.get() ? `?access_token=${encodeURIComponent(token.get())}` : "";
  const socket = new WebSocket(`${scheme}//${location.host}/ws${query}`);
  socket.onopen = () => {
    socket.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "subscribe", params: { topic: "blocks" } }));
    onState(true);
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.method === "subscription") onBlock(message.params.result);
  };
  socket.onclose = () => onState(false);
  return socket;
}
