// A tiny DOM builder: text goes in as text (never parsed as HTML).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) el.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function table(headings, rows) {
  return h("div", { class: "table" }, h("table", {},
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

export function kv(pairs) {
  return h("div", { class: "kv" }, pairs.flatMap(([k, v]) => [h("div", {}, k), h("div", {}, v)]));
}

export const short = (hex) => (typeof hex === "string" && hex.length > 16 ? hex.slice(0, 12) + "…" : hex ?? "");

export function age(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

export const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace(".000Z", " UTC") : "");
