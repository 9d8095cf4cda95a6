// The status page's script, served at /app.js (an ES module: strict, run once the page is parsed).
//
// Everything that came from customs or the platform (sessionIDs, orderNos, payment records,
// customs' answers, error texts) enters the page as text: el() appends strings as Text nodes
// and sets only attributes this file names; buttons get their actions as closures, never
// through attributes. Nothing here hands a string to the HTML parser, and the admin
// listener's Content-Security-Policy (require-trusted-types-for 'script') makes the browser
// refuse it should anyone try.
//
// The token stays in this tab's sessionStorage only; the page itself holds no data.

const TOKEN_KEY = "customs179-token";
const STATES = [["waiting", "warn"], ["ready", ""], ["signed", ""], ["delivered", "ok"], ["failed", "bad"]];
const $ = (id) => document.getElementById(id);
let next = null;
let shownPauses = null;

/**
 * An element `tag` with `attributes` (names are this file's own; values may be data) and
 * `children`: nodes, strings (added as text) or arrays of them; null, undefined and false are
 * left out.
 */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (/^on/i.test(name)) throw new Error(`el(): no event handler attributes (${name})`);
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

/** A button running `action`; a failure is shown to the operator. */
function button(label, action) {
  const node = el("button", { type: "button" }, label);
  node.addEventListener("click", async (event) => {
    event.preventDefault();
    try { await action(); } catch (err) { alert(err.message); }
  });
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { Authorization: "Bearer " + token() } });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(true);
    throw new Error("unauthorized");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const reason = body && (Array.isArray(body.conflicts) ? body.conflicts.join("; ") : body.error);
    throw new Error(reason || `${response.status} ${response.statusText}`);
  }
  return body;
}

function time(ms) { return ms ? new Date(ms).toLocaleString() : ""; }

function showLogin(shown) { $("login").classList.toggle("shown", shown); }

function card(label, count, tone) {
  return el("div", { class: count ? `card ${tone}` : "card" }, label, el("b", {}, count ?? 0));
}

async function refreshStatus() {
  const status = await api("/api/status");
  const cards = STATES.map(([state, tone]) => card(state, status.states[state], tone));
  cards.push(card("late", status.late, "warn"));
  $("cards").replaceChildren(...cards);
  // The banners (and their buttons) are rebuilt only when a pause changes, so a Resume
  // button does not vanish under the operator's pointer every two seconds.
  const pauses = JSON.stringify([status.signing, status.uploading]);
  if (pauses !== shownPauses) {
    shownPauses = pauses;
    const banners = [];
    for (const stage of ["signing", "uploading"]) {
      const pause = status[stage];
      if (pause) {
        banners.push(el("div", { class: "banner", "data-stage": stage },
          el("b", {}, `${stage} paused`), ` since ${time(pause.since)}: `, pause.reason, " ",
          button(`Resume ${stage}`, async () => {
            await api(`/api/control/${stage}/resume`, { method: "POST" });
            await refresh();
          })));
      }
    }
    $("banners").replaceChildren(...banners);
  }
  $("updated").textContent = "updated " + new Date(status.now).toLocaleTimeString();
}

function row(r) {
  const link = el("a", { href: "#" }, r.session_id);
  link.addEventListener("click", (event) => {
    event.preventDefault();
    showDetail(r.session_id).catch((err) => alert(err.message));
  });
  const replay = (r.state === "failed" || r.state === "delivered")
    ? button("Replay", async () => {
      await api(`/api/requests/${encodeURIComponent(r.session_id)}/replay`, { method: "POST" });
      await refresh();
    })
    : null;
  return el("tr", {},
    el("td", {}, time(r.received_at)),
    el("td", { class: "id" }, link),
    el("td", { class: "id" }, r.order_no),
    el("td", {}, r.state),
    el("td", { class: r.late ? "late" : null }, time(r.deadline_at), r.late ? " (late)" : null),
    el("td", {}, r.step_attempts),
    el("td", { class: "err" }, r.last_error),
    el("td", {}, replay));
}

async function refreshRows(append) {
  const params = new URLSearchParams({ limit: "50" });
  if ($("state").value) params.set("state", $("state").value);
  if (append && next) params.set("after", next);
  const page = await api("/api/requests?" + params);
  const rows = page.requests.map(row);
  if (append) $("rows").append(...rows); else $("rows").replaceChildren(...rows);
  next = page.next || null;
  $("more").hidden = !next;
}

function headings(...names) { return el("thead", {}, el("tr", {}, names.map((name) => el("th", {}, name)))); }

async function showDetail(sessionId) {
  const d = await api("/api/requests/" + encodeURIComponent(sessionId));
  const upload = d.uploads[0];
  const attempts = d.attempts.map((a) => el("tr", {},
    el("td", {}, time(a.at)), el("td", {}, a.step), el("td", {}, a.outcome), el("td", { class: "err" }, a.detail)));
  $("detail").replaceChildren(...[
    el("h2", { class: "id" }, d.session_id),
    el("p", {}, `order ${d.order_no}, ${d.state}, received ${time(d.received_at)}, deadline ${time(d.deadline_at)}`),
    el("h3", {}, "Attempts"),
    el("table", { id: "attempts" }, headings("at", "step", "outcome", "detail"), el("tbody", {}, attempts)),
    upload ? [el("h3", {}, `Pre-sign string (guid ${upload.guid})`), el("pre", { id: "presign" }, upload.presign)] : [],
    upload && upload.upload_body ? [el("h3", {}, "Upload body"), el("pre", { id: "upload-body" }, upload.upload_body)] : [],
  ].flat());
}

async function refresh() {
  if (!token()) { showLogin(true); return; }
  showLogin(false);
  try { await refreshStatus(); await refreshRows(false); } catch (e) { $("updated").textContent = e.message; }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  refresh();
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
$("state").addEventListener("change", () => refreshRows(false).catch((e) => { $("updated").textContent = e.message; }));
$("more").addEventListener("click", () => refreshRows(true).catch((e) => { $("updated").textContent = e.message; }));
refresh();
setInterval(() => { if (token()) refreshStatus().catch(() => {}); }, 2000);
