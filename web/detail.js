// A request's detail (web/detail.js): its timeline (customs' call, the payment data, each
// step with its code, duration and certNo), its attempts, the exact pre-sign string and
// upload body with copy buttons, and replay.

import { $, el, button, headings } from "./dom.js";
import { t, time, stateName } from "./i18n.js";
import { api } from "./api.js";

let options = { operator: false };
let current = null;

export function setup(given) { options = { ...options, ...given }; }

/** Copies the text of `pre`; where the Clipboard API is missing (plain http to a LAN
 * address is no secure context) or refused, selects it for Ctrl+C instead. */
async function copy(pre, note) {
  const text = pre.textContent;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      note.textContent = t("copied");
      return;
    } catch { /* selected below */ }
  }
  const range = document.createRange();
  range.selectNodeContents(pre);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  note.textContent = t("selectedToCopy");
}

function block(title, id, text) {
  const pre = el("pre", { id }, text);
  const note = el("span", { class: "muted copy-note" });
  return [el("h3", {}, title, " ", button(t("copy"), () => copy(pre, note), { "data-copy": id }), " ", note), pre];
}

export async function show(sessionId) {
  current = sessionId;
  const d = await api("/api/requests/" + encodeURIComponent(sessionId));
  if (current !== sessionId) return;
  render(d);
  $("detail").scrollIntoView({ block: "nearest" });
}

/** Shown again (a new language, a new role), if one is open. */
export async function refresh() {
  if (current) await show(current);
}

export function close() { current = null; $("detail").replaceChildren(); }

function render(d) {
  const upload = d.uploads[0];
  const good = (a) => ["received", "prepared", "signed", "delivered", "replayed"].includes(a.outcome);
  const timeline = (d.timeline || []).map((a) => el("tr", {},
    el("td", {}, time(a.at)), el("td", {}, a.step), el("td", {}, a.outcome), el("td", {}, a.code),
    el("td", {}, a.took_ms === null || a.took_ms === undefined ? "" : `${a.took_ms} ms`),
    el("td", { class: "id" }, a.cert_no), el("td", { class: good(a) ? "id" : "err" }, a.detail)));
  const attempts = d.attempts.map((a) => el("tr", {},
    el("td", {}, time(a.at)), el("td", {}, a.step), el("td", {}, a.outcome), el("td", { class: "err" }, a.detail)));
  const replay = options.operator && (d.state === "failed" || d.state === "delivered")
    ? button(t("replay"), async () => {
      await api(`/api/requests/${encodeURIComponent(d.session_id)}/replay`, { method: "POST" });
      await show(d.session_id);
    }, { id: "detail-replay" })
    : null;
  $("detail").replaceChildren(...[
    el("h2", { class: "id" }, d.session_id),
    el("p", {}, t("summary", d, stateName(d.state), time(d.received_at), time(d.deadline_at))),
    el("div", { class: "actions" }, replay, button(t("close"), close)),
    el("h3", {}, t("timeline")),
    el("div", { class: "scroll" }, el("table", { id: "timeline" }, headings(...t("timelineCols")), el("tbody", {}, timeline))),
    el("h3", {}, t("attempts")),
    el("div", { class: "scroll" }, el("table", { id: "attempts" }, headings(...t("attemptCols")), el("tbody", {}, attempts))),
    upload ? block(t("presign", upload.guid), "presign", upload.presign) : [],
    upload && upload.upload_body ? block(t("uploadBody"), "upload-body", upload.upload_body) : [],
  ].flat());
}
