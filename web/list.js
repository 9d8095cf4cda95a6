// The live list (web/list.js): soonest deadline first by default, a running countdown on
// every pending request, filters and search kept in the URL's hash, keyset "more", and
// changes from the event stream merged in place. Rows never move under the pointer: while
// it is over the list, changes wait, counted in an "N updates" marker.

import { $, el, button, link, report } from "./dom.js";
import { t, time, duration, stateName } from "./i18n.js";
import { api } from "./api.js";

const PENDING = new Set(["waiting", "ready", "signed"]);
const PAGE = 50;
/** Filter keys, as the hash holds them. */
const KEYS = ["state", "late", "at_risk", "code", "since", "until", "by", "q", "sort", "limit"];

let options = { operator: false, openDetail: () => {}, onSelect: () => {} };
let rows = new Map(); // session_id → { summary, tr }
let order = []; // session_ids shown, in order
let next = null;
let waiting = new Map(); // changes held while the pointer is over the list
let hovering = false;
let skew = 0; // the service's clock minus ours, ms
let atRiskMs = 60000;
let loading = 0;
export const selected = new Set();

/** The filters, from the hash (`#state=failed&q=…`). */
export function filters() {
  const params = new URLSearchParams(location.hash.slice(1));
  const f = {};
  for (const key of KEYS) f[key] = params.get(key) || "";
  if (!f.sort) f.sort = "deadline";
  if (!f.by) f.by = "order";
  return f;
}

function writeFilters(f) {
  const params = new URLSearchParams();
  for (const key of KEYS) {
    if (f[key] && !(key === "sort" && f[key] === "deadline") && !(key === "by" && f[key] === "order")) {
      params.set(key, f[key]);
    }
  }
  const hash = params.toString();
  history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
}

/** The form shows what the hash says. */
function showFilters() {
  const f = filters();
  $("f-state").value = f.state;
  $("f-late").checked = f.late === "true";
  $("f-at-risk").checked = f.at_risk === "true";
  $("f-code").value = f.code;
  $("f-since").value = f.since;
  $("f-until").value = f.until;
  $("f-by").value = f.by;
  $("f-q").value = f.q;
  $("f-sort").value = f.sort;
}

function readForm() {
  return {
    state: $("f-state").value,
    late: $("f-late").checked ? "true" : "",
    at_risk: $("f-at-risk").checked ? "true" : "",
    code: $("f-code").value.trim(),
    since: $("f-since").value,
    until: $("f-until").value,
    by: $("f-by").value,
    q: $("f-q").value.trim(),
    sort: $("f-sort").value,
    limit: filters().limit, // set in the URL only (`#limit=200`)
  };
}

/** datetime-local text (the browser's time zone) to unix ms. */
const ms = (local) => (local ? String(new Date(local).getTime()) : "");

function query(f) {
  const limit = Number(f.limit) >= 1 && Number(f.limit) <= 500 ? String(Math.floor(Number(f.limit))) : String(PAGE);
  const params = new URLSearchParams({ limit, sort: f.sort });
  for (const key of ["state", "late", "at_risk", "code"]) if (f[key]) params.set(key, f[key]);
  if (f.since) params.set("since", ms(f.since));
  if (f.until) params.set("until", ms(f.until));
  if (f.q) params.set(f.by === "session" ? "session_prefix" : "order_no", f.q);
  return params;
}

/** Whether a summary from the stream belongs in the list as filtered. */
function matches(r, f) {
  const now = Date.now() + skew;
  if (f.state && r.state !== f.state) return false;
  if (f.late && !r.late) return false;
  if (f.at_risk && !(PENDING.has(r.state) && r.deadline_at > now && r.deadline_at - now < atRiskMs)) return false;
  if (f.code && r.code !== f.code) return false;
  if (f.since && r.received_at < Number(ms(f.since))) return false;
  if (f.until && r.received_at >= Number(ms(f.until))) return false;
  if (f.q && (f.by === "session" ? !r.session_id.startsWith(f.q) : r.order_no !== f.q)) return false;
  return true;
}

function before(a, b, sort) {
  if (sort === "received") {
    return a.received_at !== b.received_at ? a.received_at > b.received_at : a.session_id > b.session_id;
  }
  return a.deadline_at !== b.deadline_at ? a.deadline_at < b.deadline_at : a.session_id < b.session_id;
}

function countdown(r) {
  if (!PENDING.has(r.state)) return "";
  const left = r.deadline_at - (Date.now() + skew);
  return left >= 0 ? t("left", duration(left)) : t("over", duration(-left));
}

function row(r) {
  const box = el("input", { type: "checkbox", class: "pick" });
  box.checked = selected.has(r.session_id);
  box.disabled = r.state !== "failed" || !options.operator;
  box.addEventListener("change", () => {
    if (box.checked) selected.add(r.session_id); else selected.delete(r.session_id);
    options.onSelect(selected);
  });
  const clock = el("span", { class: "countdown" }, countdown(r));
  const replay = options.operator && (r.state === "failed" || r.state === "delivered")
    ? button(t("replay"), async () => {
      await api(`/api/requests/${encodeURIComponent(r.session_id)}/replay`, { method: "POST" });
    })
    : null;
  const tr = el("tr", { class: `state-${r.state}` },
    el("td", {}, box, " ", time(r.received_at)),
    el("td", { class: "id" }, link(r.session_id, () => options.openDetail(r.session_id))),
    el("td", { class: "id" }, r.order_no),
    el("td", {}, stateName(r.state)),
    el("td", { class: r.late ? "late" : null }, time(r.deadline_at), r.late ? t("lateMark") : null, " ", clock),
    el("td", {}, r.step_attempts),
    el("td", { class: "err" }, r.last_error),
    el("td", {}, replay));
  tr.classList.toggle("risky", PENDING.has(r.state) && r.deadline_at - (Date.now() + skew) < atRiskMs);
  return { summary: r, tr, clock };
}

/** The row of `r`: the one shown when nothing changed (a link or checkbox under the pointer
 * or focus stays the same element), else a new one. */
function keep(r) {
  const old = rows.get(r.session_id);
  return old && JSON.stringify(old.summary) === JSON.stringify(r) ? old : row(r);
}

function draw() {
  $("rows").replaceChildren(...order.map((id) => rows.get(id).tr));
  $("empty").hidden = order.length > 0 || loading > 0;
  $("more").hidden = !next;
}

/** Reads the list again from its first page. */
export async function reload() {
  const f = filters();
  loading += 1;
  try {
    const page = await api("/api/requests?" + query(f));
    rows = new Map(page.requests.map((r) => [r.session_id, keep(r)]));
    order = page.requests.map((r) => r.session_id);
    next = page.next || null;
    waiting.clear();
    marker();
  } finally {
    loading -= 1;
  }
  draw();
}

async function more() {
  if (!next) return;
  const params = query(filters());
  params.set("after", next);
  const page = await api("/api/requests?" + params);
  for (const r of page.requests) {
    if (!rows.has(r.session_id)) order.push(r.session_id);
    rows.set(r.session_id, keep(r));
  }
  next = page.next || null;
  draw();
}

/** Changed requests from the stream: merged now, or once the pointer leaves the list. */
export function apply(summaries) {
  for (const r of summaries) waiting.set(r.session_id, r);
  if (hovering) { marker(); return; }
  flush();
}

function flush() {
  if (!waiting.size) { marker(); return; }
  const f = filters();
  const last = order.length ? rows.get(order[order.length - 1]).summary : null;
  for (const r of waiting.values()) {
    const known = rows.has(r.session_id);
    if (!matches(r, f)) {
      if (known) { rows.delete(r.session_id); order = order.filter((id) => id !== r.session_id); }
      continue;
    }
    // Beyond the last row shown while more pages exist: it will come with "more".
    if (!known && next && last && before(last, r, f.sort)) continue;
    rows.set(r.session_id, keep(r));
    if (!known) order.push(r.session_id);
  }
  waiting.clear();
  order.sort((a, b) => (before(rows.get(a).summary, rows.get(b).summary, f.sort) ? -1 : 1));
  marker();
  draw();
}

function marker() {
  // Shown without moving anything: its line is always there, invisible while empty (a
  // marker pushing the list down would move the rows out from under the pointer).
  const node = $("updates");
  node.classList.toggle("shown", waiting.size > 0);
  node.textContent = waiting.size ? t("updates", waiting.size) : "";
}

/** The service's clock and at-risk window, from a status. */
export function clock(status) {
  skew = status.now - Date.now();
  atRiskMs = (status.at_risk_secs || 60) * 1000;
}

function tick() {
  for (const { summary, tr, clock: node } of rows.values()) {
    const text = countdown(summary);
    if (node.textContent !== text) node.textContent = text;
    tr.classList.toggle("risky", PENDING.has(summary.state) && summary.deadline_at - (Date.now() + skew) < atRiskMs);
  }
}

/** Rows rebuilt in place (a new language, a new role). */
export function redraw() {
  for (const [id, { summary }] of rows) rows.set(id, row(summary));
  draw();
}

export function setup(given) {
  options = { ...options, ...given };
  showFilters();
  const changed = () => { writeFilters(readForm()); selected.clear(); options.onSelect(selected); reload().catch(report); };
  for (const id of ["f-state", "f-late", "f-at-risk", "f-since", "f-until", "f-by", "f-sort"]) {
    $(id).addEventListener("change", changed);
  }
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); changed(); });
  $("f-clear").addEventListener("click", () => { history.replaceState(null, "", location.pathname); showFilters(); changed(); });
  window.addEventListener("hashchange", () => { showFilters(); reload().catch(report); });
  $("more").addEventListener("click", () => more().catch(report));
  const list = $("rows");
  list.addEventListener("mouseenter", () => { hovering = true; });
  list.addEventListener("mouseleave", () => { hovering = false; flush(); });
  $("updates").addEventListener("click", () => { hovering = false; flush(); });
  setInterval(tick, 1000);
}
