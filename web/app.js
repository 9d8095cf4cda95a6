// The operator's console, served at /app.js (an ES module: strict, run once the page is
// parsed). It imports one module per view, all served by the binary from web/:
// dom.js (building elements as text), i18n.js (English and Chinese), api.js (the token and
// the JSON API), events.js (the one live stream per browser), health.js (at a glance and
// health), chart.js (the last hour), list.js (the live list), failures.js (failure groups and
// bulk replays), alerts.js (active conditions, recent alerts and their deliveries), detail.js (a request's detail) and dialog.js (asking for a reason).

import { $, el, report } from "./dom.js";
import { t, lang, setLang, applyStatic, stateName } from "./i18n.js";
import { api, token, setToken, forgetToken, onUnauthorized } from "./api.js";
import * as events from "./events.js";
import * as health from "./health.js";
import * as chart from "./chart.js";
import * as list from "./list.js";
import * as failures from "./failures.js";
import * as alerts from "./alerts.js";
import * as detail from "./detail.js";

/** How long without an event before the page says its figures may be stale. */
const STALE_MS = 5000;
/** Alerts are few: read again this often (and at each snapshot). */
const ALERTS_EVERY_MS = 5000;

let me = null; // { name, role } of this tab's token
let lastStatus = null;
let lastStatusAt = 0; // when the last status came (stream or read)
let lastEventAt = 0; // when the last event of the stream came
let listDirty = false; // changes came while this tab was hidden
let started = false;
let failedShown = null;

const operator = () => Boolean(me && me.role === "operator");

function showLogin(shown) { $("login").classList.toggle("shown", shown); }

function texts() {
  applyStatic();
  $("lang").value = lang();
  for (const option of $("f-state").options) if (option.value) option.textContent = stateName(option.value);
  for (const option of $("f-by").options) option.textContent = t("searchBy")[option.value];
  for (const option of $("f-sort").options) option.textContent = t("sortBy")[option.value];
  $("cols").replaceChildren(...t("cols").map((name) => el("th", {}, name)));
  $("replay-selected").textContent = `${t("replaySelected")} · ${t("selected", list.selected.size)}`;
  if (me) $("who").textContent = t("signedInAs", me.name, me.role);
  document.title = lastStatus && lastStatus.at_risk > 0 ? t("titleRisk", lastStatus.at_risk) : t("title");
}

function onStatus(status) {
  lastStatus = status;
  lastStatusAt = Date.now();
  list.clock(status);
  health.render(status, { operator: operator(), refresh: readStatus, openDetail });
  chart.render(status.last_hour);
  const failed = status.states.failed ?? 0;
  if (failed !== failedShown) {
    failedShown = failed;
    failures.reload().catch(report);
  }
  ticker();
}

async function readStatus() { onStatus(await api("/api/status")); }

function openDetail(sessionId) { return detail.show(sessionId); }

/** An event of the shared stream, whichever tab reads it. */
function onEvent(name, data) {
  if (!token() || !started) return;
  lastEventAt = Date.now();
  if (name === "snapshot") {
    onStatus(data.status);
    // Whatever changed is in the list as read again; a hidden tab reads it once shown.
    if (document.hidden) listDirty = true; else list.reload().catch(report);
    failures.reload().catch(report);
    alerts.reload().catch(report);
  } else if (name === "status") {
    onStatus(data);
  } else if (name === "requests") {
    if (document.hidden) listDirty = true; else list.apply(data.requests);
  }
  ticker();
}

/** "updated N s ago", and the stale-data banner when the stream is lost. */
function ticker() {
  if (!started) return;
  const now = Date.now();
  $("updated").textContent = lastStatusAt ? t("updatedAgo", Math.round((now - lastStatusAt) / 1000)) : t("never");
  const stale = now - lastEventAt > STALE_MS;
  const banner = $("stale");
  banner.hidden = !stale;
  if (stale) {
    banner.textContent = lastEventAt ? t("stale", Math.round((now - lastEventAt) / 1000)) : t("staleNever");
  }
  document.body.classList.toggle("stale-data", stale);
}

function roles() {
  document.body.classList.toggle("operator", operator());
  document.body.classList.toggle("viewer", !operator());
  $("viewer-note").hidden = operator();
  const selection = $("replay-selected");
  selection.hidden = !operator() || list.selected.size === 0;
}

async function start() {
  if (!token()) { showLogin(true); return; }
  showLogin(false);
  me = await api("/api/whoami");
  const opts = { operator: operator(), openDetail };
  detail.setup(opts);
  failures.setup({ ...opts, replayed: () => { list.selected.clear(); roles(); } });
  if (!started) list.setup({ ...opts, onSelect: () => { texts(); roles(); } });
  started = true;
  texts();
  roles();
  await readStatus();
  await list.reload();
  await alerts.reload();
  events.start({ event: onEvent, token, refused: () => { forgetToken(); location.reload(); } });
}

$("replay-selected").addEventListener("click", () => {
  failures.replay({ session_ids: [...list.selected] }).catch(report);
});
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("token").value.trim());
  $("token").value = "";
  start().catch(report);
});
$("logout").addEventListener("click", () => { forgetToken(); location.reload(); });
$("lang").addEventListener("change", () => {
  setLang($("lang").value);
  texts();
  if (lastStatus) onStatus(lastStatus);
  list.redraw();
  failures.reload().catch(report);
  alerts.reload().catch(report);
  detail.refresh().catch(report);
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && listDirty && started) {
    listDirty = false;
    list.reload().catch(report);
  }
});
onUnauthorized(() => { started = false; showLogin(true); });

texts();
setInterval(ticker, 1000);
setInterval(() => { if (started && !document.hidden) alerts.reload().catch(report); }, ALERTS_EVERY_MS);
start().catch(report);
